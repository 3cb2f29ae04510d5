"""The worker's model before ``fit`` (``orchestrator.worker.model``), in a TensorFlow process.

Keras creates the compiled loss's and metrics' variables inside the first trace
of its train step, and a ``tf.function`` whose first call created variables is
traced a second time. The worker creates them from the pre-flight check's batch
(``build_step_state``), so ``fit`` traces its step once, and trains exactly as
Keras's own lazy way does: the same metrics, the same numbers.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

SCRIPT = r'''
import json, tempfile
from types import SimpleNamespace
import numpy as np
import orchestrator.worker  # tf-keras, as a worker selects it
import tensorflow as tf
from orchestrator.spec import build_spec
from orchestrator.tasks import resolve
from orchestrator.worker.callbacks.report import restore_train_state
from orchestrator.worker.datasets import split_datasets
from orchestrator.worker.model import build_compiled_model, build_step_state
from orchestrator.worker.preflight import check_task

rng = np.random.default_rng(0)
arrays = SimpleNamespace(x_train=rng.integers(0, 256, (1024, 28, 28), dtype=np.uint8), y_train=rng.integers(0, 10, 1024),
                         x_val=rng.integers(0, 256, (256, 28, 28), dtype=np.uint8), y_val=rng.integers(0, 10, 256),
                         x_test=rng.integers(0, 256, (64, 28, 28), dtype=np.uint8), y_test=rng.integers(0, 10, 64))
spec = build_spec({"training": {"steps_per_execution": 4}})
task = resolve(spec.task)

def run(prebuild):
    tf.keras.backend.clear_session()
    tf.keras.utils.set_random_seed(spec.seed)
    model = build_compiled_model(spec, task.task, task.params)
    problem, _, sample = check_task(task.task, "mnist_mlp", task.params, model, arrays, workers=1, replicas=1,
                                    global_batch=64)
    assert problem is None, problem
    if prebuild:
        build_step_state(model, *sample)
    built = model.compiled_metrics.built
    train, val, steps = split_datasets(tf.distribute.get_strategy(), task.task, task.params, arrays, 64, spec.seed)
    history = model.fit(train, validation_data=val, steps_per_epoch=steps, epochs=2, verbose=0).history
    return model, {"built_before_fit": built, "traces": model.train_tf_function.experimental_get_tracing_count(),
                   "metrics": model.metrics_names, "history": {k: [repr(v) for v in vs] for k, vs in history.items()}}

model, prebuilt = run(True)
_, lazy = run(False)

# A checkpoint of that run restores into a new model whose metrics were built the same way
path = tf.train.Checkpoint(model=model, optimizer=model.optimizer).write(tempfile.mkdtemp() + "/train_state/ckpt")
restored = build_compiled_model(spec, task.task, task.params)
build_step_state(restored, *check_task(task.task, "mnist_mlp", task.params, restored, arrays, workers=1, replicas=1,
                                       global_batch=64)[2])
restore_train_state(restored, path.rsplit("/train_state/", 1)[0])
same_weights = all(np.array_equal(a, b) for a, b in zip(model.get_weights(), restored.get_weights()))

class OwnStep(tf.keras.Sequential):
    def train_step(self, data):
        return super().train_step(data)

own = OwnStep([tf.keras.layers.Flatten(input_shape=(28, 28)), tf.keras.layers.Dense(10, activation="softmax")])
own.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
build_step_state(own, tf.constant(arrays.y_train[:8]), own(tf.zeros((8, 28, 28))))

# An input function's batches of named features (a model with two inputs)
def input_fn(params, split, context, batch_size):
    n = 64
    features = {"pixels": rng.random((n, 4), dtype=np.float32), "extra": rng.random((n, 2), dtype=np.float32)}
    return tf.data.Dataset.from_tensor_slices((features, rng.integers(0, 3, n))).batch(batch_size)

def two_inputs(params):
    pixels, extra = tf.keras.Input((4,), name="pixels"), tf.keras.Input((2,), name="extra")
    out = tf.keras.layers.Dense(3, activation="softmax")(tf.keras.layers.Concatenate()([pixels, extra]))
    return tf.keras.Model({"pixels": pixels, "extra": extra}, out)

named = SimpleNamespace(per_worker_input=True, input_fn=input_fn, preprocess=None)
named_model = build_compiled_model(spec, SimpleNamespace(build_model=two_inputs, loss="sparse_categorical_crossentropy",
                                                         metrics=["accuracy"]), None)
named_problem, named_steps, (named_y, named_out) = check_task(named, "named", None, named_model, None, workers=1,
                                                              replicas=1, global_batch=16)
build_step_state(named_model, named_y, named_out)

print(json.dumps({"prebuilt": prebuilt, "lazy": lazy, "same_weights": same_weights,
                  "own_step_left_alone": not own.compiled_metrics.built,
                  "named": {"problem": named_problem, "steps": named_steps, "built": named_model.compiled_metrics.built}}))
'''


@pytest.fixture(scope="module")
def outcome() -> dict:
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_fit_traces_the_train_step_once_and_trains_as_keras_would(outcome):
    result = outcome
    prebuilt, lazy = result["prebuilt"], result["lazy"]
    assert prebuilt["built_before_fit"] and not lazy["built_before_fit"]
    # Keras's own way traces twice: its first call created the metrics' variables
    assert prebuilt["traces"] == 1 and lazy["traces"] == 2
    # The same metrics (accuracy as the sparse categorical variant) and the same numbers, digit for digit
    assert prebuilt["metrics"] == lazy["metrics"] == ["loss", "accuracy"]
    assert prebuilt["history"] == lazy["history"]
    assert set(prebuilt["history"]) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    # Resuming restores into a model built this way; a model with its own train_step keeps Keras's way
    assert result["same_weights"]
    assert result["own_step_left_alone"]


def test_an_input_function_of_named_features_passes_the_check_and_its_metrics_are_built(outcome):
    named = outcome["named"]
    assert named == {"problem": None, "steps": {"train": 4, "validation": 4, "test": 4}, "built": True}
