"""``search.stop_at``: end the whole search once any trial reaches a target (a Tune Stopper).

    search:
      stop_at: {val_accuracy: 0.98}     # or --stop-at val_accuracy=0.98

Tune asks the stopper about every result; once one meets every target,
``stop_all`` ends the search: running trials are stopped as Tune stops any
trial (their checkpoints are kept) and the summary names the trial, its epoch
and the time. The hit is also written to ``stop_at.json`` in the search's
directory, so a resumed search (whose stopper Tune unpickles) still knows it.
"""

from __future__ import annotations

import time
from pathlib import Path

from orchestrator.storage import location
from typing import Optional

from ray.tune.stopper import Stopper

from orchestrator.layout import RunLayout
from orchestrator.results import read_json, write_json_atomic
from orchestrator.search_space import STOP_METRICS


def meets(targets: dict[str, float], result: dict) -> bool:
    """Every target met: accuracies at or above, losses at or below."""
    for metric, target in targets.items():
        value = result.get(metric)
        if value is None:
            return False
        if (value < target) if STOP_METRICS[metric] == "max" else (value > target):
            return False
    return True


class StopAtTarget(Stopper):
    """Stop every trial once one trial's result meets ``targets``.

    Args:
        targets: ``{metric: threshold}``, e.g. ``{"val_accuracy": 0.98}``.
        record: where to write which trial reached it, when (JSON).
        started: the search's start (``time.time()``), for the seconds it took.
    """

    def __init__(self, targets: dict[str, float], record: str, started: float):
        self.targets = dict(targets)
        self.record = record
        self.started = started
        self.reached: Optional[dict] = None

    def __call__(self, trial_id: str, result: dict) -> bool:
        if self.reached is None and meets(self.targets, result):
            now = time.time()
            self.reached = {"trial_id": result.get("trial_id") or trial_id, "epoch": result.get("epoch"),
                            "metrics": {k: result.get(k) for k in self.targets},
                            "seconds_since_start": now - self.started, "time": now}
            write_json_atomic(location(self.record), self.reached)
        return False

    def stop_all(self) -> bool:
        return self.reached is not None


def recorded_hit(run_dir: Path) -> Optional[dict]:
    path = RunLayout(run_dir).stop_at
    return read_json(path) if path.exists() else None
