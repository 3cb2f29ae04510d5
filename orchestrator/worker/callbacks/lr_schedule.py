"""Apply a declarative LR schedule each epoch and log it as ``learning_rate``."""

from __future__ import annotations

import orchestrator.worker  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow)

import tensorflow as tf

from orchestrator.schedules import Schedule


class ScheduledLearningRate(tf.keras.callbacks.LearningRateScheduler):
    """Keras's LearningRateScheduler over a pure ``schedule(epoch, base_lr)``.

    The LR of an epoch depends only on its index, so a run resumed at epoch N
    gets the LR an undisturbed run would have had.

    Args:
        schedule: one of :mod:`orchestrator.schedules`.
        base_lr: the optimizer's configured learning rate.
    """

    def __init__(self, schedule: Schedule, base_lr: float):
        super().__init__(lambda epoch, _current_lr: schedule(epoch, base_lr))

    def on_epoch_end(self, epoch, logs=None):
        super().on_epoch_end(epoch, logs)
        if logs is not None:
            # A plain float: numpy floats break ray.train.report's serialization.
            # TensorBoard writes this key as `epoch_learning_rate`.
            logs["learning_rate"] = float(logs.pop("lr"))
