"""Read a run's or a search's results from Python: no Ray, no cluster, TensorFlow only to load a model.

    >>> import orchestrator
    >>> run = orchestrator.open_run("results/train-20261127-101500")
    >>> run.status                       # "finished" or "interrupted"
    >>> run.history                      # pandas DataFrame, one row per epoch
    >>> run.evaluation["best_checkpoint_reloaded"]["accuracy"]
    >>> model = run.load_best_model()    # a tf-keras model (sets TF_USE_LEGACY_KERAS=1 itself)

    >>> search = orchestrator.open_search("results/my-search")
    >>> search.trials                    # DataFrame, one row per trial, config as columns
    >>> search.best_trial["config"]
    >>> search.history                   # every trial's epochs, with a trial_id column
    >>> search.load_best_model()         # or search.load_model(trial_id) with --export-top

A finished run is read from ``result.json`` (a search from ``summary.json``);
an interrupted one (Ctrl-C, a killed driver) from what its checkpoints
recorded: the latest checkpoint's ``state.json`` holds the whole history.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Optional

from orchestrator.best import best
from orchestrator.checkpoint_files import STATE
from orchestrator.layout import RESULT_FILE, SUMMARY_JSON, TRIALS_DIR, RunLayout
from orchestrator.process import use_tf_keras
from orchestrator.results import FORMAT_VERSION, read_json
from orchestrator.storage import is_uri, local_copy

_SNAPSHOT = "checkpoint_manager_snapshot.json"  # Ray Train's record of a run's checkpoints


def _frame(rows: list[dict]):
    import pandas as pd

    return pd.DataFrame(rows)


def _check_version(data: dict, path: Path) -> None:
    version = data.get("format_version", 0)  # 0: written before versions existed; same fields
    if version > FORMAT_VERSION:
        warnings.warn(f"{path} has format_version {version}, newer than this reader's "
                      f"{FORMAT_VERSION}; fields may be missing or read wrongly", stacklevel=3)


def _local_model(local_dir: Path, recorded: str) -> Path:
    """A model path recorded in a result file, inside ``local_dir`` when it was written to object storage."""
    if not is_uri(recorded):
        return Path(recorded)
    parts = recorded.split("/")
    for i in range(len(parts)):  # the recorded URI's tail below the run's own name
        if parts[i] == local_dir.name:
            return local_dir.joinpath(*parts[i + 1:])
    return Path(recorded)


def _load_keras(path: Path):
    """tf-keras's ``load_model``, with tf-keras selected before TensorFlow is imported."""
    if not path.exists():
        raise FileNotFoundError(f"no model at {path}")
    use_tf_keras()
    import tf_keras  # the Keras the files were written with, whatever tf.keras resolves to

    return tf_keras.models.load_model(str(path))


def _latest_state(run_dir: Path) -> tuple[Optional[dict], Optional[Path]]:
    """The newest checkpoint's ``state.json`` (Ray's snapshot names it; else the highest epoch)."""
    snapshot = run_dir / _SNAPSHOT
    if snapshot.exists():
        try:
            name = read_json(snapshot)["latest_checkpoint_result"]["checkpoint_dir_name"]
            state_file = RunLayout(run_dir).checkpoint(name) / STATE
            if state_file.exists():
                return read_json(state_file), state_file.parent
        except (OSError, ValueError, KeyError, TypeError):
            pass  # fall back to scanning the checkpoints
    latest, where = None, None
    for state_file in run_dir.glob("checkpoint_*/" + STATE):
        try:
            state = read_json(state_file)
        except (OSError, ValueError):
            continue
        if latest is None or state["epoch"] > latest["epoch"]:
            latest, where = state, state_file.parent
    return latest, where


def _best_row(history: list[dict], metric: str, mode: str) -> Optional[dict]:
    return best(history, metric, mode)


class RunResults:
    """One training run's directory (``<storage>/<name>``), finished or interrupted.

    Attributes:
        path: the run directory.
        status: ``"finished"`` (``result.json`` exists) or ``"interrupted"``.
        result: ``result.json`` as a dict; None while interrupted.
    """

    def __init__(self, path: str | Path):
        # On object storage (``s3://bucket/prefix/run1``): a local copy, models included, weights not.
        self.path = local_copy(path)
        result_file = RunLayout(self.path).result
        self.result: Optional[dict] = None
        self._state: Optional[dict] = None
        self._state_dir: Optional[Path] = None
        if result_file.exists():
            self.result = read_json(result_file)
            _check_version(self.result, result_file)
            self.status = self.result.get("status", "finished")
        else:
            self._state, self._state_dir = _latest_state(self.path)
            if self._state is None:
                raise FileNotFoundError(f"{self.path} holds no run: neither {RESULT_FILE} "
                                        "nor a checkpoint with state.json")
            self.status = "interrupted"

    def __repr__(self) -> str:
        return f"RunResults({str(self.path)!r}, status={self.status!r}, epochs={self.epochs_run})"

    @property
    def name(self) -> str:
        return self.result["name"] if self.result else self.path.name

    @property
    def spec(self) -> Optional[dict]:
        """The run's ExperimentSpec as a dict (None for an interrupted run: it is in result.json only)."""
        return self.result["spec"] if self.result else None

    @property
    def records(self) -> list[dict]:
        """The per-epoch history as a list of dicts (epoch, loss, accuracy, val_*, learning_rate, ...)."""
        return list(self.result["history"] if self.result else self._state.get("history", []))

    @property
    def history(self):
        """Per-epoch history as a pandas DataFrame, one row per epoch."""
        return _frame(self.records)

    @property
    def epochs_run(self) -> int:
        return len(self.records)

    @property
    def stop_reason(self) -> Optional[str]:
        """``early_stopping`` / ``max_epochs``; None for an interrupted run."""
        return self.result.get("stop_reason") if self.result else self._state.get("stop_reason")

    @property
    def best(self) -> Optional[dict]:
        """The best epoch: ``{"epoch", "val_loss" (the monitored metric), "checkpoint"}``."""
        if self.result:
            return self.result.get("best")
        row = _best_row(self.records, "val_loss", "min")
        return {"epoch": row["epoch"], "val_loss": row["val_loss"]} if row else None

    @property
    def evaluation(self) -> Optional[dict]:
        """Test-set scores, final weights and best checkpoint reloaded; None until the run finished."""
        return self.result.get("evaluation") if self.result else None

    @property
    def latest_checkpoint(self) -> Optional[Path]:
        if self.result:
            return Path(self.result["final_checkpoint"])
        return self._state_dir

    @property
    def model_path(self) -> Path:
        return RunLayout(self.path).export

    @property
    def saved_model_path(self) -> Path:
        """The TensorFlow SavedModel of the best model (TF Serving's model base path is its parent)."""
        return RunLayout(self.path).saved_model

    def load_best_model(self):
        """The best checkpoint's model (``best_model.keras``) as a tf-keras model."""
        if self.status != "finished":
            raise FileNotFoundError(f"run {self.name!r} did not finish, so no best model was exported; "
                                    f"resume it (--resume) first; its checkpoints are in {self.path}")
        return _load_keras(self.model_path)


class SearchResults:
    """One search's directory, finished (``summary.json``) or interrupted (the trials' checkpoints).

    Attributes:
        path: the search directory.
        status: ``"finished"`` or ``"interrupted"``.
        summary: ``summary.json`` as a dict; None while interrupted.
        metric, mode: what "best" means (``val_loss``, ``min`` unless the search said otherwise).
    """

    def __init__(self, path: str | Path):
        self.path = local_copy(path)
        summary_file = RunLayout(self.path).summary_json
        self.summary: Optional[dict] = None
        if summary_file.exists():
            self.summary = read_json(summary_file)
            _check_version(self.summary, summary_file)
            self.status = self.summary.get("status", "finished")
            self.metric, self.mode = self.summary["metric"], self.summary["mode"]
            self._rows = self.summary["results"]
        else:
            if not RunLayout(self.path).trials.is_dir():
                raise FileNotFoundError(f"{self.path} holds no search: neither {SUMMARY_JSON} nor {TRIALS_DIR}/")
            self.status = "interrupted"
            self.metric, self.mode = "val_loss", "min"
            self._rows = self._rows_from_checkpoints()

    def __repr__(self) -> str:
        return f"SearchResults({str(self.path)!r}, status={self.status!r}, trials={len(self._rows)})"

    def _rows_from_checkpoints(self) -> list[dict]:
        rows = []
        for trial_dir in sorted(p for p in RunLayout(self.path).trials.iterdir() if p.is_dir()):
            state, where = _latest_state(trial_dir)
            history = (state or {}).get("history", [])
            best = _best_row(history, self.metric, self.mode) or {}
            rows.append({
                "trial_id": trial_dir.name, "status": "INTERRUPTED", "config": self._tune_config(trial_dir.name),
                "epochs_run": len(history), "stop_reason": (state or {}).get("stop_reason"),
                "best_epoch": best.get("epoch"), f"best_{self.metric}": best.get(self.metric),
                "best_val_accuracy": best.get("val_accuracy"), "best_checkpoint": None,
                "final_checkpoint": str(where) if where else None, "history": history,
            })
        return rows

    def _tune_config(self, trial_id: str) -> dict:
        """A trial's hyperparameters from Tune's ``params.json``, flattened as summary.json has them."""
        for params_file in self.path.glob(f"*{trial_id}*/params.json"):
            try:
                params = read_json(params_file)
            except (OSError, ValueError):
                continue
            family = params.get("lr_schedule")
            out = {k: v for k, v in params.items() if k not in ("lr_schedule", "schedule_params")}
            if family:
                out["lr_schedule"] = family
                for key, value in (params.get("schedule_params") or {}).get(family, {}).items():
                    out[f"{family}.{key}"] = value
            return out
        return {}

    @property
    def name(self) -> str:
        return self.summary["name"] if self.summary else self.path.name

    @property
    def trials(self):
        """One row per trial: id, status, epochs run, stop reason, best epoch and scores,
        checkpoint, and each searched hyperparameter as a column (e.g. ``optimizer.learning_rate``)."""
        rows = [{**{k: v for k, v in r.items() if k not in ("config", "history")}, **r.get("config", {})}
                for r in self._rows]
        return _frame(rows)

    @property
    def history(self):
        """Every trial's epochs in one DataFrame, with a ``trial_id`` column."""
        return _frame([{"trial_id": r["trial_id"], **h} for r in self._rows for h in r.get("history", [])])

    @property
    def best_trial(self) -> Optional[dict]:
        """The best trial's id, config, best epoch and scores; for an interrupted search, the best so far."""
        if self.summary:
            return self.summary.get("best_trial")
        return best(self._rows, f"best_{self.metric}", self.mode)

    @property
    def evaluation(self) -> Optional[dict]:
        """The best trial's test-set scores (final weights, best checkpoint reloaded)."""
        return self.summary.get("evaluation") if self.summary else None

    @property
    def saved_model_path(self) -> Path:
        """The best trial's TensorFlow SavedModel (TF Serving's model base path is its parent)."""
        return RunLayout(self.path).saved_model

    @property
    def top_models(self) -> list[dict]:
        """With ``--export-top K``: the K best trials, best first, each with config, evaluation and model paths."""
        return list(self.summary.get("top_models") or []) if self.summary else []

    def load_best_model(self):
        """The best trial's best checkpoint as a tf-keras model."""
        if self.status != "finished":
            raise FileNotFoundError(f"search {self.name!r} did not finish, so no best model was exported; "
                                    "resume it (--resume) first")
        return _load_keras(RunLayout(self.path).export)

    def load_model(self, trial_id: str):
        """One of the ``--export-top`` trials' models as a tf-keras model."""
        for entry in self.top_models:
            if entry["trial_id"] == trial_id:
                return _load_keras(_local_model(self.path, entry["model"]))
        kept = [e["trial_id"] for e in self.top_models]
        raise KeyError(f"no exported model for trial {trial_id!r}; exported: {kept or 'none (use --export-top K)'}")


def open_run(path: str | Path) -> RunResults:
    """Open a training run's directory (``<storage>/<name>``)."""
    return RunResults(path)


def open_search(path: str | Path) -> SearchResults:
    """Open a search's directory (``<storage>/<name>``)."""
    return SearchResults(path)


__all__ = ["open_run", "open_search", "RunResults", "SearchResults"]
