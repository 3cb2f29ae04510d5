"""Checks of a task that need its model or its input pipeline, run by every worker before the first epoch.

The driver checks what it can without TensorFlow (the task imports, its
parameters validate, its arrays have matching lengths and numeric dtypes).
What needs the model or a worker's pipeline is checked here, identically on
every worker, so all of them agree and stop together: a worker that stopped
alone would leave the others waiting in the next all-reduce.
"""

from __future__ import annotations

from typing import Any, Optional

import orchestrator.worker  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow)

import numpy as np
import tensorflow as tf

from orchestrator.tasks import SPLITS, Task
from orchestrator.worker.model import TaskError

_SPARSE = ("sparse_categorical_crossentropy", tf.keras.losses.sparse_categorical_crossentropy)



def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:300]


def shard_batches(task: Task, params: Any, split: str, workers: int, replicas: int, global_batch: int):
    """(batches in a pass over each worker's shard of ``split``, the first batch of shard 0).

    One full pass over the split, once per run: Keras needs the number of steps
    of a distributed dataset, and every worker must run the same number. TaskError
    if a shard yields nothing or the input function raises.
    """
    counts, first = [], None
    for pipeline in range(workers):
        context = tf.distribute.InputContext(workers, pipeline, replicas)
        try:
            dataset = task.input_fn(params, split, context, context.get_per_replica_batch_size(global_batch))
            if first is None:
                first = next(iter(dataset.take(1)), None)
            batches = int(dataset.reduce(np.int64(0), lambda n, _: n + 1))
        except Exception as exc:  # the user's input function may raise anything
            raise TaskError(f"input_fn raised {_first_line(exc)} for split {split}, "
                            f"shard {pipeline + 1} of {workers}") from None
        if batches == 0:
            raise TaskError(f"input_fn yields nothing for split {split}, shard {pipeline + 1} of {workers}")
        counts.append(batches)
    return counts, first


def _loss_function(model: tf.keras.Model):
    """The compiled loss as a plain function (one output), or None."""
    loss = model.loss
    if isinstance(loss, str):
        return tf.keras.losses.get(loss)
    return loss if callable(loss) else None


def _check_labels_fit(model: tf.keras.Model, labels: list[np.ndarray]) -> None:
    """Sparse class labels must index the model's outputs (TensorFlow would fail mid-epoch, or not at all on GPU)."""
    loss = model.loss
    sparse = (loss == _SPARSE[0] if isinstance(loss, str) else
              loss is _SPARSE[1] or isinstance(loss, tf.keras.losses.SparseCategoricalCrossentropy))
    if not sparse:
        return
    outputs = model.outputs[0].shape[-1] if getattr(model, "outputs", None) else None
    if outputs is None:
        return
    for values in labels:
        values = np.asarray(values)
        if values.size and (values.min() < 0 or values.max() >= outputs):
            raise TaskError(f"labels range over {int(values.min())}..{int(values.max())} but the model has "
                            f"{outputs} outputs (a sparse categorical loss needs labels 0..{outputs - 1})")


def _check_loss(model: tf.keras.Model, x, y):
    """``(y, the model's outputs for x)`` as tensors, once the loss has taken them; TaskError if it cannot."""
    # The bare loss function: Keras's compiled loss would also update its loss
    # tracker, which MultiWorkerMirroredStrategy allows only inside a step.
    loss = _loss_function(model)
    x, y = tf.nest.map_structure(tf.convert_to_tensor, x), tf.nest.map_structure(tf.convert_to_tensor, y)
    try:
        predictions = model(x, training=False)
        if loss is not None:
            loss(y, predictions)
    except Exception as exc:
        shape = getattr(locals().get("predictions"), "shape", None)
        raise TaskError(f"the model's output{f' (shape {tuple(shape)})' if shape is not None else ''} "
                        f"does not fit the labels (shape {tuple(np.shape(y))}): {_first_line(exc)}") from None
    return y, predictions


def check_task(task: Task, name: str, params: Any, model: tf.keras.Model, arrays, *, workers: int,
               replicas: int, global_batch: int) -> tuple[Optional[str], dict[str, int], Optional[tuple]]:
    """(None, steps, sample) if the task can train, else (one line saying why not, naming the task, {}, None).

    ``steps``: for an input-function task, the steps per epoch of train and
    validation, the longest shard's batches in one pass (every worker must run
    the same number). Shards of equal size give every example exactly once per
    epoch; a shorter shard starts its next pass early (its pipeline repeats).
    ``sample``: the checked batch's labels and the model's outputs for it, ``(y, predictions)``.
    """
    steps: dict[str, int] = {}
    try:
        if task.per_worker_input:
            firsts = {}
            for split in SPLITS:
                counts, firsts[split] = shard_batches(task, params, split, workers, replicas, global_batch)
                steps[split] = max(counts)
            labels = [np.asarray(batch[1]) for batch in firsts.values()]
            x, y = firsts["train"]
        else:
            labels = [arrays.y_train, arrays.y_val, arrays.y_test]
            x, y = arrays.x_train[:8], arrays.y_train[:8]
            if task.preprocess is not None:
                x = task.preprocess(tf.constant(x))
        _check_labels_fit(model, labels)
        sample = _check_loss(model, x, y)
    except TaskError as err:
        return f"task {name}: {err}", {}, None
    return None, steps, sample
