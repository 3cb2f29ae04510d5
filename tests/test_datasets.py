"""A worker's input pipeline over a task's arrays (``orchestrator.worker.datasets``), in a TensorFlow process.

Several workers each build the same pipeline from the same seed and
``MultiWorkerMirroredStrategy`` gives each its part of every global batch: the
parts only partition the data if every worker draws the same permutation, pass
after pass. The training pipeline repeats (``fit`` keeps one iterator for the
run) and skips its first pass, so that its epochs see the data in the order the
finite pipeline gave them, which ``fit`` iterated anew each epoch.
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
from orchestrator.worker.datasets import batched_dataset, split_datasets

x = (np.arange(1000) % 256).astype(np.uint8).reshape(1000, 1)
preprocess = lambda b: tf.cast(b, tf.float32) / 255

def passes(count):
    tf.keras.utils.set_random_seed(7)  # as every worker does with the run's seed
    arrays = SimpleNamespace(x_train=x, y_train=np.arange(1000), x_val=x[:300], y_val=np.arange(300))
    task = SimpleNamespace(per_worker_input=False, preprocess=preprocess)
    train, validation, steps = split_datasets(tf.distribute.get_strategy(), task, None, arrays, 128, seed=42)
    out = []
    batches = iter(train)  # one iterator for the run, as fit keeps it given steps_per_epoch
    for _ in range(count):
        taken = [next(batches) for _ in range(steps)]
        out.append({"labels": np.concatenate([yb.numpy() for _, yb in taken]).tolist(),
                    "sizes": [len(yb) for _, yb in taken],
                    "rows_match": all(np.allclose(xb.numpy()[:, 0], (yb.numpy() % 256) / 255) for xb, yb in taken),
                    "dtype": taken[0][0].dtype.name})
    val = [np.concatenate([yb.numpy() for _, yb in validation]).tolist() for _ in range(2)]
    return {"steps": steps, "repeats": int(train.cardinality()) == int(tf.data.INFINITE_CARDINALITY),
            "passes": out, "validation": val}

def finite_passes(count):
    """The pipeline as fit met it before it repeated: finite, a new iterator each epoch."""
    tf.keras.utils.set_random_seed(7)
    finite = batched_dataset(x, np.arange(1000), 128, shuffle_seed=42, preprocess=preprocess)
    return [np.concatenate([yb.numpy() for _, yb in finite]).tolist() for _ in range(count)]

print(json.dumps({"worker_a": passes(3), "worker_b": passes(3), "finite": finite_passes(4)}))
'''


def pipelines() -> dict:
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_every_pass_is_one_permutation_the_same_in_every_worker_and_new_each_pass():
    found = pipelines()
    a, b = found["worker_a"], found["worker_b"]
    for run in (a, b):
        assert run["steps"] == 8 and run["repeats"]  # ceil(1000 / 128), fit's steps_per_epoch
        for one in run["passes"]:
            assert sorted(one["labels"]) == list(range(1000)), "every example exactly once per epoch"
            assert one["sizes"] == [128] * 7 + [104]
            assert one["rows_match"] and one["dtype"] == "float32", "features gathered with their labels, preprocessed"
        assert run["validation"] == [list(range(300))] * 2, "validation: every example once, in order"
    assert [p["labels"] for p in a["passes"]] == [p["labels"] for p in b["passes"]], \
        "two workers of one seed must draw the same permutations, epoch after epoch"
    orders = [tuple(p["labels"]) for p in a["passes"]]
    assert len(set(orders)) == 3 and orders[0] != tuple(range(1000)), "reshuffled each epoch"


def test_the_repeating_training_pipeline_keeps_the_data_order_of_the_finite_one():
    found = pipelines()
    # fit made a finite dataset's iterator before the first epoch and again for it, so
    # epoch k trained on the shuffle's (k+1)-th permutation; results of earlier runs
    # (the tutorial's) hold only if the repeating pipeline gives the same order.
    assert [p["labels"] for p in found["worker_a"]["passes"]] == found["finite"][1:]
