"""The task's model, built and compiled for a run.

``build_compiled_model`` calls the task's ``build_model(params)``; an
uncompiled model is compiled with the spec's optimizer and the task's loss and
metrics. Build it inside a ``strategy.scope()`` to get mirrored variables.
``build_step_state`` then creates the compiled loss's and metrics' variables
from one batch, so that ``fit`` traces its train step once, not twice.
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


def build_step_state(model: tf.keras.Model, y, predictions) -> None:
    """Create the compiled loss's and metrics' variables now, from one batch, before ``fit``.

    Keras creates them inside the first trace of its train function, and a
    ``tf.function`` whose first call created variables is traced again (its
    variable-free version): every run and trial traced its train step twice
    (README, Benchmark). Built here, the step is traced once. They are the
    objects that trace would make, from the same shapes: Keras picks a string
    metric's variant (``accuracy`` -> sparse categorical) from the labels' and
    outputs' ranks. A model with its own ``train_step``, ``compute_loss`` or
    ``compute_metrics``, or with several outputs, keeps Keras's way.

    Args:
        model: compiled; call inside the strategy scope it was built in.
        y: the labels of one batch (the pre-flight check's).
        predictions: the model's outputs for that batch.
    """
    base = tf.keras.Model
    if any(getattr(type(model), name) is not getattr(base, name)
           for name in ("train_step", "compute_loss", "compute_metrics")):
        return
    if tf.nest.is_nested(predictions) or tf.nest.is_nested(y):
        return  # Keras first matches several outputs to their labels' structure
    loss, metrics = getattr(model, "compiled_loss", None), getattr(model, "compiled_metrics", None)
    if loss is not None and not loss.built:
        loss.build(predictions)
    if metrics is not None and not metrics.built:
        metrics.build(predictions, y)
