"""EarlyStopping whose counters survive a restart from a checkpoint."""

from __future__ import annotations

import orchestrator.worker  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow)

import tensorflow as tf


class ResumableEarlyStopping(tf.keras.callbacks.EarlyStopping):
    """Keras's EarlyStopping plus ``state()`` / ``restore()`` for checkpoints.

    Keras resets ``wait`` and ``best`` in ``on_train_begin``; a run resumed
    after a worker failure must instead continue counting where it was, or it
    would stop later than an undisturbed run.

    Args:
        **kwargs: as for ``tf.keras.callbacks.EarlyStopping``.
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._restored: dict | None = None

    def state(self) -> dict:
        return {"wait": int(self.wait), "best": float(self.best), "best_epoch": int(self.best_epoch)}

    def restore(self, state: dict) -> None:
        self._restored = dict(state)

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        if self._restored:
            self.wait = self._restored["wait"]
            self.best = self._restored["best"]
            self.best_epoch = self._restored["best_epoch"]
