"""A worker's input pipeline over a task's arrays (``orchestrator.worker.datasets``), in a TensorFlow process.

Several workers each build the same pipeline from the same seed and
``MultiWorkerMirroredStrategy`` gives each its part of every global batch: the
parts only partition the data if every worker draws the same permutation, pass
after pass.
"""

from __future__ import annotations

import json
import subprocess
import sys

SCRIPT = r'''
import json
from types import SimpleNamespace
import numpy as np
import orchestrator.worker  # tf-keras, as a worker selects it
import tensorflow as tf
from orchestrator.worker.datasets import split_datasets

def passes(count):
    tf.keras.utils.set_random_seed(7)  # as every worker does with the run's seed
    x = (np.arange(1000) % 256).astype(np.uint8).reshape(1000, 1)
    arrays = SimpleNamespace(x_train=x, y_train=np.arange(1000), x_val=x[:300], y_val=np.arange(300))
    task = SimpleNamespace(per_worker_input=False, preprocess=lambda b: tf.cast(b, tf.float32) / 255)
    train, validation = split_datasets(tf.distribute.get_strategy(), task, None, arrays, 128, seed=42)
    out = []
    for _ in range(count):  # fit iterates the pipeline anew each epoch
        taken = list(train)
        out.append({"labels": np.concatenate([yb.numpy() for _, yb in taken]).tolist(),
                    "sizes": [len(yb) for _, yb in taken],
                    "rows_match": all(np.allclose(xb.numpy()[:, 0], (yb.numpy() % 256) / 255) for xb, yb in taken),
                    "dtype": taken[0][0].dtype.name})
    val = [np.concatenate([yb.numpy() for _, yb in validation]).tolist() for _ in range(2)]
    return {"steps": int(train.cardinality()), "passes": out, "validation": val}

print(json.dumps({"worker_a": passes(3), "worker_b": passes(3)}))
'''


def pipelines() -> dict:
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_every_pass_is_one_permutation_the_same_in_every_worker_and_new_each_pass():
    found = pipelines()
    a, b = found["worker_a"], found["worker_b"]
    for run in (a, b):
        assert run["steps"] == 8  # ceil(1000 / 128): Keras needs an epoch's steps with steps_per_execution
        for one in run["passes"]:
            assert sorted(one["labels"]) == list(range(1000)), "every example exactly once per epoch"
            assert one["sizes"] == [128] * 7 + [104]
            assert one["rows_match"] and one["dtype"] == "float32", "features gathered with their labels, preprocessed"
        assert run["validation"] == [list(range(300))] * 2, "validation: every example once, in order"
    assert [p["labels"] for p in a["passes"]] == [p["labels"] for p in b["passes"]], \
        "two workers of one seed must draw the same permutations, epoch after epoch"
    orders = [tuple(p["labels"]) for p in a["passes"]]
    assert len(set(orders)) == 3 and orders[0] != tuple(range(1000)), "reshuffled each epoch"
