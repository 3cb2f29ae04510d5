"""Learning-rate schedules: declarative, pure functions of ``(epoch, base_lr)``.

A schedule is written in YAML by name with its own parameters, never as code::

    lr_schedule:
      name: hold_then_exp_decay   # the tutorial's schedule
      hold_epochs: 5              # epochs 0..4 run at the base LR
      rate: 0.1                   # then the LR is multiplied by exp(-0.1) each epoch

Calling a schedule gives the LR of a 0-based epoch; it does not depend on
what ran before, so a run resumed at epoch 7 gets exactly the LR it would have
had. The Keras side applies it with ``LearningRateScheduler``::

    >>> s = HoldThenExpDecay(hold_epochs=5, rate=0.1)
    >>> [round(s(e, 1.0), 4) for e in (0, 4, 5, 7)]
    [1.0, 1.0, 0.9048, 0.7408]

No TensorFlow or Ray here: the driver validates schedules without importing either.
"""

from __future__ import annotations

import math
from typing import Annotated, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, model_validator


class _Schedule(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    def __call__(self, epoch: int, base_lr: float) -> float:
        raise NotImplementedError

    def for_run(self, epochs: int) -> "_Schedule":
        """This schedule with every default that depends on the run's length filled in."""
        return self

    def short(self) -> str:
        """A compact label for run names, e.g. ``step(drop=0.5,every=3)``."""
        params = ",".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}"
                          for k, v in self.model_dump(exclude={"name"}).items()
                          if v is not None)
        return f"{self.name}({params})" if params else self.name


class Constant(_Schedule):
    """The base LR at every epoch."""

    name: Literal["constant"] = "constant"

    def __call__(self, epoch: int, base_lr: float) -> float:
        return float(base_lr)


class HoldThenExpDecay(_Schedule):
    """Hold the base LR for ``hold_epochs`` epochs, then multiply by ``exp(-rate)`` per epoch.

    Args:
        hold_epochs: epochs ``0 .. hold_epochs-1`` run at the base LR.
        rate: decay exponent per epoch after the hold.
    """

    name: Literal["hold_then_exp_decay"] = "hold_then_exp_decay"
    hold_epochs: int = Field(5, ge=0, examples=[5])
    rate: float = Field(0.1, gt=0, examples=[0.1])

    def __call__(self, epoch: int, base_lr: float) -> float:
        decayed_epochs = max(0, epoch - self.hold_epochs + 1)
        return float(base_lr * math.exp(-self.rate * decayed_epochs))


class Step(_Schedule):
    """Multiply the LR by ``drop`` every ``every`` epochs.

    Args:
        drop: factor in (0, 1] applied at each step.
        every: epochs between steps.
    """

    name: Literal["step"] = "step"
    drop: float = Field(0.5, gt=0, le=1, examples=[0.5])
    every: int = Field(5, ge=1, examples=[5])

    def __call__(self, epoch: int, base_lr: float) -> float:
        return float(base_lr * self.drop ** (epoch // self.every))


class Cosine(_Schedule):
    """Cosine decay from the base LR to ``min_fraction * base_lr`` over ``decay_epochs``.

    Args:
        decay_epochs: epochs over which the LR falls; afterwards it stays at the
            minimum. ``null`` means the run's ``training.epochs``.
        min_fraction: the floor as a fraction of the base LR.
    """

    name: Literal["cosine"] = "cosine"
    decay_epochs: Optional[int] = Field(None, ge=1, examples=[20])
    min_fraction: float = Field(0.0, ge=0, le=1, examples=[0.01])

    def for_run(self, epochs: int) -> "Cosine":
        return self if self.decay_epochs is not None else self.model_copy(update={"decay_epochs": epochs})

    def __call__(self, epoch: int, base_lr: float) -> float:
        span = self.decay_epochs or 1
        progress = min(epoch, span) / span
        floor = base_lr * self.min_fraction
        return float(floor + (base_lr - floor) * 0.5 * (1 + math.cos(math.pi * progress)))


class Piecewise(_Schedule):
    """Absolute LRs, per epoch or from breakpoints; the base LR is ignored.

    What a Population Based Training search found is written as this schedule
    (``best_schedule.yaml``), so ``orchestrator train`` replays the exact LR of
    every epoch whatever ``optimizer.learning_rate`` says. Give one of::

        lr_schedule: {name: piecewise, lrs: [0.001, 0.001, 0.0008]}         # epoch 0, 1, 2, ...
        lr_schedule: {name: piecewise, breakpoints: [[0, 0.001], [5, 0.0002]]}  # from epoch 0, from 5

    Epochs are 0-based; after the last listed epoch the last LR holds.

    Args:
        lrs: the LR of epoch 0, 1, 2, ...
        breakpoints: ``[epoch, lr]`` pairs, epochs strictly increasing from 0;
            each LR holds until the next breakpoint.
    """

    name: Literal["piecewise"] = "piecewise"
    lrs: Optional[list[float]] = Field(None, min_length=1, examples=[[0.001, 0.001, 0.0008]])
    breakpoints: Optional[list[tuple[int, float]]] = Field(None, min_length=1,
                                                           examples=[[[0, 0.001], [5, 0.0002]]])

    @model_validator(mode="after")
    def _check(self):
        if (self.lrs is None) == (self.breakpoints is None):
            raise ValueError("lrs: give exactly one of `lrs: [0.001, 0.0008, ...]` (one per epoch) "
                             "or `breakpoints: [[0, 0.001], [5, 0.0002]]`")
        if self.lrs is not None:
            bad = [lr for lr in self.lrs if not lr > 0]
            if bad:
                raise ValueError(f"lrs: every learning rate must be > 0, got {bad[0]}")
            return self
        epochs = [e for e, _ in self.breakpoints]
        if epochs[0] != 0:
            raise ValueError(f"breakpoints: the first breakpoint must be at epoch 0, got {epochs[0]}")
        for before, after in zip(epochs, epochs[1:]):
            if after <= before:
                raise ValueError(f"breakpoints: epochs must increase, got {after} after {before}")
        bad = [lr for _, lr in self.breakpoints if not lr > 0]
        if bad:
            raise ValueError(f"breakpoints: every learning rate must be > 0, got {bad[0]}")
        return self

    def __call__(self, epoch: int, base_lr: float) -> float:
        if self.lrs is not None:
            return float(self.lrs[min(epoch, len(self.lrs) - 1)])
        lr = self.breakpoints[0][1]
        for start, value in self.breakpoints:
            if start > epoch:
                break
            lr = value
        return float(lr)

    def short(self) -> str:
        n = len(self.lrs) if self.lrs is not None else len(self.breakpoints)
        return f"piecewise({'epochs' if self.lrs is not None else 'breakpoints'}={n})"


Schedule = Annotated[
    Union[Constant, HoldThenExpDecay, Step, Cosine, Piecewise], Field(discriminator="name")
]

SCHEDULES = {cls.model_fields["name"].default: cls
             for cls in (Constant, HoldThenExpDecay, Step, Cosine, Piecewise)}
