"""``--export-top K``: the K best trials' models, each beside its config and test evaluation.

    results/my-search/top_models/
      1-<trial_id>/best_model.keras   saved_model/1/   trial.json   # the best trial
      2-<trial_id>/...

Each trial's best checkpoint is scored on the test set and exported exactly as
the search's best model is (``evaluate_checkpoints``: one Ray task with
TensorFlow; the driver imports none). ``trial.json`` holds the trial's id,
rank, config, best epoch and scores, and the evaluation, as ``summary.json``'s
``top_models`` does.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from orchestrator.engine.train import evaluate_checkpoints
from orchestrator.layout import RunLayout
from orchestrator.results import write_json_atomic


def ranked(rows: list[dict], metric: str, mode: str) -> list[dict]:
    """Trials with a best checkpoint, best first (ties: by trial id, for a stable order)."""
    scored = [r for r in rows if r.get(f"best_{metric}") is not None and r.get("best_checkpoint")]
    sign = 1 if mode == "min" else -1
    return sorted(scored, key=lambda r: (sign * r[f"best_{metric}"], r["trial_id"]))


def export_top(rows: list[dict], k: int, metric: str, mode: str, run_dir: Path,
               trial_spec: Callable[[str], object], task, data_ref) -> list[dict]:
    """Evaluate and export the ``k`` best trials (fewer if fewer have a checkpoint); their entries, best first.

    Args:
        rows: the summary's per-trial rows.
        k: how many to keep.
        metric, mode: what ranks trials.
        run_dir: the search directory.
        trial_spec: trial id -> that trial's ExperimentSpec.
        task: the search's TaskRef.
        data_ref: the object-store ref of the data.
    """
    from orchestrator.engine.tune import checkpoint_at, for_worker

    entries = []
    for rank, row in enumerate(ranked(rows, metric, mode)[:k], start=1):
        top = RunLayout(run_dir).top_model(rank, row["trial_id"])
        evaluation = evaluate_checkpoints(trial_spec(row["trial_id"]), task,
                                          checkpoint_at(row["final_checkpoint"], run_dir),
                                          checkpoint_at(row["best_checkpoint"], run_dir), data_ref,
                                          for_worker(top.export))
        entry = {"rank": rank, "trial_id": row["trial_id"], "config": row["config"],
                 "best_epoch": row["best_epoch"], f"best_{metric}": row[f"best_{metric}"],
                 "best_val_accuracy": row.get("best_val_accuracy"), "best_checkpoint": row["best_checkpoint"],
                 "evaluation": evaluation, "dir": str(top.root), "model": evaluation.get("exported_model"),
                 "saved_model": evaluation.get("saved_model")}
        write_json_atomic(top.top_model_entry, entry)
        entries.append(entry)
    return entries
