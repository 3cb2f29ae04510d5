"""The search: a declarative, validated space over the experiment spec.

A tune config is an experiment spec plus a ``search`` section. Keys of
``space`` are dotted spec fields; ``lr_schedule`` is a choice of schedule
families, each with its own parameters (conditional: a trial only gets the
parameters of the family it drew)::

    search:
      samples: 16
      algorithm: random            # or optuna, pbt: orchestrator/search_algorithms.py
      workers_per_trial: 2
      asha: {grace_period: 3, reduction_factor: 2}    # max epochs: training.epochs
      space:
        optimizer.learning_rate: {loguniform: [0.0003, 0.01]}
        early_stopping.patience: {randint: [2, 6]}    # inclusive bounds
        lr_schedule:
          hold_then_exp_decay: {hold_epochs: {randint: [2, 8]}, rate: {uniform: [0.05, 0.3]}}
          step: {drop: {uniform: [0.3, 0.7]}, every: {randint: [2, 5]}}
          cosine: {}

A value is a constant, or one of ``{uniform: [lo, hi]}``, ``{loguniform: [lo, hi]}``,
``{randint: [lo, hi]}``, ``{choice: [a, b, ...]}``, or ``{grid: [a, b, ...]}`` (every
value, once per sample: ``samples`` x grid size trials; random search only).
Nothing is evaluated as code.
This module is pure data (no Ray, no TensorFlow); ``to_tune`` turns a space
into Tune's domains, importing Tune only then.
"""

from __future__ import annotations

import copy
from typing import Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from orchestrator.errors import UserError
from orchestrator.schedules import SCHEDULES
from orchestrator.search_algorithms import ALGORITHMS, check_installed
from orchestrator.spec import ExperimentSpec, build_spec, format_validation_error, set_path

DOMAIN_KINDS = ("uniform", "loguniform", "randint", "choice", "grid")
SCHEDULE_KEY = "lr_schedule"


class Domain(BaseModel):
    """One sampled value: ``{kind: args}``."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    kind: Literal["uniform", "loguniform", "randint", "choice", "grid"]
    args: list

    @model_validator(mode="after")
    def _check_args(self):
        if self.kind in ("choice", "grid"):
            if not self.args:
                raise ValueError(f"{self.kind} needs at least one value, e.g. {{{self.kind}: [adam, sgd]}}")
            return self
        if len(self.args) != 2 or not all(isinstance(a, (int, float)) and not isinstance(a, bool)
                                          for a in self.args):
            raise ValueError(f"{self.kind} needs [low, high] numbers, e.g. {{{self.kind}: [1, 10]}}")
        low, high = self.args
        if self.kind == "randint" and not all(isinstance(a, int) for a in self.args):
            raise ValueError("randint needs integer bounds, e.g. {randint: [2, 6]}")
        if low > high or (low == high and self.kind != "randint"):
            raise ValueError(f"{self.kind} needs low < high, got [{low}, {high}]")
        if self.kind == "loguniform" and low <= 0:
            raise ValueError(f"loguniform needs low > 0, got {low}")
        return self

    def candidates(self) -> list:
        """Every choice, or both bounds: checked against the spec before searching."""
        return list(self.args)

    def to_tune(self):
        from ray import tune

        low_high = self.args
        if self.kind == "uniform":
            return tune.uniform(*low_high)
        if self.kind == "loguniform":
            return tune.loguniform(*low_high)
        if self.kind == "randint":
            return tune.randint(low_high[0], low_high[1] + 1)  # Tune's upper bound is exclusive
        if self.kind == "grid":
            return tune.grid_search(list(self.args))  # every value, in order, per sample
        return tune.choice(list(self.args))


def parse_value(value: Any, where: str) -> Union[Domain, Any]:
    """A constant, or a one-key mapping naming a domain kind."""
    if isinstance(value, dict) and len(value) == 1 and next(iter(value)) in DOMAIN_KINDS:
        kind, args = next(iter(value.items()))
        try:
            return Domain(kind=kind, args=args if isinstance(args, list) else [args])
        except ValidationError as err:
            raise UserError(f"search.space.{where}: {err.errors()[0]['msg'].removeprefix('Value error, ')}") from None
    if isinstance(value, dict):
        raise UserError(f"search.space.{where}: a value is a constant or one of "
                        f"{{{', '.join(k + ': ...' for k in DOMAIN_KINDS)}}}, got keys {sorted(value)}")
    return value


class AshaSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    enabled: bool = True
    grace_period: int = Field(2, ge=1, examples=[2])
    reduction_factor: float = Field(2, gt=1, examples=[2])


class PbtSpec(BaseModel):
    """Population Based Training (``algorithm: pbt``): Ray Tune's ``PopulationBasedTraining``.

    The population is ``samples`` members training side by side; every
    ``perturbation_interval`` epochs a member in the bottom ``quantile`` copies
    the whole training state of one in the top quantile and perturbs the
    ``mutate`` parameters: multiplied by one of ``perturbation_factors``, or
    (with ``resample_probability``) drawn again from its domain in ``space``,
    clamped to that domain's bounds.

    With ``synch`` (Tune's synchronous PBT), every member waits at each
    perturbation point until all have reached it, and then the bottom copy the
    top: copies that do not depend on which member happens to run ahead, at the
    cost of slots standing idle while the slowest member catches up. Without it
    (the default), a member compares itself with the others' latest scores when
    it reaches the point.

    With ``algorithm: pb2`` (Ray Tune's Population Based Bandits) the same
    settings hold but for the perturbation: a Gaussian process, fitted to how
    much each member improved between perturbation points with the values it
    had, picks the copying member's new values within each ``mutate``
    parameter's bounds (a range's, or a numeric choice's smallest and largest
    value); ``resample_probability`` and ``perturbation_factors`` are not used.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    perturbation_interval: int = Field(2, ge=1, examples=[2])
    synch: bool = Field(False, examples=[True])
    quantile: float = Field(0.25, gt=0, le=0.5, examples=[0.25])
    resample_probability: float = Field(0.25, ge=0, le=1, examples=[0.25])
    perturbation_factors: tuple[float, float] = Field((1.2, 0.8), examples=[[1.2, 0.8]])
    mutate: Optional[list[str]] = Field(None, min_length=1, examples=[["optimizer.learning_rate"]])

    @field_validator("perturbation_factors")
    @classmethod
    def _positive(cls, factors):
        if any(f <= 0 for f in factors):
            raise ValueError(f"factors must be > 0, got {list(factors)}")
        return factors


# What a trial reports each epoch, and which way is better (for `stop_at`).
STOP_METRICS = {"val_accuracy": "max", "accuracy": "max", "val_loss": "min", "loss": "min"}


class SearchSpec(BaseModel):
    """How to search: the space, the algorithm, trials and their resources."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    samples: int = Field(8, ge=1, examples=[16])
    algorithm: str = Field("random", examples=["random"])  # a name in search_algorithms.ALGORITHMS
    metric: str = Field("val_loss", examples=["val_loss"])
    mode: Literal["min", "max"] = Field("min", examples=["min"])
    workers_per_trial: Optional[int] = Field(None, ge=1, examples=[2])
    max_concurrent: Optional[int] = Field(None, ge=1, examples=[2])
    max_failures_per_trial: int = Field(0, ge=0, examples=[1])
    # Trials of one worker train inside Tune's own (reused) trial actor, TensorFlow imported
    # and the data fetched once per actor, instead of a Ray Train worker group per trial.
    # False: every trial runs under Ray Train, as trials of several workers always do.
    fast_path: bool = Field(True, examples=[False])
    # Keep the K best trials' models (each with its config and test evaluation) under top_models/.
    export_top: Optional[int] = Field(None, ge=1, examples=[3])
    asha: AshaSpec = AshaSpec()
    pbt: PbtSpec = PbtSpec()
    # End the whole search once any trial reaches every one of these, e.g. {val_accuracy: 0.98}.
    stop_at: Optional[dict[str, float]] = Field(None, examples=[{"val_accuracy": 0.98}])
    space: dict[str, Any] = Field(..., examples=[{"optimizer.learning_rate": {"loguniform": [1e-4, 1e-2]}}])

    @field_validator("algorithm")
    @classmethod
    def _known_algorithm(cls, name: str) -> str:
        if name not in ALGORITHMS:
            raise ValueError(f"unknown algorithm {name!r}; valid: {', '.join(ALGORITHMS)}")
        return name

    @field_validator("stop_at")
    @classmethod
    def _known_metrics(cls, stop_at: Optional[dict]) -> Optional[dict]:
        if stop_at is None:
            return None
        if not stop_at:
            raise ValueError("give at least one metric, e.g. `stop_at: {val_accuracy: 0.98}`")
        for metric, target in stop_at.items():
            if metric not in STOP_METRICS:
                raise ValueError(f"{metric!r} is not a metric trials report; valid: {', '.join(STOP_METRICS)}")
            if metric.endswith("accuracy") and not 0 < target <= 1:
                raise ValueError(f"an accuracy target is in (0, 1], got {metric}: {target}")
            if metric.endswith("loss") and target <= 0:
                raise ValueError(f"a loss target is > 0, got {metric}: {target}")
        return stop_at

    @field_validator("space")
    @classmethod
    def _not_empty(cls, space: dict) -> dict:
        if not space:
            raise ValueError("the search space is empty; give at least one key, "
                             "e.g. `optimizer.learning_rate: {loguniform: [0.0003, 0.01]}`")
        return space


class Search:
    """A validated search: base spec, parsed space, and how trials build their spec."""

    def __init__(self, base: ExperimentSpec, search: SearchSpec, base_config: dict):
        self.base = base
        self.search = search
        self._base_config = base_config
        self.fields: dict[str, Any] = {}                       # dotted spec path -> Domain | constant
        self.schedules: dict[str, dict[str, Any]] = {}         # family -> {param: Domain | constant}
        for key, value in search.space.items():
            if key == SCHEDULE_KEY:
                self._parse_schedules(value)
            else:
                self.fields[key] = parse_value(value, key)
        self._check_against_spec()
        self._check_pbt()
        check_installed(search.algorithm)
        if not ALGORITHMS[search.algorithm].enumerates_grids and any(
                isinstance(v, Domain) and v.kind == "grid" for v in self._all_values()):
            raise UserError(f"search.space: grid domains need `algorithm: random` ({search.algorithm} samples, "
                            "it does not enumerate); use {choice: [...]} instead")

    # ------------------------------------------------------------------ PBT

    def _check_pbt(self) -> None:
        s = self.search
        if not ALGORITHMS[s.algorithm].population:
            if "pbt" in s.model_fields_set:
                raise UserError("search.pbt: only used with `algorithm: pbt` or `pb2`")
            return
        name = s.algorithm.upper()
        if self.population() < 2:
            raise UserError(f"search.samples: {name} needs a population of at least 2, got {self.population()}")
        if "asha" in s.model_fields_set and s.asha.enabled:
            raise UserError(f"search.asha: {name} cannot be combined with ASHA ({name}'s scheduler replaces it); "
                            "remove `asha:` from the config")
        if s.algorithm == "pb2":
            unused = [f for f in ("resample_probability", "perturbation_factors") if f in s.pbt.model_fields_set]
            if unused:
                raise UserError(f"search.pbt.{unused[0]}: not used by pb2 (its Gaussian process picks the new "
                                "values within each mutated parameter's bounds); remove it, or use `algorithm: pbt`")
        epochs = self.base.training.epochs
        if s.pbt.perturbation_interval >= epochs:
            raise UserError(f"search.pbt.perturbation_interval: {s.pbt.perturbation_interval} epochs leaves no "
                            f"perturbation within training.epochs ({epochs}); use at most {max(1, epochs - 1)}")
        for key in self.mutated():
            if key == SCHEDULE_KEY:
                raise UserError(f"search.pbt.mutate: {SCHEDULE_KEY} cannot be mutated (a member keeps its schedule "
                                "family); mutate optimizer.learning_rate, the base LR of that schedule")
            value = self.fields.get(key)
            if not isinstance(value, Domain):
                raise UserError(f"search.pbt.mutate: {key!r} is not a searched parameter of search.space; "
                                f"searched: {', '.join(k for k, v in self.fields.items() if isinstance(v, Domain)) or 'none'}")
            if value.kind != "choice" and not all(isinstance(a, (int, float)) for a in value.args):
                raise UserError(f"search.pbt.mutate: {key!r} must be numeric or a choice to be mutated")
            if s.algorithm == "pb2" and not _numeric(value.args):
                raise UserError(f"search.pbt.mutate: pb2 explores numbers within bounds; {key!r} is a choice of "
                                f"{value.args}: use `algorithm: pbt`, or leave it out of `mutate`")

    def population(self, samples: Optional[int] = None) -> int:
        """How many trials the search runs: samples x every grid's size."""
        n = samples or self.search.samples
        for value in self._all_values():
            if isinstance(value, Domain) and value.kind == "grid":
                n *= len(value.args)
        return n

    def mutated(self) -> list[str]:
        """The parameters PBT perturbs: ``pbt.mutate``, by default every sampled field of the space."""
        if self.search.pbt.mutate is not None:
            return list(self.search.pbt.mutate)
        return [k for k, v in self.fields.items() if isinstance(v, Domain)]

    def pbt_mutations(self) -> dict:
        """PBT's ``hyperparam_mutations``: what it resamples from, else multiplies by a factor.

        A numeric domain (also a choice or grid of numbers) is multiplied, or
        resampled from; a choice of other values is shifted to a neighbour.
        """
        out: dict[str, Any] = {}
        for key in self.mutated():
            domain = self.fields[key]
            if domain.kind in ("choice", "grid"):
                out[key] = Resample(domain.args) if _numeric(domain.args) else list(domain.args)
            else:
                out[key] = domain.to_tune()
        return out

    def pb2_bounds(self) -> dict[str, list]:
        """PB2's ``hyperparam_bounds``: each mutated parameter's [low, high].

        A range's bounds; for a choice or grid of numbers, its smallest and
        largest (PB2 explores between them, where PBT would resample the list).
        """
        return {key: [min(self.fields[key].args), max(self.fields[key].args)] for key in self.mutated()}

    def clamp_mutations(self, config: dict) -> dict:
        """Keep new values inside their bounds (PBT's and PB2's ``custom_explore_fn``).

        PBT: a range's bounds; a choice or grid of numbers names starting points,
        not bounds, and is not clamped. PB2: the bounds it explores
        (``pb2_bounds``); its values come as float32, which can lie a hair outside.
        """
        bounds = self.pb2_bounds() if self.search.algorithm == "pb2" else {
            key: self.fields[key].args for key in self.mutated()
            if self.fields[key].kind in ("uniform", "loguniform", "randint")}
        for key, (low, high) in bounds.items():
            value = config.get(key)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                config[key] = type(value)(min(max(value, low), high))
        return config

    def _all_values(self) -> list:
        return [*self.fields.values(), *(v for p in self.schedules.values() for v in p.values())]

    def _parse_schedules(self, value: Any) -> None:
        if not isinstance(value, dict) or not value:
            raise UserError(f"search.space.{SCHEDULE_KEY}: a mapping of schedule families to their "
                            f"parameters, e.g. `{SCHEDULE_KEY}: {{step: {{every: {{randint: [2, 5]}}}}, cosine: {{}}}}`")
        for family, params in value.items():
            if family not in SCHEDULES:
                raise UserError(f"search.space.{SCHEDULE_KEY}.{family}: unknown schedule; valid: {', '.join(SCHEDULES)}")
            params = params or {}
            if not isinstance(params, dict):
                raise UserError(f"search.space.{SCHEDULE_KEY}.{family}: parameters must be a mapping")
            allowed = [f for f in SCHEDULES[family].model_fields if f != "name"]
            for name in params:
                if name not in allowed:
                    raise UserError(f"search.space.{SCHEDULE_KEY}.{family}.{name}: unknown parameter; "
                                    f"valid: {', '.join(allowed) or 'none'}")
            self.schedules[family] = {name: parse_value(v, f"{SCHEDULE_KEY}.{family}.{name}")
                                      for name, v in params.items()}

    def _check_against_spec(self) -> None:
        """Build a spec from the edges of every domain, so a bad bound fails now, not in trial 7."""
        for key, value in self.fields.items():
            for candidate in (value.candidates() if isinstance(value, Domain) else [value]):
                self._check_task(self._build({key: candidate}, None, {}, where=f"search.space.{key}"),
                                 where=f"search.space.{key}")
        for family, params in self.schedules.items():
            choices = {n: (v.candidates() if isinstance(v, Domain) else [v]) for n, v in params.items()}
            for name, values in choices.items():
                for candidate in values:
                    self._build({}, family, {name: candidate}, where=f"search.space.{SCHEDULE_KEY}.{family}")
            if not choices:
                self._build({}, family, {}, where=f"search.space.{SCHEDULE_KEY}.{family}")

    @staticmethod
    def _check_task(spec: ExperimentSpec, where: str) -> None:
        """The task's own parameters (``task.dropout`` ...) are declared by the task, not the spec."""
        from orchestrator.tasks import resolve

        try:
            resolve(spec.task)
        except UserError as err:
            raise UserError(f"{where} -> {err}") from None

    def _build(self, fields: dict, family: Optional[str], params: dict, where: str) -> ExperimentSpec:
        config = copy.deepcopy(self._base_config)
        for key, value in fields.items():
            config = set_path(config, key, value)
        if family is not None:
            config[SCHEDULE_KEY] = {"name": family, **params}
        try:
            return ExperimentSpec.model_validate(config)
        except ValidationError as err:
            raise UserError(format_validation_error(err, ExperimentSpec, prefix=f"{where} -> ")) from None

    # -------------------------------------------------------------- per trial

    def param_space(self) -> dict:
        """Tune's param_space: flat field domains, the family choice, every family's parameters."""
        space: dict[str, Any] = {k: v.to_tune() if isinstance(v, Domain) else v for k, v in self.fields.items()}
        if self.schedules:
            from ray import tune

            space[SCHEDULE_KEY] = tune.choice(list(self.schedules))
            space["schedule_params"] = {
                family: {n: v.to_tune() if isinstance(v, Domain) else v for n, v in params.items()}
                for family, params in self.schedules.items() if params}
        return space

    def trial_spec(self, trial_config: dict, **updates: Any) -> ExperimentSpec:
        """The spec of one trial: the base spec with the trial's sampled values."""
        fields = {k: _plain(trial_config[k]) for k in self.fields if k in trial_config}
        family = trial_config.get(SCHEDULE_KEY)
        params = {k: _plain(v) for k, v in (trial_config.get("schedule_params") or {}).get(family, {}).items()} \
            if family else {}
        spec = self._build(fields, family, params, where="trial")
        return spec.model_copy(update=updates) if updates else spec

    def hparams(self, trial_config: dict) -> dict:
        """The trial's hyperparameters, flat, only those that apply (for HParams and summaries)."""
        out = {k: _plain(trial_config[k]) for k in self.fields if k in trial_config}
        family = trial_config.get(SCHEDULE_KEY)
        if family:
            out[SCHEDULE_KEY] = family
            for name, value in (trial_config.get("schedule_params") or {}).get(family, {}).items():
                out[f"{family}.{name}"] = _plain(value)
        return out


class Resample:
    """Draw one of a list's numbers (a picklable callable for PBT's resampling)."""

    def __init__(self, values: list):
        self.values = list(values)

    def __call__(self):
        import random

        return random.choice(self.values)


def _numeric(values: list) -> bool:
    return all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)


def _plain(value: Any) -> Any:
    """numpy scalars (from search algorithms) to Python numbers."""
    return value.item() if hasattr(value, "item") and callable(value.item) else value


def load_search(config: dict) -> Search:
    """Validate a whole tune config (spec + ``search``); UserError on the first problem."""
    config = copy.deepcopy(config)
    raw = config.pop("search", None)
    if raw is None:
        raise UserError("the config has no `search:` section; e.g. "
                        "`search: {samples: 8, space: {optimizer.learning_rate: {loguniform: [0.0003, 0.01]}}}`")
    if not isinstance(raw, dict):
        raise UserError("search: must be a mapping, e.g. `search: {samples: 8, space: {...}}`")
    build_spec(config)  # the base spec first: its errors are reported before the search section's
    try:
        search = SearchSpec.model_validate(raw)
    except ValidationError as err:
        raise UserError(format_validation_error(err, SearchSpec, prefix="search.")) from None
    # A trial's best checkpoint is best by the search's metric: the checkpoint a trial keeps,
    # the one the search reloads and exports, TensorBoard's HParams and the summary agree.
    monitor = (config.get("checkpoint") or {}).get("monitor") if isinstance(config.get("checkpoint"), dict) else None
    if monitor is not None and monitor != search.metric:
        raise UserError(f"checkpoint.monitor: {monitor!r} differs from search.metric {search.metric!r}; a trial's "
                        "best checkpoint would not be its best by the search's metric: drop checkpoint.monitor "
                        "(a search sets it) or make them equal")
    config = set_path(set_path(config, "checkpoint.monitor", search.metric), "checkpoint.mode", search.mode)
    if search.workers_per_trial is not None:
        config = set_path(config, "scaling.workers", search.workers_per_trial)
    return Search(build_spec(config), search, config)
