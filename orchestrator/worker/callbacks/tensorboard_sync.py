"""Copy the chief's TensorBoard events to object storage each epoch (TensorFlow cannot write ``s3://``)."""

from __future__ import annotations

import orchestrator.worker  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow)

import tensorflow as tf

from orchestrator.storage import LocalMirror


class SyncTensorBoard(tf.keras.callbacks.Callback):
    """After every epoch and at the end, flush the event writers and upload what changed.

    Placed after the TensorBoard callbacks, so an epoch's events are written
    before they are copied: a live viewer of the store lags by at most one
    epoch. A trial that Tune stops (ASHA) gets no train end; its last epoch was
    synced already.

    Args:
        mirror: the local directory the TensorBoard callbacks write into, and its remote target.
        writers_of: the TensorBoard callbacks whose writers to flush first.
    """

    def __init__(self, mirror: LocalMirror, writers_of: list):
        super().__init__()
        self.mirror = mirror
        self.writers_of = writers_of

    def _flush(self) -> None:
        for callback in self.writers_of:
            for writer in list(getattr(callback, "_writers", {}).values()):
                writer.flush()
            writer = getattr(callback, "_writer", None)  # HParamsMetrics
            if writer is not None:
                writer.flush()

    def on_epoch_end(self, epoch, logs=None):
        self._flush()
        self.mirror.sync()

    def on_train_end(self, logs=None):
        self.mirror.close()
