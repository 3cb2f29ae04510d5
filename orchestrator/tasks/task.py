"""What a task is: a Keras model, its loss and metrics, its data, and its parameters.

A task is the one seam between the orchestrator and what it trains. Everything
else (Ray Train, Tune, checkpoints, resume, TensorBoard, evaluation, export) is
the same for every task. A complete user task::

    # my_task.py -- orchestrator train --task my_task.py:task --workers 2
    import numpy as np
    from orchestrator.tasks import Arrays, Task

    def build_model(p):                 # p: the validated parameters (p.units, p.dropout)
        import tensorflow as tf         # inside the function: a search's driver never imports TF
        return tf.keras.Sequential([
            tf.keras.layers.Flatten(input_shape=(28, 28)),
            tf.keras.layers.Dense(p.units, activation="relu"),
            tf.keras.layers.Dropout(p.dropout),
            tf.keras.layers.Dense(10, activation="softmax")])

    def load_data(p):                   # runs once, on the driver; arrays reach workers via Ray
        d = np.load(p.path)
        x, y = d["x_train"] / 255.0, d["y_train"]
        return Arrays(x[:50000], y[:50000], x[50000:], y[50000:], d["x_test"] / 255.0, d["y_test"])

    task = Task(build_model=build_model, load_data=load_data,
                params={"units": 128, "dropout": 0.2, "path": "data/mnist.npz"})

Parameters are declared by their defaults (their type is the default's type;
give ``(type, default)`` for anything else, e.g. ``(Optional[str], None)``).
They are set in YAML (``task: {name: my_task.py:task, units: 256}``), on the
command line (``--task-param units=256``), and searched like any spec field
(``task.dropout: {uniform: [0.0, 0.5]}``).

Pure Python: no TensorFlow or Ray is imported here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Optional, Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict, ValidationError, create_model

from orchestrator.errors import UserError

SPLITS = ("train", "validation", "test")


@dataclass(frozen=True)
class Arrays:
    """In-memory data: features ``x_*`` (numeric numpy arrays) and labels ``y_*`` for the three splits.

    The driver loads them once and puts them into Ray's object store; every
    worker reads them from there (no copy of the data files on worker nodes)
    and takes its part of every global batch. ``test`` is what the before/after
    evaluation and the exported model are scored on.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray

    def split(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        return {"train": (self.x_train, self.y_train), "validation": (self.x_val, self.y_val),
                "test": (self.x_test, self.y_test)}[name]

    def sizes(self) -> dict[str, int]:
        return {name: len(self.split(name)[1]) for name in SPLITS}

    def check(self, task: str) -> "Arrays":
        """One-line UserError on arrays the workers could not train on."""
        for name in SPLITS:
            x, y = self.split(name)
            for what, arr in (("x", x), ("y", y)):
                if not isinstance(arr, np.ndarray):
                    raise UserError(f"task {task}: {what} of the {name} split is a {type(arr).__name__}, "
                                    "not a numpy array")
                if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_):
                    raise UserError(f"task {task}: {what} of the {name} split has dtype {arr.dtype}, "
                                    "not numeric")
            if len(x) != len(y):
                raise UserError(f"task {task}: the {name} split has {len(x)} examples in x but {len(y)} in y")
            if len(y) == 0:
                raise UserError(f"task {task}: the {name} split is empty")
        return self

    def limit(self, caps: Mapping[str, Optional[int]], task: str) -> "Arrays":
        """The first ``caps[split]`` examples of each split (``data.train_examples`` etc.)."""
        parts = []
        for name in SPLITS:
            x, y = self.split(name)
            cap = caps.get(name)
            if cap is not None and cap > len(y):
                raise UserError(f"data.{name}_examples: {cap} is more than the {len(y)} {name} examples "
                                f"of task {task} (valid example: `{name}_examples: {len(y)}`)")
            parts += [x[:cap], y[:cap]] if cap is not None else [x, y]
        return Arrays(*parts)


def _annotation(default: Any) -> Any:
    if isinstance(default, bool):
        return bool
    if isinstance(default, float):
        return float
    if isinstance(default, int):
        return int
    if isinstance(default, str):
        return str
    if isinstance(default, (list, tuple)):
        inner = {_annotation(v) for v in default}
        return list[inner.pop()] if len(inner) == 1 else list
    return Any


@dataclass(frozen=True)
class Task:
    """A trainable thing: how to build the model, and where its data comes from.

    Args:
        build_model: ``build_model(params) -> tf.keras.Model``. Return it
            uncompiled and the orchestrator compiles it with the spec's optimizer,
            LR, ``loss`` and ``metrics``; return it compiled and your compile is kept
            (the LR schedule still sets the optimizer's LR every epoch).
        params: the task's parameters as ``{name: default}`` or ``{name: (type, default)}``.
        load_data: ``load_data(params) -> Arrays``, called once on the driver.
        input_fn: ``input_fn(params, split, input_context, batch_size) -> tf.data.Dataset``,
            called in every worker for data that does not fit the object store: it
            reads only shard ``input_context.input_pipeline_id`` of
            ``input_context.num_input_pipelines`` and yields ``(x, y)`` batches of
            ``batch_size`` (the per-replica batch). ``split`` is train, validation or test.
            Give ``load_data`` or ``input_fn``, not both.
        loss: the Keras loss (a name or a loss object).
        metrics: Keras metrics; ``accuracy`` gives ``val_accuracy`` in summaries.
        preprocess: for ``load_data`` tasks, a TensorFlow function applied to each
            batch of ``x`` in the input pipeline (e.g. uint8 pixels to floats), so the
            object store carries the compact raw arrays.
        description: one line for ``--help`` and result files.
    """

    build_model: Callable[[Any], Any]
    params: Mapping[str, Any] = field(default_factory=dict)
    load_data: Optional[Callable[[Any], Arrays]] = None
    input_fn: Optional[Callable[[Any, str, Any, int], Any]] = None
    loss: Any = "sparse_categorical_crossentropy"
    metrics: Sequence[Any] = ("accuracy",)
    preprocess: Optional[Callable[[Any], Any]] = None
    description: str = ""

    def __post_init__(self):
        if not callable(self.build_model):
            raise TypeError("build_model must be a function: build_model(params) -> tf.keras.Model")
        if (self.load_data is None) == (self.input_fn is None):
            raise TypeError("give exactly one of load_data (arrays) or input_fn (per-worker tf.data)")

    @property
    def per_worker_input(self) -> bool:
        return self.input_fn is not None

    def params_model(self) -> type[BaseModel]:
        fields = {}
        for name, value in self.params.items():
            if isinstance(value, tuple) and len(value) == 2 and not isinstance(value[0], (int, float, str)):
                fields[name] = value
            else:
                fields[name] = (_annotation(value), value)
        return create_model("TaskParams", __config__=ConfigDict(extra="forbid", frozen=True), **fields)

    def defaults(self) -> dict:
        return self.params_model()().model_dump()

    def parse_params(self, raw: Mapping[str, Any], name: str) -> BaseModel:
        """Validate ``raw`` against the declared parameters; one-line UserError naming the parameter."""
        model = self.params_model()
        try:
            return model.model_validate(dict(raw))
        except ValidationError as err:
            first = err.errors()[0]
            key = ".".join(str(p) for p in first["loc"]) or "params"
            top = str(first["loc"][0]) if first["loc"] else ""
            if first["type"] == "extra_forbidden":
                valid = ", ".join(model.model_fields) or "none"
                raise UserError(f"task.{key}: unknown parameter of task {name}; valid: {valid}") from None
            default = model.model_fields[top].default if top in model.model_fields else None
            example = f" (valid example: `{top}: {default!r}`)" if top in model.model_fields else ""
            msg = first["msg"].removeprefix("Value error, ")
            raise UserError(f"task.{key}: {msg}, got {first.get('input')!r}{example}") from None

    def arrays(self, params: Any, caps: Mapping[str, Optional[int]], name: str) -> Arrays:
        """Call ``load_data`` (on the driver), check the arrays, take the first ``caps[split]`` of each split."""
        try:
            arrays = self.load_data(params)
        except UserError:
            raise
        except Exception as exc:  # the user's loader may raise anything
            raise UserError(f"task {name}: load_data raised {type(exc).__name__}: {exc}") from None
        if not isinstance(arrays, Arrays):
            raise UserError(f"task {name}: load_data returned a {type(arrays).__name__}, "
                            "not orchestrator.tasks.Arrays")
        return arrays.check(name).limit(caps, name)
