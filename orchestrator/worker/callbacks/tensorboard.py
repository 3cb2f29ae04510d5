"""TensorBoard for the chief worker only, plus the HParams record of a trial."""

from __future__ import annotations

from typing import Optional

import orchestrator.worker  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow)

import tensorflow as tf
from tensorboard.plugins.histogram import summary_v2 as histogram_summary

from orchestrator.best import ALSO_AT_BEST, trial_metrics
from orchestrator.best import best as orchestrator_best


class EpochTensorBoard(tf.keras.callbacks.TensorBoard):
    """Keras's TensorBoard, writing the op graph of ``train_function`` after the first epoch,
    and its weight histograms bucketed in NumPy.

    Keras writes that graph from a batch hook, which it only enables while
    profiling; switching batch hooks on would put Python work on every step.
    The conceptual (Keras model) graph is written at train begin as usual.
    """

    def on_epoch_end(self, epoch, logs=None):
        if self._should_write_train_graph:
            self._write_keras_model_train_graph()
            self._should_write_train_graph = False
        super().on_epoch_end(epoch, logs)

    def _log_weights(self, epoch):
        """The records Keras writes (same tags, steps and 30 buckets), made by TensorBoard's ``histogram_pb``.

        Keras's ``tf.summary.histogram`` buckets each weight with a chain of
        eager ops, every epoch; TensorBoard's own NumPy version of the same
        summary does it in one pass over the values, several times faster (README,
        Benchmark, (b)). Tracing the ops into one function instead would cost
        more at every run's first epoch than it saves. Weights drawn as images
        (``write_images``) stay Keras's.
        """
        if self.write_images:
            return super()._log_weights(epoch)
        with self._train_writer.as_default(), tf.summary.record_if(True):
            for layer in self.model.layers:
                for weight in layer.weights:
                    tag = weight.name.replace(":", "_") + "/histogram"
                    summary = histogram_summary.histogram_pb(tag, weight.numpy())
                    tf.summary.experimental.write_raw_pb(summary.SerializeToString(), step=epoch)
            self._train_writer.flush()


class HParamsMetrics(tf.keras.callbacks.Callback):
    """Write a trial's comparison metrics into its run, every epoch, for the HParams dashboard.

    ``best_<monitor>`` (the search's metric, best by its mode), ``best_val_loss``
    and ``best_val_accuracy`` at that same epoch, and ``epochs_run``, as
    scalars at the run's root. Written each epoch because Tune may stop a trial
    (ASHA) without running any end-of-training hook.

    Args:
        log_dir: the trial's run directory under the central TensorBoard root.
        history: epochs already run before a resume.
        monitor: the metric that ranks epochs (the search's), e.g. ``val_loss``.
        mode: ``min`` or ``max``: which way ``monitor`` is better.
    """

    def __init__(self, log_dir: str, history: Optional[list[dict]] = None, monitor: str = "val_loss",
                 mode: str = "min"):
        super().__init__()
        self.log_dir = log_dir
        self.monitor, self.mode = monitor, mode
        self.history = [dict(h) for h in (history or [])]
        self._writer = None

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        self.history.append({k: float(logs.get(k, float("nan"))) for k in {self.monitor, *ALSO_AT_BEST}})
        best = orchestrator_best(self.history, self.monitor, self.mode) or self.history[-1]
        if self._writer is None:
            self._writer = tf.summary.create_file_writer(self.log_dir)
        with self._writer.as_default(), tf.summary.record_if(True):
            for metric in trial_metrics(self.monitor):
                value = epoch + 1 if metric == "epochs_run" else best[metric.removeprefix("best_")]
                tf.summary.scalar(metric, value, step=epoch)
        self._writer.flush()

    def _close_writers(self):
        """Named as Keras's TensorBoard names it: the loop closes both kinds when fit() is left early."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def chief_tensorboard(log_dir: str, histogram_freq: int, write_graph: bool,
                      hparams: Optional[dict] = None, trial_id: Optional[str] = None,
                      history: Optional[list[dict]] = None, monitor: str = "val_loss",
                      mode: str = "min") -> list:
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
        monitor, mode: what ranks a trial's epochs (the search's metric and mode).
    """
    callbacks = [EpochTensorBoard(
        log_dir=log_dir, histogram_freq=histogram_freq, write_graph=write_graph,
        update_freq="epoch", profile_batch=0)]
    if hparams:
        from tensorboard.plugins.hparams import api as hp
        callbacks += [hp.KerasCallback(log_dir, hparams, trial_id=trial_id),
                      HParamsMetrics(log_dir, history, monitor, mode)]
    return callbacks
