"""A search: Ray Tune trials, each one distributed Ray Train run of the same worker code.

    $ orchestrator tune --config jobs/configs/tune_mnist.yaml --samples 16 --name my-search
    $ ls results/my-search/
    best_model.keras  curves.png  summary.csv  summary.json  tensorboard/  trials/ ...
    $ tensorboard --logdir results/my-search/tensorboard     # one run per trial, HParams tab

Each trial is a Tune function trainable that runs a Ray Train V2 trainer
(Train V2's supported way; see ``train.make_trainer``) with ``TuneReportCallback`` forwarding every
epoch to Tune; a trial of one worker instead runs the worker loop in its own,
reused Tune actor (the fast path: ``engine/fast_trial.py``, ``worker/in_actor.py``). Early stopping works on two levels: Keras EarlyStopping inside a
trial (its own patience) and ASHA across trials. The task's arrays are loaded
once and shared with every trial and worker through the object store. Per-trial output
(checkpoints, TensorBoard) is written by the workers while they train, because
Tune ends a trial's function without running what follows ``trainer.fit()``.
"""

from __future__ import annotations

import math
import os
import random
import re
import signal
import sys
import time
from pathlib import Path
from typing import Any, Optional

from ray.tune import Callback
from ray.tune.stopper import Stopper

from orchestrator.best import best as best_by
from orchestrator.engine import tracking
from orchestrator.engine.hparams import write_experiment_summary
from orchestrator import console, integrity, process, storage_errors
from orchestrator.contract import Trial
from orchestrator.engine.runtime import WorkerShape, check_fits, connect, dashboard_url
from orchestrator.engine.search_table import SearchTable
from orchestrator.engine.tune_state import KeepCompleteTuneState, restore_cut_state
from orchestrator.engine.train import (check_resumable, evaluate_checkpoints, load_data, make_trainer,
                                       prepare_run_dir, raise_task_error, replaced_run)
from orchestrator.errors import UserError
from orchestrator.layout import RunLayout
from orchestrator.results import FORMAT_VERSION, read_json, write_atomic, write_csv_atomic, write_json_atomic
from orchestrator.search_algorithms import algorithm, asha
from orchestrator.search_space import Search
from orchestrator.stop_reasons import stop_reason
from orchestrator.storage import RemotePath, is_uri, location
from orchestrator.tasks import TaskRef

# A trial's own function only drives a Trainer: it must not hold a CPU, or a
# 2-CPU machine deadlocks with 1 trial CPU + 2 worker CPUs. Tune refuses {"CPU": 0}
# alone, so ask for a token amount of memory instead.
TRIAL_DRIVER_RESOURCES = {"CPU": 0, "memory": 1024 * 1024}


def trial_label(trial_id: str, hparams: dict) -> str:
    """A TensorBoard run name a person can read: id plus the short config."""
    parts = [trial_id]
    for key, value in hparams.items():
        short = key.rsplit(".", 1)[-1]
        short = {"learning_rate": "lr", "patience": "pat", "lr_schedule": "sched"}.get(short, short)
        parts.append(f"{short}={value:.3g}" if isinstance(value, float) else f"{short}={value}")
    return "_".join(parts)


def this_trial(config: dict, search: Search, run_dir: str) -> tuple[str, Any, RunLayout, Trial]:
    """The running Tune trial: its id, its spec, the search's layout, and how its workers name it."""
    from ray import tune

    trial_id = tune.get_context().get_trial_id()
    hparams = search.hparams(config)
    return (trial_id, search.trial_spec(config, name=trial_id), RunLayout(location(run_dir)),
            Trial(trial_label(trial_id, hparams), dict(hparams)))


def run_trial(config: dict, search: Search = None, data: dict = None, run_dir: str = None) -> None:
    """One Tune trial: a Ray Train run of the trial's spec, reporting each epoch to Tune."""
    from ray.tune.integration.ray_train import TuneReportCallback

    trial_id, spec, layout, trial = this_trial(config, search, run_dir)
    trainer = make_trainer(
        spec, data["task"], data["ref"], storage_path=layout.trials, name=trial_id,
        tensorboard_dir=for_worker(layout.tensorboard_run(trial.label)), trial=trial,
        callbacks=[TuneReportCallback()])
    trainer.fit()


def _trainable(search: Search, task: TaskRef, data_ref, run_dir: Path):
    from ray import tune

    from orchestrator.engine.fast_trial import run_fast_trial, trial_resources, uses_fast_path
    from orchestrator.engine.pbt import run_pbt_trial

    # The ref travels inside a dict so Tune hands the trial the ref, not 50 MB of arrays;
    # the task as the driver found it, so a trial on a node without the task's file runs it.
    fast = uses_fast_path(search)
    trial_fn = run_pbt_trial if algorithm(search.search.algorithm).population else run_fast_trial if fast \
        else run_trial
    fn = tune.with_parameters(trial_fn, search=search, data={"ref": data_ref, "task": task},
                              run_dir=for_worker(run_dir))
    return tune.with_resources(fn, trial_resources(search) if fast else TRIAL_DRIVER_RESOURCES)


def _tuner(search: Search, trainable, run_dir: Path, samples: int, max_concurrent: int,
           stopper=None, callbacks: Optional[list] = None):
    from ray import tune

    from orchestrator.engine.fast_trial import uses_fast_path
    from orchestrator.engine.trial_clock import TrialClock

    s = search.search
    algo = algorithm(s.algorithm)
    return tune.Tuner(
        trainable,
        param_space=search.param_space(),
        tune_config=tune.TuneConfig(metric=s.metric, mode=s.mode, num_samples=samples,
                                    scheduler=algo.scheduler(search, max_concurrent) if algo.scheduler
                                    else asha(search),
                                    search_alg=algo.searcher(search, max_concurrent),
                                    # Tune would ignore it for such a searcher, with a warning.
                                    max_concurrent_trials=None if algo.limits_concurrency else max_concurrent,
                                    # The fast path's actor imported TensorFlow and holds the data:
                                    # the next trial of its slot runs in it.
                                    reuse_actors=uses_fast_path(search)),
        run_config=tune.RunConfig(name=run_dir.name, **tune_storage(run_dir), stop=stopper,
                                  failure_config=tune.FailureConfig(max_failures=s.max_failures_per_trial),
                                  verbose=console.tune_verbosity(search.base.verbose),
                                  callbacks=(callbacks or [])
                                  + ([TrialClock(str(RunLayout(run_dir).trial_clock))]
                                     if isinstance(run_dir, Path) else [])
                                  + ([] if search.base.verbose else
                                  [SearchTable(search, trial_count(search.param_space(), samples),
                                               max_concurrent or 1)])),
    )


def trial_count(param_space: dict, samples: int) -> int:
    """How many trials Tune will run: ``samples`` draws of every grid combination."""
    count = samples
    for value in param_space.values():
        if isinstance(value, dict):
            count *= len(value["grid_search"]) if "grid_search" in value else trial_count(value, 1)
    return count


# ----------------------------------------------------------------- summary

def _running_at(last: dict, hit: dict, search: Optional[Search]) -> bool:
    """Whether a trial that did not end by itself was still running when stop_at ended the search.

    Without ASHA nothing else stops a trial. With ASHA, a trial whose last epoch
    ended more than an epoch before the hit was stopped by ASHA. A trial that
    never reported was pending: only the search's end kept it from starting.
    """
    if search is None or asha(search) is None or last.get("epoch") is None:
        return True
    ended = (last.get("started_at") or 0) + (last.get("epoch_seconds") or 0)
    return ended >= hit["time"] - 2 * (last.get("epoch_seconds") or 0) - 1


def recorded_state(run_dir: Path, trial_id: str) -> tuple[Optional[dict], dict[int, str]]:
    """A trial's own record in its Train checkpoints: the latest ``state.json`` and {epoch: checkpoint}.

    Every checkpoint carries the trial's whole history. Tune does not: when a
    resumed search restarts a trial that was running (or had just finished) when
    the driver died, Tune starts that trial's results over.
    """
    latest, kept = None, {}
    for state_file in RunLayout(run_dir).trial(trial_id).root.glob("checkpoint_*/state.json"):
        try:
            state = read_json(state_file)
        except (OSError, ValueError):
            continue
        kept[int(state["epoch"])] = str(state_file.parent)  # a URI on object storage
        if latest is None or state["epoch"] > latest["epoch"]:
            latest = state
    return latest, kept


def with_recorded_history(history: list[dict], latest: Optional[dict], kept: dict[int, str],
                          keep: tuple = ()) -> list[dict]:
    """Tune's rows, one per epoch, with every epoch Tune lacks filled in from the trial's checkpoint."""
    by_epoch = {int(h["epoch"]): h for h in history if h.get("epoch") is not None}  # a rerun epoch: last wins
    if latest:
        for row in latest.get("history", []):
            epoch = int(row["epoch"])
            # Any epoch Tune's record lacks (lost before a restart, or whose report a killed
            # trial driver took with it) is in the trial's own checkpoint.
            if epoch not in by_epoch:
                by_epoch[epoch] = {**{k: v for k, v in row.items() if not keep or k in keep},
                                   "checkpoint_path": kept.get(epoch),
                                   "stop_reason": latest.get("stop_reason") if epoch == latest["epoch"] else None}
    return [by_epoch[e] for e in sorted(by_epoch)]


KEEP_COLUMNS = ("epoch", "loss", "accuracy", "val_loss", "val_accuracy", "learning_rate",
                "stop_reason", "checkpoint_path", "started_at", "epoch_seconds")


def trial_row(result, search: Search, run_dir: Path, hit: Optional[dict] = None) -> dict:
    """One trial's line of the summary, from Tune's record of what it reported."""
    metric, mode = search.search.metric, search.search.mode
    history = []
    keep_columns = KEEP_COLUMNS
    if result.metrics_dataframe is not None and len(result.metrics_dataframe):
        df = result.metrics_dataframe
        keep = [c for c in keep_columns if c in df.columns]
        history = [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()}
                   for row in df[keep].to_dict("records")]
    trial_id = trial_row_id(result)
    latest, kept = recorded_state(run_dir, trial_id)
    history = with_recorded_history(history, latest, kept, keep=keep_columns)
    hparams = search.hparams(result.config or {})
    last = history[-1] if history else {}
    best = best_by(history, metric, mode) or {}
    return {
        **_row_head(result, search, trial_id, trial_label(trial_id, hparams), hparams, last, best, hit),
        "best_checkpoint": as_uri(best.get("checkpoint_path"), run_dir),
        "final_checkpoint": as_uri(last.get("checkpoint_path"), run_dir),
        "resumed_from_epochs": (latest or {}).get("resumed_from_epochs", []),
        "history": [{k: v for k, v in h.items() if k not in ("checkpoint_path", "stop_reason")}
                    for h in history],
    }


def _row_head(result, search: Search, trial_id: str, label: str, hparams: dict, last: dict, best: dict,
              hit: Optional[dict]) -> dict:
    """The columns every trial's summary line has: who, how it ended, its best epoch."""
    metric = search.search.metric
    return {
        "trial_id": trial_id,
        "label": label,
        "status": "ERROR" if result.error is not None else "TERMINATED",
        "config": hparams,
        "epochs_run": int(last.get("epoch") or 0),
        "stop_reason": stop_reason(last, search.base.training.epochs, error=result.error,
                                   stop_at_trial=hit["trial_id"] if hit and _running_at(last, hit, search) else None,
                                   scheduler_stops=asha(search) is not None),
        "best_epoch": best.get("epoch"),
        f"best_{metric}": best.get(metric),
        "best_val_accuracy": best.get("val_accuracy"),
    }


def pbt_row(result, search: Search, run_dir: Path, hit: Optional[dict] = None) -> dict:
    """A PBT member's line: its lineage's whole history (from its last checkpoint) and its copies.

    Tune's own record of a member restarts with each exploit; the member's last
    checkpoint holds every epoch of its lineage, inherited ones included, with
    the LR each actually used, and who trained it.
    """
    from orchestrator.engine.pbt import member_record, trained_by

    # Not the id in its last metrics: an exploited member that ended before reporting
    # again still carries its donor's last result there.
    found = re.search(r"_([0-9a-f]{5}_\d{5})_", Path(result.path).name)
    trial_id = found.group(1) if found else trial_row_id(result)
    final_dir = result.checkpoint.path if result.checkpoint is not None else None
    state, lineage = member_record(final_dir, trial_id)
    if state is None:  # never reported a checkpoint (failed at start)
        row = trial_row(result, search, run_dir, hit)
        return {**row, "copies": [], "lineage": []}
    metric, mode = search.search.metric, search.search.mode
    history = [{k: v for k, v in h.items() if k in KEEP_COLUMNS} for h in state["history"]]
    owner = trained_by([h["epoch"] for h in history], trial_id, lineage["copies"])
    for h in history:
        h["trained_by"] = owner[h["epoch"]]
    hparams = search.hparams(result.config or {})
    last = {**(history[-1] if history else {}), "stop_reason": state.get("stop_reason")}
    best = best_by(history, metric, mode) or {}
    return {
        # Labelled by its id: one TensorBoard run per member, whatever its config becomes.
        **_row_head(result, search, trial_id, trial_id, hparams, last, best, hit),
        # The last checkpoint holds the lineage's best weights too (best.weights.h5).
        "best_checkpoint": final_dir,
        "final_checkpoint": final_dir,
        "copies": [c for c in lineage["copies"] if c["member"] == trial_id],
        "lineage": lineage["copies"],
        "history": history,
    }


def plot_curves(rows: list[dict], path: Path, metric: str) -> Path:
    """val_loss and LR per epoch of every trial, in one PNG; a PBT copy is marked with an x."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_metric, ax_lr) = plt.subplots(1, 2, figsize=(13, 5))
    for row in rows:
        epochs = [h["epoch"] for h in row["history"]]
        if not epochs:
            continue
        line, = ax_metric.plot(epochs, [h.get(metric) for h in row["history"]], marker=".",
                               label=row["label"][:48])
        ax_lr.plot(epochs, [h.get("learning_rate") for h in row["history"]], marker=".", color=line.get_color())
        lr_of = {h["epoch"]: h.get("learning_rate") for h in row["history"]}
        for copy in row.get("copies", []):  # the first epoch on the donor's state, at the new LR
            if lr_of.get(copy["epoch"] + 1) is not None:
                ax_lr.plot([copy["epoch"] + 1], [lr_of[copy["epoch"] + 1]], marker="x", markersize=10,
                           color=line.get_color())
                ax_metric.plot([copy["epoch"] + 1], [next(h.get(metric) for h in row["history"]
                                                          if h["epoch"] == copy["epoch"] + 1)],
                               marker="x", markersize=10, color=line.get_color())
    ax_metric.set(title=f"{metric} per epoch", xlabel="epoch", ylabel=metric)
    ax_lr.set(title="learning rate per epoch", xlabel="epoch", ylabel="learning rate", yscale="log")
    ax_metric.legend(fontsize=6, loc="upper right")
    fig.tight_layout()
    write_atomic(path, lambda tmp: fig.savefig(tmp, format="png", dpi=90))
    plt.close(fig)
    return path


def summarize(result_grid, search: Search, task: TaskRef, run_dir: Path, data_ref, wall: float,
              evaluate_best: bool = True, mlflow: Optional[dict] = None) -> dict:
    from orchestrator.engine.stop_at import recorded_hit

    metric, mode = search.search.metric, search.search.mode
    hit = recorded_hit(run_dir) if search.search.stop_at else None
    make_row = pbt_row if algorithm(search.search.algorithm).population else trial_row
    layout = RunLayout(run_dir)
    rows = [make_row(result, search, run_dir, hit) for result in result_grid]
    rows.sort(key=lambda r: r["trial_id"])
    best = best_by([r for r in rows if r.get("best_checkpoint")], f"best_{metric}", mode)
    summary: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "name": run_dir.name, "status": "finished", "metric": metric, "mode": mode,
        "algorithm": search.search.algorithm, "trials": len(rows), "wall_seconds": wall,
        "stop_at": ({"targets": search.search.stop_at, "reached": hit} if search.search.stop_at else None),
        "tensorboard_dir": str(layout.tensorboard),
        "best_trial": None, "evaluation": None, "results": rows, "mlflow": mlflow,
    }
    if best is not None:
        summary["best_trial"] = {k: best[k] for k in ("trial_id", "label", "config", "best_epoch",
                                                      f"best_{metric}", "best_val_accuracy", "best_checkpoint")}
        if evaluate_best:
            trial_spec = search.trial_spec(next(r.config for r in result_grid
                                                if trial_row_id(r) == best["trial_id"]))
            summary["evaluation"] = evaluate_checkpoints(
                trial_spec, task, checkpoint_at(best["final_checkpoint"], run_dir),
                checkpoint_at(best["best_checkpoint"], run_dir), data_ref, for_worker(layout.export))
            if search.search.export_top:
                from orchestrator.engine.top_models import export_top

                configs = {trial_row_id(r): r.config for r in result_grid}
                summary["top_models"] = export_top(rows, search.search.export_top, metric, mode, run_dir,
                                                   lambda trial_id: search.trial_spec(configs[trial_id]),
                                                   task, data_ref)
        summary["best_schedule"] = write_best_schedule(best, search, result_grid, run_dir)
    summary["plot"] = str(plot_curves(rows, layout.curves, metric))
    columns = ["trial_id", "status", "epochs_run", "stop_reason", "best_epoch", f"best_{metric}",
               "best_val_accuracy", "best_checkpoint"] + sorted({k for r in rows for k in r["config"]})
    columns += (["copied_from"] if algorithm(search.search.algorithm).population else []) + ["learning_rates"]
    write_csv_atomic(layout.summary_csv, [{**r, **r["config"], **csv_extras(r)} for r in rows], columns)
    write_json_atomic(layout.summary_json, summary)
    summary["summary_file"] = str(layout.summary_json)
    return summary


def csv_extras(row: dict) -> dict:
    """The LR of every epoch, and a PBT member's copies (``donor@epoch``), as CSV cells."""
    return {"learning_rates": " ".join(f"{h['learning_rate']:.6g}" for h in row["history"]
                                       if h.get("learning_rate") is not None),
            "copied_from": "; ".join(f"{c['from']}@{c['epoch']}" for c in row.get("copies", []))}


def write_best_schedule(best: dict, search: Search, result_grid, run_dir: Path) -> Optional[str]:
    """The winner's LR of every epoch as a complete train config (``best_schedule.yaml``)."""
    from orchestrator.engine.pbt import replay_config

    history = best.get("history") or []
    if not history or any(h.get("learning_rate") is None for h in history) \
            or [h["epoch"] for h in history] != list(range(1, len(history) + 1)):
        return None
    config = next(r.config for r in result_grid if trial_row_id(r) == best["trial_id"])
    spec = search.trial_spec(config)
    text = replay_config(spec.model_dump(mode="json"), history,
                         f"trial {best['trial_id']} of search {run_dir.name}")
    path = RunLayout(run_dir).best_schedule
    write_atomic(path, lambda tmp: tmp.write_text(text))
    return str(path)


def for_worker(path):
    """A path handed to workers and Ray tasks: a string when local (as always), the RemotePath itself
    on object storage (it carries its filesystem)."""
    return path if isinstance(path, RemotePath) else str(path)


def tune_storage(run_dir) -> dict:
    """Tune's ``RunConfig`` storage arguments for the search directory's parent."""
    parent = run_dir.parent
    if isinstance(parent, RemotePath):
        return {"storage_path": parent.path, "storage_filesystem": parent.fs}
    return {"storage_path": str(parent)}


def as_uri(path: Optional[str], run_dir) -> Optional[str]:
    """A checkpoint path as Ray reports it (no scheme on object storage) as the user names it."""
    if path and isinstance(run_dir, RemotePath) and "://" not in path:
        return str(RemotePath(run_dir.fs, path, run_dir.scheme))
    return path


def checkpoint_at(path: str, run_dir):
    """A ``ray.train.Checkpoint`` for a recorded checkpoint path (a URI on object storage)."""
    from ray.train import Checkpoint

    if isinstance(run_dir, RemotePath):
        return Checkpoint(path.split("://", 1)[-1], filesystem=run_dir.fs)
    return Checkpoint(path)


def trial_row_id(result) -> str:
    return (result.metrics or {}).get("trial_id") or Path(result.path).name


# ------------------------------------------------------------------ entry

def run_search(search: Search, *, name: str, storage: str, samples: Optional[int] = None,
               max_concurrent: Optional[int] = None, resume: bool = False,
               overwrite: bool = False, address: Optional[str] = None,
               tensorboard_url: Optional[str] = None) -> dict:
    """Run (or resume) a search; returns what ``summary.json`` holds.

    Input is checked before Ray starts; then Ray is joined or started, and one
    trial is checked to fit the cluster.
    """
    if algorithm(search.search.algorithm).population and is_uri(storage):
        raise UserError(f"search.algorithm: {search.search.algorithm} keeps its members' lineage with local file I/O, so it needs a "
                        f"storage path every node mounts, not {storage!r} (random and optuna searches run on "
                        "object storage)")
    resolved, arrays, _ = load_data(search.base)  # before the run dir is touched: bad input changes nothing
    run_dir = prepare_run_dir(storage, name, resume=resume, overwrite=overwrite, what="search")
    with replaced_run(run_dir):
        return _search(search, resolved.ref, arrays, run_dir, samples=samples, max_concurrent=max_concurrent,
                       resume=resume, address=address, tensorboard_url=tensorboard_url)


# What `tuner.fit` imports before it starts the first trial, to count the callbacks it is
# given for Ray's usage stats (ray.air._internal.usage._count_callbacks): the MLflow,
# W&B, Comet and Aim integrations, MLflow itself among them, used or not.
TUNE_FIT_IMPORTS = ("ray.air.integrations.mlflow", "ray.air.integrations.wandb", "ray.air.integrations.comet",
                    "ray.tune.logger.aim")


def _import_in_background(modules) -> None:
    """Import ``modules`` in a daemon thread: done while this process waits for a local Ray to start."""
    import importlib
    import threading

    def run():
        for module in modules:
            try:
                importlib.import_module(module)
            except Exception:  # noqa: BLE001  (tuner.fit imports it again and reports what it must)
                pass

    threading.Thread(target=run, name="orchestrator-imports", daemon=True).start()


def _search(search: Search, task: TaskRef, arrays, run_dir: Path, *, samples: Optional[int],
            max_concurrent: Optional[int], resume: bool, address: Optional[str],
            tensorboard_url: Optional[str]) -> dict:
    import ray
    from ray import tune

    name, layout = run_dir.name, RunLayout(run_dir)
    if resume and not isinstance(run_dir, RemotePath):  # the checks read with local file I/O (README: Where results go)
        check_search_resumable(run_dir)
    mlflow_server = tracking.check(search.base.mlflow)  # before Ray: a dead server fails fast
    _import_in_background(TUNE_FIT_IMPORTS)  # while a local Ray starts
    connect(address, search.base.verbose)
    print(console.where_to_look("search", name, run_dir, dashboard_url(), layout.tensorboard,
                                tensorboard_url), flush=True)
    scaling = search.base.scaling
    fit = check_fits(scaling.workers, WorkerShape(scaling.cpus_per_worker, scaling.gpus_per_worker),
                     f"one trial of search {name!r}")
    # Once the cluster is known to hold a trial (no MLflow run left RUNNING by a refusal), before any trains.
    tracker = tracking.start_for(mlflow_server, search.base, "search", name, run_dir, params={
        **tracking.spec_params(search.base), **tracking.flatten(search.search.model_dump(), "search.")})
    concurrent = max_concurrent or search.search.max_concurrent or max(1, fit // scaling.workers)
    data_ref = ray.put(arrays) if arrays is not None else None
    del arrays
    write_experiment_summary(layout.tensorboard, search)
    trainable = _trainable(search, task, data_ref, run_dir)
    started = time.time()
    hopeless = StopWhenHopeless(str(run_dir))
    stopper = hopeless
    if search.search.stop_at:
        from ray.tune.stopper import CombinedStopper

        from orchestrator.engine.stop_at import StopAtTarget

        stopper = CombinedStopper(stopper, StopAtTarget(search.search.stop_at, for_worker(layout.stop_at),
                                                        started))
    if algorithm(search.search.algorithm).population:
        # PBT draws donors and perturbations from Python's `random`, PB2 its Gaussian process's
        # restarts from numpy's: seeded like the trials (the order results arrive in still
        # varies, so two searches may differ).
        import numpy as np

        random.seed(search.base.seed)
        np.random.seed(search.base.seed)
    restore_at = {"path": run_dir.path, "storage_filesystem": run_dir.fs} if isinstance(run_dir, RemotePath) \
        else {"path": str(run_dir)}
    if resume and tune.Tuner.can_restore(**restore_at):
        tuner = tune.Tuner.restore(**restore_at, trainable=trainable, resume_errored=True,
                                   param_space=search.param_space())
    elif resume:
        if tracker:
            tracker.safely("ending the MLflow run", lambda: tracker.finish("FAILED"))
        raise UserError(f"nothing to resume: {run_dir} holds no Tune experiment state")
    else:
        callbacks = [hopeless] + ([KeepCompleteTuneState(str(run_dir))] if isinstance(run_dir, Path) else [])
        if tracker:  # live per-epoch tracking of each trial (a resumed search is logged from its summary)
            from orchestrator.engine.mlflow_tune import callback_for
            callbacks.append(callback_for(tracker, search))
        tuner = _tuner(search, trainable, run_dir, samples or search.search.samples, concurrent, stopper,
                       callbacks)
    with tracking.ended_on_error(tracker):
        try:
            with process.tune_fit_interruptible():
                result_grid = tuner.fit()
        except Exception:
            # A full disk can cut Tune's own files (a trial's pickled error), and Tune then
            # fails reading them: the storage is the cause to report.
            storage_errors.raise_if_full_or_read_only(run_dir)
            raise
        if any(result.error is not None for result in result_grid):
            storage_errors.raise_if_full_or_read_only(run_dir)  # before a summary that cannot be written
        for result in result_grid:  # a task that cannot train stops the search at its first trial
            raise_task_error(result.metrics)
        summary = summarize(result_grid, search, task, run_dir, data_ref, time.time() - started,
                            mlflow=tracker.describe() if tracker else None)
    if tracker:  # after the search's own files: tracking can never lose them
        tracker.log_search_summary(summary, layout.summary_json)
    return summary


class StopWhenHopeless(Stopper, Callback):
    """A Tune stopper (and callback): the first trial that no other trial can get past ends the search.

    - A task the workers found unusable (they report ``task_error``): every trial
      is stopped for good; the driver reports the task's error.
    - A full or read-only storage, where every trial writes its checkpoints, so
      the others would fail the same way one by one: Tune's own graceful stop
      (as on Ctrl-C, SIGUSR1), which keeps every trial resumable; the driver then
      reports the storage in one line with the command to resume once freed.

    Errors that are a trial's own (a diverging LR, a lost worker) leave the search running.
    """

    def __init__(self, run_dir: str):
        self.run_dir = run_dir
        self.task_failed = False
        self.storage_failed = False

    def __call__(self, trial_id: str, result: dict) -> bool:
        self.task_failed = self.task_failed or bool(result.get("task_error"))
        return self.task_failed

    def stop_all(self) -> bool:
        return self.task_failed

    def on_trial_error(self, iteration, trials, trial, **info):
        # The filesystem itself, not the trial's error file, which a full disk may have cut.
        if self.storage_failed or storage_errors.filesystem_state(self.run_dir) is None:
            return
        self.storage_failed = True
        if callable(signal.getsignal(signal.SIGUSR1)):  # Tune's handler, in the driver's main thread
            os.kill(os.getpid(), signal.SIGUSR1)


def check_search_resumable(run_dir: Path) -> None:
    """Tune's state and every trial's latest checkpoint, before Ray starts (one line naming a damaged file)."""
    layout = RunLayout(run_dir)
    if not layout.tuner_pkl.exists() and not any(run_dir.glob("experiment_state-*.json")) \
            and not layout.trials.exists():
        return  # interrupted before Tune wrote anything: refused below as "nothing to resume"
    note = restore_cut_state(run_dir) if isinstance(run_dir, Path) else None
    if note:
        print(f"[orchestrator] search {run_dir.name!r}: {note}", file=sys.stderr, flush=True)
    try:
        integrity.check_tune_state(run_dir)
    except integrity.CorruptFile as exc:
        raise UserError(f"cannot resume search {run_dir.name!r}: {exc.path} is {exc.problem}; "
                        "pass --overwrite to start the search over") from None
    trials = layout.trials
    for trial_dir in sorted(trials.iterdir()) if trials.is_dir() else []:
        if (trial_dir / integrity.SNAPSHOT).exists() or not any(trial_dir.glob("checkpoint_*")):
            check_resumable(trial_dir, what="trial")  # a Ray Train run (or nothing to check)
        else:
            check_fast_trial_resumable(trial_dir)


def check_fast_trial_resumable(trial_dir: Path) -> None:
    """A fast-path trial (no Ray Train record) resumes from its newest checkpoint that is whole.

    Damaged newer ones are set aside as ``corrupt-<name>`` (said on stderr), as for
    a run; with none whole, one line names the newest one's damaged file.
    """
    damaged = []
    for directory in sorted(trial_dir.glob("checkpoint_*"), reverse=True):  # named by time: newest first
        try:
            integrity.check_checkpoint(directory)
        except integrity.CorruptFile as exc:
            damaged.append((directory, exc))
            continue
        for bad, exc in damaged:
            bad.rename(bad.with_name(f"corrupt-{bad.name}"))
            print(f"[orchestrator] trial {trial_dir.name!r}: {exc.path}: {exc.problem}; resuming from the "
                  f"previous complete checkpoint {directory.name}, the damaged one is kept as corrupt-{bad.name}",
                  file=sys.stderr, flush=True)
        return
    exc = damaged[0][1]
    raise UserError(f"cannot resume trial {trial_dir.name!r} from its latest checkpoint: {exc.path} is "
                    f"{exc.problem}; restore it, or pass --overwrite to start over")
