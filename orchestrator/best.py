"""What "best" means, in one place: the item with the lowest (``mode: min``) or highest (``max``) value.

Used for a run's best epoch, a search's best trial, the checkpoint to reload,
the live table's leader and the results API, always with the (metric, mode)
the user configured (``checkpoint.monitor``/``mode``, ``search.metric``/``mode``).
Items without a numeric value are ignored; ties keep the first. Pure Python.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Optional, TypeVar

T = TypeVar("T")


def best(items: Iterable[T], metric: Optional[str] = None, mode: str = "min",
         value: Optional[Callable[[T], Any]] = None) -> Optional[T]:
    """The best of ``items`` by ``item[metric]`` (or ``value(item)``); None if none has a number.

    >>> best([{"val_loss": 0.3}, {"val_loss": 0.2}, {"val_loss": None}], "val_loss", "min")
    {'val_loss': 0.2}
    """
    if mode not in ("min", "max"):
        raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
    get = value or (lambda item: item.get(metric))
    scored = [(v, item) for item in items
              if isinstance(v := get(item), (int, float)) and not isinstance(v, bool) and v == v]
    if not scored:
        return None
    pick = min if mode == "min" else max
    return pick(scored, key=lambda vi: vi[0])[1]


# Recorded beside a trial's best value of the search's metric, at that same epoch.
ALSO_AT_BEST = ("val_loss", "val_accuracy")


def trial_metrics(metric: str) -> tuple[str, ...]:
    """What each trial records for comparison (TensorBoard's HParams): ``best_<metric>``, the
    ``val_loss`` and ``val_accuracy`` of that epoch, and ``epochs_run``.

    >>> trial_metrics("val_accuracy")
    ('best_val_accuracy', 'best_val_loss', 'epochs_run')
    """
    return (f"best_{metric}", *(f"best_{m}" for m in ALSO_AT_BEST if m != metric), "epochs_run")
