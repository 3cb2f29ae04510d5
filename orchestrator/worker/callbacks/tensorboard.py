"""TensorBoard for the chief worker only, plus the HParams record of a trial."""

from __future__ import annotations

from typing import Optional

import orchestrator.worker  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow)

import tensorflow as tf


class EpochTensorBoard(tf.keras.callbacks.TensorBoard):
    """Keras's TensorBoard, writing the op graph of ``train_function`` after the first epoch.

    Keras writes that graph from a batch hook, which it only enables while
    profiling; switching batch hooks on would put Python work on every step.
    The conceptual (Keras model) graph is written at train begin as usual.
    """

    def on_epoch_end(self, epoch, logs=None):
        if self._should_write_train_graph:
            self._write_keras_model_train_graph()
            self._should_write_train_graph = False
        super().on_epoch_end(epoch, logs)


def chief_tensorboard(log_dir: str, histogram_freq: int, write_graph: bool,
                      hparams: Optional[dict] = None, trial_id: Optional[str] = None) -> list:
    """The TensorBoard callbacks for the chief: scalars, histograms, graph, HParams.

    Non-chief workers get none: Keras would give each a ``workertemp_N``
    directory under the same log dir, which TensorBoard then shows as clashing
    runs. The chief's metrics are already global (all-reduced), so nothing is lost.

    Args:
        log_dir: this run's directory under the central TensorBoard root.
        histogram_freq: epochs between weight histograms (0: none).
        write_graph: write the model graph.
        hparams: a trial's hyperparameters, recorded for the HParams dashboard.
        trial_id: the trial's name in the HParams dashboard.
    """
    callbacks = [EpochTensorBoard(
        log_dir=log_dir, histogram_freq=histogram_freq, write_graph=write_graph,
        update_freq="epoch", profile_batch=0)]
    if hparams:
        from tensorboard.plugins.hparams import api as hp
        callbacks.append(hp.KerasCallback(log_dir, hparams, trial_id=trial_id))
    return callbacks
