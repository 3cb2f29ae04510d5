"""The task's model, built and compiled for a run.

``build_compiled_model`` calls the task's ``build_model(params)``; an
uncompiled model is compiled with the spec's optimizer and the task's loss and
metrics. Build it inside a ``strategy.scope()`` to get mirrored variables.
"""

from __future__ import annotations

import orchestrator.worker  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow)

import tensorflow as tf

from orchestrator.spec import ExperimentSpec
from orchestrator.tasks import Task


class TaskError(Exception):
    """The task cannot train (its builder raised, its outputs do not fit its labels, ...): one line."""


def make_optimizer(spec: ExperimentSpec) -> tf.keras.optimizers.Optimizer:
    opt = spec.optimizer
    if opt.name == "sgd":
        return tf.keras.optimizers.SGD(learning_rate=opt.learning_rate, momentum=opt.momentum)
    return tf.keras.optimizers.Adam(learning_rate=opt.learning_rate)


def build_compiled_model(spec: ExperimentSpec, task: Task, params) -> tf.keras.Model:
    """The task's model, compiled, with the optimizer's slots created so a checkpoint can restore them."""
    try:
        model = task.build_model(params)
    except Exception as exc:  # the user's builder may raise anything
        raise TaskError(f"task {spec.task.name}: build_model raised {type(exc).__name__}: {exc}") from None
    if not isinstance(model, tf.keras.Model):
        raise TaskError(f"task {spec.task.name}: build_model returned a {type(model).__name__}, "
                        "not a tf.keras.Model (is TF_USE_LEGACY_KERAS=1 set before TensorFlow is imported?)")
    if not model._is_compiled:
        model.compile(optimizer=make_optimizer(spec), loss=task.loss, metrics=list(task.metrics),
                      steps_per_execution=spec.training.steps_per_execution)
    # Keras's default ("auto" -> "sum") all-reduces every logged metric across the
    # workers after every step, on top of the gradients. A metric's result() already
    # aggregates over all replicas, so every worker holds the same global value and
    # the first local one is the answer (EarlyStopping and ModelCheckpoint still agree).
    model.distribute_reduction_method = "first"
    model.optimizer.build(model.trainable_variables)
    return model
