"""A worker's input pipeline over a task's arrays (``orchestrator.worker.datasets``), in a TensorFlow process.

Several workers each build the same pipeline from the same seed and
``MultiWorkerMirroredStrategy`` gives each its part of every global batch: the
parts only partition the data if every worker draws the same permutation, pass
after pass. Keras needs the pipeline's length with ``steps_per_execution``.
"""

from __future__ import annotations

import json
import subprocess
import sys

SCRIPT = r'''
import json
import numpy as np
import orchestrator.worker  # tf-keras, as a worker selects it
import tensorflow as tf
from orchestrator.worker.datasets import batched_dataset

def passes(seed, count):
    tf.keras.utils.set_random_seed(7)  # as every worker does with the run's seed
    x = (np.arange(1000) % 256).astype(np.uint8).reshape(1000, 1)
    ds = batched_dataset(x, np.arange(1000), 128, shuffle_seed=seed, preprocess=lambda b: tf.cast(b, tf.float32) / 255)
    out = []
    for _ in range(count):
        batches = [(xb.numpy(), yb.numpy()) for xb, yb in ds]
        out.append({"labels": np.concatenate([yb for _, yb in batches]).tolist(),
                    "sizes": [len(yb) for _, yb in batches],
                    "rows_match": all(np.allclose(xb[:, 0], (yb % 256) / 255) for xb, yb in batches),
                    "dtype": str(batches[0][0].dtype)})
    return {"cardinality": int(ds.cardinality()), "passes": out}

print(json.dumps({"worker_a": passes(42, 3), "worker_b": passes(42, 3), "validation": passes(None, 2)}))
'''


def pipelines() -> dict:
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_every_pass_is_one_permutation_the_same_in_every_worker_and_new_each_pass():
    found = pipelines()
    a, b, validation = found["worker_a"], found["worker_b"], found["validation"]
    for run in (a, b, validation):
        assert run["cardinality"] == 8  # ceil(1000 / 128): Keras knows an epoch's steps
        for one in run["passes"]:
            assert sorted(one["labels"]) == list(range(1000)), "every example exactly once per pass"
            assert one["sizes"] == [128] * 7 + [104]
            assert one["rows_match"] and one["dtype"] == "float32", "features gathered with their labels, preprocessed"
    assert [p["labels"] for p in a["passes"]] == [p["labels"] for p in b["passes"]], \
        "two workers of one seed must draw the same permutations, pass after pass"
    orders = [tuple(p["labels"]) for p in a["passes"]]
    assert len(set(orders)) == 3 and orders[0] != tuple(range(1000)), "reshuffled each pass"
    assert [p["labels"] for p in validation["passes"]] == [list(range(1000))] * 2, "validation keeps its order"
