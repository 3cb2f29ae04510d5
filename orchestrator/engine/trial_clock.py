"""When Tune started each trial, on the driver's clock: ``<search>/trial_clock.jsonl``.

A trial's own reports say when its first epoch began (``started_at``); with the
moment Tune started it, the time a trial spends starting is known (``bench``,
per-trial start-up and parallel efficiency counted from the start).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from ray.tune import Callback


class TrialClock(Callback):
    """A Tune callback appending ``{"trial_id", "started_at"}`` per trial start (restarts too).

    Args:
        path: the JSON-lines file to append to.
    """

    def __init__(self, path: str):
        self.path = Path(path)

    def on_trial_start(self, iteration, trials, trial, **info):
        with open(self.path, "a") as out:
            out.write(json.dumps({"trial_id": trial.trial_id, "started_at": time.time()}) + "\n")
