"""The live table of a search, drawn by a Ray Tune ``Callback`` in the search's driver.

On a terminal it is one table refreshed in place (rich ``Live``); otherwise
(``ray job logs``, a file) plain lines: one per finished trial as it ends, a
one-line status every ``status_every_s`` seconds, and the whole table at the
end. Tune's own status blocks are off (``tune.RunConfig(verbose=0)``, see
orchestrator/console.py); with ``--verbose`` they come back instead of this.

    running 2 · early-stopped 3 · ASHA-stopped 2 · errored 0 · pending 1 · 41 s, ETA ≤ 35 s
    best 3f2a_00004 val_loss 0.0912 (lr=0.00412 pat=3 sched=cosine min_fraction=0.01)
"""

from __future__ import annotations

import sys
import time
from typing import Optional

from ray.tune import Callback

from orchestrator.best import best
from orchestrator.search_algorithms import asha
from orchestrator.search_space import Search
from orchestrator.stop_reasons import in_words, stop_reason


def short_config(hparams: dict) -> str:
    """``lr=0.00412 pat=3 sched=step step.drop=0.5``: the trial's values, its schedule family's only."""
    parts = []
    for key, value in hparams.items():
        short = {"optimizer.learning_rate": "lr", "early_stopping.patience": "pat",
                 "lr_schedule": "sched"}.get(key, key.rsplit(".", 1)[-1] if key.count(".") > 1 else key)
        parts.append(f"{short}={value:.3g}" if isinstance(value, float) else f"{short}={value}")
    return " ".join(parts)


class SearchTable(Callback):
    """Counts, running trials' epoch and val_loss, the best so far, elapsed and ETA; a line per finished trial.

    Args:
        search: the search (metric, mode, epochs, and each trial's short config).
        samples: how many trials the search runs, for the pending count.
        concurrent: trials at once, for the ETA.
        stream: where to draw (stdout).
        live: a rich Live display (terminal) or None for plain lines; default: by ``stream.isatty()``.
        status_every_s: plain mode: seconds between status lines.
    """

    def __init__(self, search: Search, samples: int, concurrent: int, stream=None,
                 live: Optional[bool] = None, status_every_s: float = 30.0):
        self.search = search
        self.metric, self.mode = search.search.metric, search.search.mode
        self.max_epochs = search.base.training.epochs
        self.scheduler_stops = asha(search) is not None
        self.samples = samples
        self.concurrent = max(1, concurrent)
        self.stream = stream
        self.use_live = (stream or sys.stdout).isatty() if live is None else live
        self.status_every_s = status_every_s
        self.started = time.monotonic()
        self.last: dict[str, dict] = {}          # trial id -> its latest result
        self.trial_started: dict[str, float] = {}
        self.ended: dict[str, str] = {}          # trial id -> stop reason
        self.configs: dict[str, str] = {}
        self._last_status = time.monotonic()
        self._live = None
        self._console = None

    def __getstate__(self):
        # Tune pickles its run config (callbacks included) into the experiment state,
        # for --resume: the stream and the display are this process's, not state.
        return {**self.__dict__, "stream": None, "_live": None, "_console": None}

    @property
    def console(self):
        if self._console is None:
            from rich.console import Console

            self._console = Console(file=self.stream or sys.stdout, highlight=False,
                                    soft_wrap=not self.use_live, width=None if self.use_live else 200)
        return self._console

    # ---------------------------------------------------------------- Tune's hooks

    def setup(self, **info):
        if self.use_live:
            from rich.live import Live

            self._live = Live(self.table(), console=self.console, refresh_per_second=2, transient=False)
            self._live.start()

    def on_trial_start(self, iteration, trials, trial, **info):
        self.trial_started[trial.trial_id] = time.monotonic()
        self.configs[trial.trial_id] = short_config(self.search.hparams(trial.config or {}))
        self._refresh(trials)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self.last[trial.trial_id] = dict(result)
        self._refresh(trials)

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._ended(trial, in_words(stop_reason(self.last.get(trial.trial_id, {}), self.max_epochs,
                                                scheduler_stops=self.scheduler_stops)), trials)

    def on_trial_error(self, iteration, trials, trial, **info):
        self._ended(trial, "error", trials)

    def on_step_end(self, iteration, trials, **info):
        self._refresh(trials)

    def on_experiment_end(self, trials, **info):
        if self._live is not None:
            self._live.update(self.table(trials))
            self._live.stop()
            self._live = None
        else:
            self.console.print(self.table(trials))

    # ---------------------------------------------------------------- drawing

    def _ended(self, trial, reason: str, trials) -> None:
        if trial.trial_id in self.ended:
            return
        self.ended[trial.trial_id] = reason
        last = self.last.get(trial.trial_id, {})
        value = last.get(f"best_{self.metric}", last.get(self.metric))
        shown = f"{value:.4f}" if isinstance(value, (int, float)) else "-"
        self.console.print(f"trial {trial.trial_id} finished: {reason}, best {self.metric} {shown} "
                           f"({self.configs.get(trial.trial_id) or short_config(self.search.hparams(trial.config or {}))})")
        self._refresh(trials, force=True)

    def _refresh(self, trials, force: bool = False) -> None:
        if self._live is not None:
            self._live.update(self.table(trials))
        elif force or time.monotonic() - self._last_status >= self.status_every_s:
            self._last_status = time.monotonic()
            self.console.print(self.status_line(trials))

    def counts(self, trials) -> dict[str, int]:
        reasons = list(self.ended.values())
        # A trial being completed may still say RUNNING while Tune calls its callbacks.
        running = sum(1 for t in trials if t.status == "RUNNING" and t.trial_id not in self.ended)
        return {
            "running": running,
            "early-stopped": sum(r.startswith("EarlyStopping") for r in reasons),
            "ASHA-stopped": sum(r.startswith("ASHA") for r in reasons),
            "max epochs": sum(r.startswith("max epochs") for r in reasons),
            "errored": sum(r == "error" for r in reasons),
            "pending": max(0, self.samples - len(self.ended) - running),
        }

    def best(self) -> Optional[tuple[str, float]]:
        scored = [(tid, r.get(f"best_{self.metric}", r.get(self.metric))) for tid, r in self.last.items()]
        return best(scored, mode=self.mode, value=lambda tv: tv[1])

    def eta_s(self, counts: dict, trials=()) -> Optional[float]:
        """An upper bound: every pending and running trial trains to the epoch limit."""
        epoch_times = [(r.get("epoch") or 0, time.monotonic() - self.trial_started[tid])
                       for tid, r in self.last.items() if tid in self.trial_started and r.get("epoch")]
        if not epoch_times:
            return None
        per_epoch = sum(t for _, t in epoch_times) / sum(e for e, _ in epoch_times)
        left = counts["pending"] * self.max_epochs + sum(
            self.max_epochs - (self.last.get(t.trial_id, {}).get("epoch") or 0) for t in trials
            if t.status == "RUNNING" and t.trial_id not in self.ended)
        return left * per_epoch / self.concurrent

    def status_line(self, trials) -> str:
        counts = self.counts(trials)
        eta = self.eta_s(counts, trials)
        line = " · ".join(f"{k} {v}" for k, v in counts.items())
        line += f" · {time.monotonic() - self.started:.0f} s" + (f", ETA ≤ {eta:.0f} s" if eta is not None else "")
        best = self.best()
        if best:
            line += f" · best {best[0]} {self.metric} {best[1]:.4f} ({self.configs.get(best[0], '')})"
        return line

    def table(self, trials=()):
        from rich.console import Group
        from rich.table import Table

        table = Table(box=None, header_style="bold", pad_edge=False)
        for column in ("trial", "status", "epoch", self.metric, f"best {self.metric}", "config"):
            table.add_column(column, no_wrap=True)
        for trial in sorted(trials, key=lambda t: t.trial_id):
            last = self.last.get(trial.trial_id, {})
            value, best = last.get(self.metric), last.get(f"best_{self.metric}")
            status = self.ended.get(trial.trial_id) or trial.status.lower()
            table.add_row(trial.trial_id, status, str(last.get("epoch", "-")),
                          f"{value:.4f}" if isinstance(value, (int, float)) else "-",
                          f"{best:.4f}" if isinstance(best, (int, float)) else "-",
                          self.configs.get(trial.trial_id) or short_config(self.search.hparams(trial.config or {})))
        return Group(self.status_line(trials), table)
