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


class HParamsMetrics(tf.keras.callbacks.Callback):
    """Write a trial's comparison metrics into its run, every epoch, for the HParams dashboard.

    ``best_val_loss``, ``best_val_accuracy`` (at the best val_loss epoch) and
    ``epochs_run``, as scalars at the run's root. Written each epoch because Tune
    may stop a trial (ASHA) without running any end-of-training hook.

    Args:
        log_dir: the trial's run directory under the central TensorBoard root.
        history: epochs already run before a resume.
    """

    def __init__(self, log_dir: str, history: Optional[list[dict]] = None):
        super().__init__()
        self.log_dir = log_dir
        self.history = [dict(h) for h in (history or [])]
        self._writer = None

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        self.history.append({"val_loss": float(logs.get("val_loss", float("nan"))),
                             "val_accuracy": float(logs.get("val_accuracy", float("nan")))})
        best = min(self.history, key=lambda h: h["val_loss"])
        if self._writer is None:
            self._writer = tf.summary.create_file_writer(self.log_dir)
        with self._writer.as_default(), tf.summary.record_if(True):
            tf.summary.scalar("best_val_loss", best["val_loss"], step=epoch)
            tf.summary.scalar("best_val_accuracy", best["val_accuracy"], step=epoch)
            tf.summary.scalar("epochs_run", epoch + 1, step=epoch)
        self._writer.flush()

    def _close_writers(self):
        """Named as Keras's TensorBoard names it: the loop closes both kinds when fit() is left early."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def chief_tensorboard(log_dir: str, histogram_freq: int, write_graph: bool,
                      hparams: Optional[dict] = None, trial_id: Optional[str] = None,
                      history: Optional[list[dict]] = None) -> list:
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
        history: epochs already run before a resume (for the HParams metrics).
    """
    callbacks = [EpochTensorBoard(
        log_dir=log_dir, histogram_freq=histogram_freq, write_graph=write_graph,
        update_freq="epoch", profile_batch=0)]
    if hparams:
        from tensorboard.plugins.hparams import api as hp
        callbacks += [hp.KerasCallback(log_dir, hparams, trial_id=trial_id),
                      HParamsMetrics(log_dir, history)]
    return callbacks
