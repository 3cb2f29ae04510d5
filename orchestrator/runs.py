"""Past runs and searches under a storage directory, read from their files alone.

    $ orchestrator list --storage results
    $ orchestrator show my-search

Nothing here starts Ray or imports TensorFlow: a finished run is its
``result.json``, a finished search its ``summary.json``; an interrupted run is
what its Ray Train checkpoints' ``state.json`` hold (each carries the whole
history), an interrupted search the same for each of its trials.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from orchestrator.best import best
from orchestrator.checkpoint_files import STATE
from orchestrator.errors import UserError
from orchestrator.layout import RESULT_FILE, SUMMARY_JSON, RunLayout
from orchestrator.results import read_json
from orchestrator.storage import cache_dir, is_uri, local_copy, location



@dataclass
class RunInfo:
    """One run or search, as ``orchestrator list`` shows it."""

    name: str
    kind: str                   # "run" | "search"
    status: str                 # "finished" | "interrupted"
    path: Path
    date: dt.datetime
    epochs: Optional[int] = None        # run: epochs trained
    trials: Optional[int] = None        # search: trials (started ones, if interrupted)
    best_val_loss: Optional[float] = None
    best_val_accuracy: Optional[float] = None
    test_accuracy: Optional[float] = None
    data: dict = field(default_factory=dict)   # result.json / summary.json, or what was recovered
    storage: Optional[str] = None       # --storage as given, when it is object storage (path: a local copy)

    @property
    def where(self) -> str:
        """The run's directory as the user names it (a URI on object storage)."""
        return f"{self.storage.rstrip('/')}/{self.name}" if self.storage else str(self.path)

    @property
    def storage_arg(self) -> str:
        return self.storage or str(self.path.parent)


def _latest_state(run_dir: Path) -> Optional[dict]:
    """The ``state.json`` of the run's latest Train checkpoint (it holds the whole history)."""
    latest = None
    for state_file in run_dir.glob(f"checkpoint_*/{STATE}"):
        try:
            state = read_json(state_file)
            epoch = int(state["epoch"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if latest is None or epoch > latest["epoch"]:
            latest = {**state, "epoch": epoch}
    return latest


def _best(history: list[dict], metric: str = "val_loss", mode: str = "min") -> dict:
    return best(history, metric, mode) or {}


def _mtime(path: Path) -> dt.datetime:
    return dt.datetime.fromtimestamp(path.stat().st_mtime)


def _is_search(path: Path) -> bool:
    layout = RunLayout(path)
    return layout.summary_json.exists() or layout.trials.is_dir() or layout.tuner_pkl.exists()


def _is_run(path: Path) -> bool:
    return RunLayout(path).result.exists() or any(path.glob("checkpoint_*"))


def read_run(path: Path) -> Optional[RunInfo]:
    """A run or search directory as a :class:`RunInfo`; None when it is neither."""
    if _is_search(path):
        return _read_search(path)
    if not _is_run(path):
        return None
    if RunLayout(path).result.exists():
        result = read_json(RunLayout(path).result)
        monitor = result.get("spec", {}).get("checkpoint", {}).get("monitor", "val_loss")
        best_epoch = (result.get("best") or {}).get("epoch")
        best_row = next((h for h in result.get("history", []) if h.get("epoch") == best_epoch), {})
        evaluation = result.get("evaluation") or {}
        return RunInfo(result.get("name", path.name), "run", "finished", path, _mtime(RunLayout(path).result),
                       epochs=result.get("epochs_run"),
                       best_val_loss=(result.get("best") or {}).get(monitor) if monitor == "val_loss"
                       else best_row.get("val_loss"),
                       best_val_accuracy=best_row.get("val_accuracy"),
                       test_accuracy=(evaluation.get("best_checkpoint_reloaded") or {}).get("accuracy"),
                       data=result)
    state = _latest_state(path) or {"epoch": 0, "history": []}
    best = _best(state.get("history", []))
    return RunInfo(path.name, "run", "interrupted", path, _mtime(path), epochs=state["epoch"],
                   best_val_loss=best.get("val_loss"), best_val_accuracy=best.get("val_accuracy"),
                   data={"history": state.get("history", []), "state": state})


def _read_search(path: Path) -> RunInfo:
    if RunLayout(path).summary_json.exists():
        summary = read_json(RunLayout(path).summary_json)
        best = summary.get("best_trial") or {}
        evaluation = summary.get("evaluation") or {}
        return RunInfo(summary.get("name", path.name), "search", "finished", path, _mtime(RunLayout(path).summary_json),
                       trials=summary.get("trials"), best_val_loss=best.get("best_val_loss"),
                       best_val_accuracy=best.get("best_val_accuracy"),
                       test_accuracy=(evaluation.get("best_checkpoint_reloaded") or {}).get("accuracy"),
                       data=summary)
    rows = []
    for trial_dir in sorted(p for p in RunLayout(path).trials.glob("*") if p.is_dir()):
        state = _latest_state(trial_dir) or {"epoch": 0, "history": []}
        best = _best(state.get("history", []))
        rows.append({"trial_id": trial_dir.name, "epochs_run": state["epoch"],
                     "stop_reason": state.get("stop_reason") or "interrupted",
                     "best_epoch": best.get("epoch"), "best_val_loss": best.get("val_loss"),
                     "best_val_accuracy": best.get("val_accuracy"), "config": {}})
    scored = [r for r in rows if r["best_val_loss"] is not None]
    best = min(scored, key=lambda r: r["best_val_loss"]) if scored else {}
    return RunInfo(path.name, "search", "interrupted", path, _mtime(path), trials=len(rows),
                   best_val_loss=best.get("best_val_loss"), best_val_accuracy=best.get("best_val_accuracy"),
                   data={"results": rows, "metric": "val_loss"})


def list_runs(storage: str | Path) -> list[RunInfo]:
    """Every run and search directly under ``storage``, newest first (object storage: read from a local copy)."""
    root = local_copy(storage, models=False) if is_uri(storage) else Path(storage).expanduser()
    if not root.is_dir():
        if is_uri(storage):
            return []
        raise UserError(f"storage {str(storage)!r}: no such directory (valid example: `--storage results`)")
    found = [info for path in root.iterdir() if path.is_dir() and (info := read_run(path)) is not None]
    for info in found if is_uri(storage) else []:
        info.storage = str(storage)
    return sorted(found, key=lambda info: info.date, reverse=True)


def find_run(storage: str | Path, name: str) -> RunInfo:
    """The run or search called ``name`` under ``storage``; a UserError naming what exists otherwise."""
    remote = str(storage) if is_uri(storage) else None
    if remote and "/" not in name:
        local_copy(location(storage) / name, models=False)
        storage = cache_dir(location(storage))
    root = Path(storage).expanduser()
    info = read_run(root / name) if (root / name).is_dir() and "/" not in name else None
    if info is not None:
        info.storage = remote
    if info is None:
        known = [i.name for i in list_runs(root)] if root.is_dir() else []
        hint = f"; known: {', '.join(known[:8])}{' ...' if len(known) > 8 else ''}" if known else ""
        raise UserError(f"no run or search named {name!r} under {remote or root}{hint} "
                        "(see `orchestrator list --storage DIR`)")
    return info


# ------------------------------------------------------------------ display

def _fmt(value: Optional[float], digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def list_table(runs: list[RunInfo]):
    from rich.table import Table

    table = Table(title=None, box=None, header_style="bold", pad_edge=False)
    for column in ("name", "kind", "status", "date", "epochs/trials", "best val_loss", "val_accuracy",
                   "test accuracy"):
        table.add_column(column, no_wrap=True)
    for info in runs:
        table.add_row(info.name, info.kind, info.status, info.date.strftime("%Y-%m-%d %H:%M"),
                      str(info.epochs if info.kind == "run" else info.trials),
                      _fmt(info.best_val_loss), _fmt(info.best_val_accuracy), _fmt(info.test_accuracy))
    return table


def show_renderables(info: RunInfo) -> list:
    """What ``orchestrator show`` prints: a heading, then an epoch or trial table, then where files are."""
    from rich.table import Table

    out: list = []
    if info.kind == "run":
        history = info.data.get("history", [])
        heading = f"run {info.name} ({info.status}): {info.epochs} epoch(s)"
        if info.status == "finished":
            heading += f", stopped by {info.data.get('stop_reason')}"
        out.append(heading)
        table = Table(box=None, header_style="bold", pad_edge=False)
        for column in ("epoch", "loss", "accuracy", "val_loss", "val_accuracy", "learning_rate", "seconds"):
            table.add_column(column, justify="right", no_wrap=True)
        best_epoch = _best(history).get("epoch")
        for h in history:
            table.add_row(f"{h.get('epoch')}{' *' if h.get('epoch') == best_epoch else ''}",
                          _fmt(h.get("loss")), _fmt(h.get("accuracy")), _fmt(h.get("val_loss")),
                          _fmt(h.get("val_accuracy")),
                          "-" if h.get("learning_rate") is None else f"{h['learning_rate']:.3g}",
                          _fmt(h.get("epoch_seconds"), 1))
        out.append(table)
        out.append(f"best epoch (*) val_loss {_fmt(info.best_val_loss)}, val_accuracy "
                   f"{_fmt(info.best_val_accuracy)}")
        if info.status == "finished":
            evaluation = info.data.get("evaluation") or {}
            out.append(f"test accuracy: final weights {_fmt((evaluation.get('final_weights') or {}).get('accuracy'))}"
                       f", best checkpoint reloaded {_fmt(info.test_accuracy)}")
            out.append(f"result: {info.where}/{RESULT_FILE}")
        else:
            out.append(f"resume with: orchestrator train --name {info.name} --storage {info.storage_arg} --resume")
    else:
        metric = info.data.get("metric", "val_loss")
        rows = info.data.get("results", [])
        out.append(f"search {info.name} ({info.status}): {info.trials} trial(s)")
        table = Table(box=None, header_style="bold", pad_edge=False)
        for column in ("trial", "epochs", "stop reason", f"best {metric}", "val_accuracy", "config"):
            table.add_column(column, no_wrap=column != "config")
        for row in rows:
            config = " ".join(f"{k.rsplit('.', 1)[-1]}={v:.3g}" if isinstance(v, float)
                              else f"{k.rsplit('.', 1)[-1]}={v}" for k, v in (row.get("config") or {}).items())
            table.add_row(row["trial_id"], str(row.get("epochs_run")), str(row.get("stop_reason")),
                          _fmt(row.get(f"best_{metric}")), _fmt(row.get("best_val_accuracy")), config)
        out.append(table)
        best = info.data.get("best_trial")
        if best:
            out.append(f"best trial {best['trial_id']}: {metric} {_fmt(best.get(f'best_{metric}'))}, "
                       f"test accuracy {_fmt(info.test_accuracy)}")
        if info.status == "finished":
            out.append(f"summary: {info.where}/{SUMMARY_JSON}")
        else:
            out.append(f"resume with: orchestrator tune --config CONFIG --name {info.name} "
                       f"--storage {info.storage_arg} --resume")
    if info.storage:  # TensorBoard reads object storage through a local copy
        out.append(f"tensorboard: orchestrator tensorboard {info.name} --storage {info.storage}")
    else:
        out.append(f"tensorboard: tensorboard --logdir {info.path / 'tensorboard'}")
    return out
