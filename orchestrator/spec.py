"""The experiment spec: everything a run needs, as validated pure data.

A spec is read from YAML, then command-line flags override single fields::

    $ cat jobs/configs/train_mnist.yaml
    optimizer: {name: adam, learning_rate: 0.001}
    training: {epochs: 20, batch_size_per_worker: 64}
    lr_schedule: {name: hold_then_exp_decay, hold_epochs: 5, rate: 0.1}
    early_stopping: {monitor: val_loss, patience: 3}
    scaling: {workers: 2}
    $ orchestrator train --config jobs/configs/train_mnist.yaml --epochs 5

Unknown keys and bad values are rejected with one line naming the field and
a valid example (``load_spec`` raises :class:`~orchestrator.errors.UserError`).
This module imports neither Ray nor TensorFlow: the driver validates a whole
experiment, search space included, before anything starts.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any, Literal, Optional

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from orchestrator.errors import UserError
from orchestrator.schedules import Schedule, HoldThenExpDecay


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TaskSpec(BaseModel):
    """Which task to train and its parameters: ``task: {name: mnist_cnn, dropout: 0.3}`` or ``task: mnist_cnn``.

    ``name`` is a built-in (``mnist_mlp``, the default; ``mnist_cnn``),
    ``package.module:attr`` or ``path/file.py:attr``; every other key is a
    parameter the task declares (checked against it by ``orchestrator.tasks``).
    """

    model_config = ConfigDict(extra="allow", frozen=True)
    name: str = Field("mnist_mlp", min_length=1, examples=["mnist_mlp"])

    @model_validator(mode="before")
    @classmethod
    def _name_alone(cls, value: Any) -> Any:
        return {"name": value} if isinstance(value, str) else value

    @property
    def params(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class OptimizerSpec(_Section):
    name: Literal["adam", "sgd"] = Field("adam", examples=["adam"])
    learning_rate: float = Field(1e-3, gt=0, examples=[0.001])
    momentum: float = Field(0.0, ge=0, lt=1, examples=[0.9])


class TrainingSpec(_Section):
    epochs: int = Field(20, ge=1, examples=[20])
    batch_size_per_worker: int = Field(64, ge=1, examples=[64])
    # Steps fused into one tf.function call: fewer Python round trips per epoch.
    # 16, not Keras's 1: the tutorial MLP's steps are so short that per-step Python
    # work dominated (README, Benchmark); same weights and accuracy, only how often
    # Python is re-entered changes. The orchestrator's callbacks are per epoch; a
    # per-batch one would see 1 call in 16.
    steps_per_execution: int = Field(16, ge=1, examples=[16])
    verbose: int = Field(2, ge=0, le=2, examples=[2])


class EarlyStoppingSpec(_Section):
    enabled: bool = Field(True, examples=[True])
    monitor: str = Field("val_loss", examples=["val_loss"])
    patience: int = Field(3, ge=1, examples=[3])
    min_delta: float = Field(0.0, ge=0, examples=[0.0])


class CheckpointSpec(_Section):
    monitor: str = Field("val_loss", examples=["val_loss"])
    mode: Literal["min", "max"] = Field("min", examples=["min"])
    keep_best: int = Field(2, ge=1, examples=[2])


class TensorBoardSpec(_Section):
    histogram_freq: int = Field(1, ge=0, examples=[1])
    write_graph: bool = Field(True, examples=[True])
    # A live TensorBoard server over the run's (or search's) central root while it runs.
    serve: bool = Field(False, examples=[True])
    port: Optional[int] = Field(None, ge=1, le=65535, examples=[6006])  # default: 6006 if free, else any


class ScalingSpec(_Section):
    workers: int = Field(2, ge=1, examples=[2])
    cpus_per_worker: float = Field(1.0, gt=0, examples=[1])
    gpus_per_worker: int = Field(0, ge=0, examples=[1])
    # PACK fills a node before the next; SPREAD puts workers on different nodes.
    placement: Literal["PACK", "SPREAD"] = Field("PACK", examples=["SPREAD"])
    # How many times Ray Train restarts a failed worker group from the last checkpoint.
    max_failures: int = Field(2, ge=0, examples=[2])


class DataSpec(_Section):
    """How much of the task's data a run uses: the first N examples of each split (all by default).

    What the splits are, and how large, is the task's business (e.g. MNIST holds
    out the last 10000 training images to validate); a cap larger than its split
    is refused when the data is loaded.
    """

    train_examples: Optional[int] = Field(None, ge=1, examples=[50000])
    validation_examples: Optional[int] = Field(None, ge=1, examples=[10000])
    test_examples: Optional[int] = Field(None, ge=1, examples=[10000])

    def caps(self) -> dict[str, Optional[int]]:
        return {"train": self.train_examples, "validation": self.validation_examples,
                "test": self.test_examples}


_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")


class MlflowSpec(_Section):
    """MLflow tracking (``pip install -e '.[mlflow]'``); the section's presence turns it on."""

    tracking_uri: Optional[str] = Field(None, examples=["http://127.0.0.1:5000"])  # None: MLFLOW_TRACKING_URI
    experiment: Optional[str] = Field(None, examples=["my-experiment"])  # None: MLFLOW_EXPERIMENT_NAME, else "orchestrator"
    optional: bool = False  # an unreachable server: a warning and no tracking, instead of exit 2


class ExperimentSpec(_Section):
    """One training run; a search varies some of its fields per trial."""

    name: Optional[str] = Field(None, examples=["run1"])
    storage: str = Field("results", examples=["results"])
    seed: int = Field(42, ge=0, examples=[42])
    # Ray's and TensorFlow's own logs on the console (default: one line per epoch, warnings, errors).
    verbose: bool = Field(False, examples=[True])
    task: TaskSpec = TaskSpec()
    optimizer: OptimizerSpec = OptimizerSpec()
    training: TrainingSpec = TrainingSpec()
    lr_schedule: Schedule = HoldThenExpDecay()
    early_stopping: EarlyStoppingSpec = EarlyStoppingSpec()
    checkpoint: CheckpointSpec = CheckpointSpec()
    tensorboard: TensorBoardSpec = TensorBoardSpec()
    scaling: ScalingSpec = ScalingSpec()
    data: DataSpec = DataSpec()
    mlflow: Optional[MlflowSpec] = None

    @field_validator("name")
    @classmethod
    def _safe_name(cls, name: Optional[str]) -> Optional[str]:
        if name is not None and not _NAME_RE.match(name):
            raise ValueError("must be letters, digits, '_', '.', '-' (no '/')")
        return name

    @model_validator(mode="after")
    def _check(self):
        # Defaults that depend on the run's length (e.g. a cosine's span) are the schedule's to fill.
        schedule = self.lr_schedule.for_run(self.training.epochs)
        if schedule is not self.lr_schedule:
            object.__setattr__(self, "lr_schedule", schedule)  # frozen: set once, while validating
        return self

    def global_batch_size(self, replicas: int) -> int:
        return self.training.batch_size_per_worker * replicas


# --------------------------------------------------------------------------- loading

def _example_for(model: type[BaseModel], loc: tuple) -> Optional[str]:
    """The documented example of the field at ``loc``, as a YAML line."""
    names = [p for p in loc if not isinstance(p, int)]
    parent = _model_at(model, tuple(names[:-1])) if names else None
    field = parent.model_fields.get(names[-1]) if parent else None
    if field is None or not field.examples:
        return None
    example = yaml.safe_dump(field.examples[0], default_flow_style=True).strip().removesuffix("...").strip()
    return f"`{names[-1]}: {example}`"


def _model_at(model: type[BaseModel], loc: tuple) -> Optional[type[BaseModel]]:
    """The pydantic model that holds the fields at ``loc`` (None if not a model)."""
    from orchestrator.schedules import SCHEDULES
    current: Any = model
    for part in loc:
        if isinstance(part, int):
            continue
        if part in SCHEDULES:
            current = SCHEDULES[part]
            continue
        field = current.model_fields.get(part) if isinstance(current, type) and issubclass(current, BaseModel) else None
        if field is None:
            return None
        current = field.annotation
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def format_validation_error(err: ValidationError, model: type[BaseModel], prefix: str = "") -> str:
    """The first problem of a pydantic error as one line: field, what is wrong, a valid example."""
    first = err.errors()[0]
    loc = tuple(first["loc"])
    from orchestrator.schedules import SCHEDULES
    where = ".".join(str(p) for p in loc if p not in SCHEDULES) or "config"
    what = first["msg"]
    if first["type"] == "extra_forbidden":
        parent = _model_at(model, loc[:-1])
        valid = f"; valid keys: {', '.join(parent.model_fields)}" if parent else ""
        what = f"unknown key{valid}"
    elif first["type"] == "value_error":
        what = what.removeprefix("Value error, ")
        field, sep, rest = what.partition(": ")
        parent = _model_at(model, loc)
        if sep and parent is not None and field in parent.model_fields:
            # A check across fields (model validator) names the field it is about.
            loc, what = loc + (field,), rest
            where = ".".join(str(p) for p in loc if p not in SCHEDULES)
    elif first["type"] == "union_tag_invalid":
        what = f"unknown schedule {first['input'].get('name')!r}; valid: {', '.join(SCHEDULES)}" \
            if isinstance(first.get("input"), dict) else what
    elif "input" in first and first["type"] not in ("missing",):
        what = f"{what}, got {first['input']!r}"
    more = f" (and {len(err.errors()) - 1} more)" if len(err.errors()) > 1 else ""
    example = _example_for(model, loc)
    hint = f" (valid example: {example})" if example else ""
    return f"{prefix}{where}: {what}{hint}{more}"


def read_yaml(path: str | Path) -> dict:
    """Read a YAML mapping with the safe loader; a one-line UserError otherwise."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise UserError(f"{path}: malformed YAML{where}: {getattr(exc, 'problem', exc)}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"{path}: the top level must be a mapping of keys, e.g. `training: {{epochs: 20}}`")
    return data


def set_path(config: dict, dotted: str, value: Any) -> dict:
    """Return a copy of ``config`` with ``a.b.c`` set to ``value`` (for CLI overrides)."""
    out = copy.deepcopy(config)
    if dotted.startswith("task.") and isinstance(out.get("task"), str):
        out["task"] = {"name": out["task"]}  # `task: mnist_cnn` is short for `task: {name: mnist_cnn}`
    node = out
    *parents, leaf = dotted.split(".")
    for key in parents:
        node = node.setdefault(key, {})
        if not isinstance(node, dict):
            raise UserError(f"{dotted}: `{key}` must be a mapping")
    node[leaf] = value
    return out


def build_spec(config: dict) -> ExperimentSpec:
    """Validate a config mapping into an ExperimentSpec; UserError on the first problem."""
    try:
        return ExperimentSpec.model_validate(config)
    except ValidationError as err:
        raise UserError(format_validation_error(err, ExperimentSpec)) from None


def load_config(path: Optional[str | Path] = None, overrides: Optional[dict[str, Any]] = None) -> dict:
    """The config mapping: ``path`` (optional) read, then ``{"training.epochs": 5, ...}`` overrides applied.

    The one way a config is loaded, for ``train`` and ``tune`` alike. An override
    of None is a flag not given; a task parameter may be set to None on purpose.
    """
    config = read_yaml(path) if path else {}
    for dotted, value in (overrides or {}).items():
        if value is not None or dotted.startswith("task."):
            config = set_path(config, dotted, value)
    return config


def load_spec(path: Optional[str | Path] = None, overrides: Optional[dict[str, Any]] = None) -> ExperimentSpec:
    """Read ``path`` (optional), apply overrides, validate (a ``search:`` section is left to search_space)."""
    config = load_config(path, overrides)
    config.pop("search", None)
    return build_spec(config)
