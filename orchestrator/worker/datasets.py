"""The input pipelines of a worker: the task's arrays from Ray's object store, or its own input function.

**Arrays** (``Task.load_data``): batched by the *global* batch
(``batch_size_per_worker * replicas``) and auto-sharded by data, the layout
``MultiWorkerMirroredStrategy`` expects from ``model.fit``: tf.distribute splits
every global batch into per-replica parts, so each example is seen by exactly
one replica per epoch and every worker runs the same number of steps. All
workers shuffle with the same seed, so their parts partition one permutation.
What is shuffled is the examples' positions (cheaper to move than the examples,
as Keras does for arrays); each batch then gathers its rows and applies the
task's ``preprocess`` (e.g. uint8 pixels to floats), so the object store and
the shuffle carry the compact raw arrays. tf.data's autotuning is off for these
pipelines (see ``batched_dataset``). The training pipeline repeats, so that
``model.fit`` keeps one iterator for the whole run: no wait between epochs for
the last one's threads, and the next pass is prepared while the last one ends
(see ``train_dataset``).

**Input function** (``Task.input_fn``): every worker builds its own pipeline
with ``distribute_datasets_from_function``, and the task reads only its shard
(``InputContext.input_pipeline_id`` of ``num_input_pipelines``), in batches of
the per-replica batch. The pipeline repeats, and ``model.fit`` runs the steps
the pre-flight check counted in a pass (Keras needs them for a distributed
dataset, and every worker must run the same number).
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import orchestrator.worker  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow)

import numpy as np
import tensorflow as tf

from orchestrator.tasks import Task


def batched_dataset(x: np.ndarray, y: np.ndarray, global_batch: int, shuffle_seed: Optional[int] = None,
                    preprocess: Optional[Callable] = None) -> tf.data.Dataset:
    """Optionally reshuffled each epoch, batched by the global batch, preprocessed per batch, sharded by data."""
    return _gathered(_positions(len(y), shuffle_seed).batch(global_batch), x, y, preprocess)


def _positions(count: int, shuffle_seed: Optional[int] = None) -> tf.data.Dataset:
    """0 .. count-1; with a seed, a new permutation each pass, the same ones in every worker of that seed."""
    ds = tf.data.Dataset.range(count)
    if shuffle_seed is not None:
        ds = ds.shuffle(count, seed=shuffle_seed, reshuffle_each_iteration=True)
    return ds


def _gathered(positions: tf.data.Dataset, x: np.ndarray, y: np.ndarray,
              preprocess: Optional[Callable]) -> tf.data.Dataset:
    """Batches of positions -> (features, labels): rows gathered, preprocessed, prefetched, sharded by data."""
    features, labels = tf.constant(x), tf.constant(y)

    def gather(batch_positions: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        batch = tf.gather(features, batch_positions)
        return (preprocess(batch) if preprocess else batch), tf.gather(labels, batch_positions)

    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    # Keras makes a new iterator of a finite dataset every epoch (validation's), and deleting
    # the last one waits for tf.data's autotuning thread: up to 0.65 s between two epochs.
    # Without it, AUTOTUNE below takes tf.data's fixed defaults, which suit a gather and a
    # per-batch preprocess (measured: the epochs no slower); the batches and their order are the same.
    options.autotune.enabled = False
    return (positions.map(gather, num_parallel_calls=tf.data.AUTOTUNE)
            .prefetch(tf.data.AUTOTUNE).with_options(options))


def train_dataset(x: np.ndarray, y: np.ndarray, global_batch: int, shuffle_seed: int,
                  preprocess: Optional[Callable] = None) -> tuple[tf.data.Dataset, int]:
    """The training input: reshuffled each pass, repeating; with the steps of one pass (``steps_per_epoch``).

    Keras drops a finite dataset's iterator after every epoch and starts a new
    one, and deleting an iterator waits until its tf.data threads have ended:
    with 2 MWMS workers on 2 cores that wait took 8-10 s at about half the
    epoch ends (the other worker waiting meanwhile in the next epoch's first
    all-reduce), and the new iterator then fills the next pass's shuffle buffer
    (every position) while the model waits. A repeating pipeline has one
    iterator for the run (``fit`` keeps it when given ``steps_per_epoch``), and
    its prefetch prepares the next pass before the last one ends. The passes
    are the same: batches stop at the end of a pass (the last one partial), not
    across it.

    The first pass is skipped (positions only; nothing is gathered): ``fit``
    makes a finite dataset's iterator once before its first epoch and then again
    for it, so every run before the pipeline repeated trained its first epoch on
    the shuffle's *second* permutation (and the k-th on the k+1-th). Skipping it
    keeps those runs' data order, and with it their results, bit for bit; on
    resume too, where ``fit`` did the same.
    """
    steps = -(-len(y) // global_batch)
    positions = _positions(len(y), shuffle_seed).batch(global_batch).repeat().skip(steps)
    return _gathered(positions, x, y, preprocess), steps


def input_fn_dataset(strategy: tf.distribute.Strategy, task: Task, params: Any, split: str,
                     global_batch: int):
    """The task's own per-worker pipeline for ``split``, distributed by ``strategy``."""
    def dataset_fn(context: tf.distribute.InputContext) -> tf.data.Dataset:
        return task.input_fn(params, split, context, context.get_per_replica_batch_size(global_batch)).repeat()

    return strategy.distribute_datasets_from_function(dataset_fn)


def split_datasets(strategy: tf.distribute.Strategy, task: Task, params: Any, arrays, global_batch: int,
                   seed: int) -> tuple[Any, Any, Optional[int]]:
    """(train, validation, steps per epoch) for ``model.fit``, by the task's data path.

    The steps are those of one pass over the arrays; None for an input function
    (the pre-flight check counts its steps).
    """
    if task.per_worker_input:
        return (input_fn_dataset(strategy, task, params, "train", global_batch),
                input_fn_dataset(strategy, task, params, "validation", global_batch), None)
    train, steps = train_dataset(arrays.x_train, arrays.y_train, global_batch, seed, task.preprocess)
    return train, batched_dataset(arrays.x_val, arrays.y_val, global_batch, preprocess=task.preprocess), steps


def test_dataset(task: Task, params: Any, arrays, batch: int) -> tf.data.Dataset:
    """The test split in one process (the before/after evaluation and the export check)."""
    if task.per_worker_input:
        dataset = task.input_fn(params, "test", tf.distribute.InputContext(), batch)
        # A file pipeline's length is unknown until read, and Keras needs it with steps_per_execution.
        batches = int(dataset.reduce(np.int64(0), lambda n, _: n + 1))
        return dataset.apply(tf.data.experimental.assert_cardinality(batches))
    return batched_dataset(arrays.x_test, arrays.y_test, batch, preprocess=task.preprocess)
