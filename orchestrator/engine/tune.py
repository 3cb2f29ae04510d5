"""A search: Ray Tune trials, each one distributed Ray Train run of the same worker code.

    $ orchestrator tune --config jobs/configs/tune_mnist.yaml --samples 16 --name my-search
    $ ls results/my-search/
    best_model.keras  curves.png  summary.csv  summary.json  tensorboard/  trials/ ...
    $ tensorboard --logdir results/my-search/tensorboard     # one run per trial, HParams tab

Each trial is a Tune function trainable that runs a Ray Train V2 trainer
(Train V2's supported way; see ``train.make_trainer``) with ``TuneReportCallback`` forwarding every
epoch to Tune. Early stopping works on two levels: Keras EarlyStopping inside a
trial (its own patience) and ASHA across trials. MNIST is loaded once and
shared with every trial and worker through the object store. Per-trial output
(checkpoints, TensorBoard) is written by the workers while they train, because
Tune ends a trial's function without running what follows ``trainer.fit()``.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any, Optional

from orchestrator.engine.hparams import write_experiment_summary
from orchestrator import console
from orchestrator.engine.search_table import SearchTable
from orchestrator.engine.runtime import WorkerShape, check_fits, connect, dashboard_url
from orchestrator.engine.train import (EXPORT_FILE, TENSORBOARD_DIR, evaluate_checkpoints, load_data,
                                       make_trainer, prepare_run_dir)
from orchestrator.errors import UserError
from orchestrator.results import read_json, write_atomic, write_csv_atomic, write_json_atomic
from orchestrator.search_space import Search

SUMMARY_JSON = "summary.json"
SUMMARY_CSV = "summary.csv"
CURVES_PNG = "curves.png"
TRIALS_DIR = "trials"
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


def run_trial(config: dict, search: Search = None, data: dict = None, run_dir: str = None) -> None:
    """One Tune trial: a Ray Train run of the trial's spec, reporting each epoch to Tune."""
    from ray import tune
    from ray.tune.integration.ray_train import TuneReportCallback

    trial_id = tune.get_context().get_trial_id()
    hparams = search.hparams(config)
    label = trial_label(trial_id, hparams)
    spec = search.trial_spec(config, name=trial_id)
    trainer = make_trainer(
        spec, data["ref"], storage_path=str(Path(run_dir) / TRIALS_DIR), name=trial_id,
        tensorboard_dir=str(Path(run_dir) / TENSORBOARD_DIR / label),
        hparams={k: v for k, v in hparams.items()}, trial_name=label,
        callbacks=[TuneReportCallback()])
    trainer.fit()


def _trainable(search: Search, data_ref, run_dir: Path):
    from ray import tune

    # The ref travels inside a dict so Tune hands the trial the ref, not 50 MB of arrays.
    fn = tune.with_parameters(run_trial, search=search, data={"ref": data_ref}, run_dir=str(run_dir))
    return tune.with_resources(fn, TRIAL_DRIVER_RESOURCES)


def _tuner(search: Search, trainable, run_dir: Path, samples: int, max_concurrent: int):
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.basic_variant import BasicVariantGenerator

    s = search.search
    scheduler = None
    if s.asha.enabled:
        scheduler = ASHAScheduler(time_attr="training_iteration", max_t=search.base.training.epochs,
                                  grace_period=min(s.asha.grace_period, search.base.training.epochs),
                                  reduction_factor=s.asha.reduction_factor)
    # Seeded like the trials: the same config draws the same trials.
    # It must be told max_concurrent itself: given a search_alg, Tune ignores
    # max_concurrent_trials for it and would start every trial at once.
    algorithm = BasicVariantGenerator(random_state=search.base.seed, max_concurrent=max_concurrent)
    if s.algorithm == "optuna":
        try:
            from ray.tune.search.optuna import OptunaSearch
            import optuna  # noqa: F401
        except ImportError:
            raise UserError("search.algorithm: optuna needs `pip install optuna` "
                            "(or `pip install -e '.[optuna]'`)") from None
        algorithm = OptunaSearch(seed=search.base.seed)
    return tune.Tuner(
        trainable,
        param_space=search.param_space(),
        tune_config=tune.TuneConfig(metric=s.metric, mode=s.mode, num_samples=samples,
                                    scheduler=scheduler, search_alg=algorithm,
                                    # BasicVariantGenerator limits itself (above); Tune would
                                    # ignore this for it, with a warning on every search.
                                    max_concurrent_trials=None if s.algorithm == "random" else max_concurrent),
        run_config=tune.RunConfig(name=run_dir.name, storage_path=str(run_dir.parent),
                                  failure_config=tune.FailureConfig(max_failures=s.max_failures_per_trial),
                                  verbose=console.tune_verbosity(search.base.verbose),
                                  callbacks=[] if search.base.verbose else
                                  [SearchTable(search, trial_count(search.param_space(), samples),
                                               max_concurrent or 1)]),
    )


def trial_count(param_space: dict, samples: int) -> int:
    """How many trials Tune will run: ``samples`` draws of every grid combination."""
    count = samples
    for value in param_space.values():
        if isinstance(value, dict):
            count *= len(value["grid_search"]) if "grid_search" in value else trial_count(value, 1)
    return count


# ----------------------------------------------------------------- summary

def _stop_reason(result, last: dict, max_epochs: int) -> str:
    if result.error is not None:
        first_line = str(result.error).strip().splitlines()[0] if str(result.error).strip() else ""
        return f"error: {type(result.error).__name__}: {first_line}"[:300]
    reason = last.get("stop_reason")
    if reason == "early_stopping":
        return f"early_stopping (patience) at epoch {last.get('epoch')}"
    if reason == "max_epochs":
        return f"max_epochs ({max_epochs})"
    if last.get("epoch") is not None:
        return f"asha at epoch {last.get('epoch')}"
    return "not started"


def recorded_state(run_dir: Path, trial_id: str) -> tuple[Optional[dict], dict[int, str]]:
    """A trial's own record in its Train checkpoints: the latest ``state.json`` and {epoch: checkpoint}.

    Every checkpoint carries the trial's whole history. Tune does not: when a
    resumed search restarts a trial that was running (or had just finished) when
    the driver died, Tune starts that trial's results over.
    """
    latest, kept = None, {}
    for state_file in (run_dir / TRIALS_DIR / trial_id).glob("checkpoint_*/state.json"):
        try:
            state = read_json(state_file)
        except (OSError, ValueError):
            continue
        kept[int(state["epoch"])] = str(state_file.parent)
        if latest is None or state["epoch"] > latest["epoch"]:
            latest = state
    return latest, kept


def with_recorded_history(history: list[dict], latest: Optional[dict], kept: dict[int, str],
                          keep: tuple = ()) -> list[dict]:
    """Tune's rows, one per epoch, preceded by the epochs Tune lost on a restart (from the checkpoint)."""
    by_epoch = {int(h["epoch"]): h for h in history if h.get("epoch") is not None}  # a rerun epoch: last wins
    if latest:
        first_reported = min(by_epoch) if by_epoch else int(latest["epoch"]) + 1
        for row in latest.get("history", []):
            epoch = int(row["epoch"])
            if epoch < first_reported:
                by_epoch[epoch] = {**{k: v for k, v in row.items() if not keep or k in keep},
                                   "checkpoint_path": kept.get(epoch),
                                   "stop_reason": latest.get("stop_reason") if epoch == latest["epoch"] else None}
    return [by_epoch[e] for e in sorted(by_epoch)]


def trial_row(result, search: Search, run_dir: Path) -> dict:
    """One trial's line of the summary, from Tune's record of what it reported."""
    metric, mode = search.search.metric, search.search.mode
    history = []
    keep_columns = ("epoch", "loss", "accuracy", "val_loss", "val_accuracy", "learning_rate",
                    "stop_reason", "checkpoint_path")
    if result.metrics_dataframe is not None and len(result.metrics_dataframe):
        df = result.metrics_dataframe
        keep = [c for c in keep_columns if c in df.columns]
        history = [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()}
                   for row in df[keep].to_dict("records")]
    trial_id = trial_row_id(result)
    history = with_recorded_history(history, *recorded_state(run_dir, trial_id), keep=keep_columns)
    hparams = search.hparams(result.config or {})
    last = history[-1] if history else {}
    scored = [h for h in history if h.get(metric) is not None]
    best = (min if mode == "min" else max)(scored, key=lambda h: h[metric]) if scored else {}
    return {
        "trial_id": trial_id,
        "label": trial_label(trial_id, hparams),
        "status": "ERROR" if result.error is not None else "TERMINATED",
        "config": hparams,
        "epochs_run": int(last.get("epoch") or 0),
        "stop_reason": _stop_reason(result, last, search.base.training.epochs),
        "best_epoch": best.get("epoch"),
        f"best_{metric}": best.get(metric),
        "best_val_accuracy": best.get("val_accuracy"),
        "best_checkpoint": best.get("checkpoint_path"),
        "final_checkpoint": last.get("checkpoint_path"),
        "history": [{k: v for k, v in h.items() if k not in ("checkpoint_path", "stop_reason")}
                    for h in history],
    }


def plot_curves(rows: list[dict], path: Path, metric: str) -> Path:
    """val_loss and LR per epoch of every trial, in one PNG."""
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
    ax_metric.set(title=f"{metric} per epoch", xlabel="epoch", ylabel=metric)
    ax_lr.set(title="learning rate per epoch", xlabel="epoch", ylabel="learning rate", yscale="log")
    ax_metric.legend(fontsize=6, loc="upper right")
    fig.tight_layout()
    write_atomic(path, lambda tmp: fig.savefig(tmp, format="png", dpi=90))
    plt.close(fig)
    return path


def summarize(result_grid, search: Search, run_dir: Path, data_ref, wall: float,
              evaluate_best: bool = True) -> dict:
    metric, mode = search.search.metric, search.search.mode
    rows = [trial_row(result, search, run_dir) for result in result_grid]
    rows.sort(key=lambda r: r["trial_id"])
    scored = [r for r in rows if r.get(f"best_{metric}") is not None and r.get("best_checkpoint")]
    best = (min if mode == "min" else max)(scored, key=lambda r: r[f"best_{metric}"]) if scored else None
    summary: dict[str, Any] = {
        "name": run_dir.name, "status": "finished", "metric": metric, "mode": mode,
        "trials": len(rows), "wall_seconds": wall,
        "tensorboard_dir": str(run_dir / TENSORBOARD_DIR),
        "best_trial": None, "evaluation": None, "results": rows,
    }
    if best is not None:
        summary["best_trial"] = {k: best[k] for k in ("trial_id", "label", "config", "best_epoch",
                                                      f"best_{metric}", "best_val_accuracy", "best_checkpoint")}
        if evaluate_best:
            from ray.train import Checkpoint

            trial_spec = search.trial_spec(next(r.config for r in result_grid
                                                if trial_row_id(r) == best["trial_id"]))
            summary["evaluation"] = evaluate_checkpoints(
                trial_spec, Checkpoint(best["final_checkpoint"]), Checkpoint(best["best_checkpoint"]),
                data_ref, str(run_dir / EXPORT_FILE))
    summary["plot"] = str(plot_curves(rows, run_dir / CURVES_PNG, metric))
    columns = ["trial_id", "status", "epochs_run", "stop_reason", "best_epoch", f"best_{metric}",
               "best_val_accuracy", "best_checkpoint"] + sorted({k for r in rows for k in r["config"]})
    write_csv_atomic(run_dir / SUMMARY_CSV, [{**r, **r["config"]} for r in rows], columns)
    write_json_atomic(run_dir / SUMMARY_JSON, summary)
    summary["summary_file"] = str(run_dir / SUMMARY_JSON)
    return summary


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
    import ray
    from ray import tune

    run_dir = prepare_run_dir(storage, name, resume=resume, overwrite=overwrite,
                              finished_marker=SUMMARY_JSON, what="search")
    splits, _ = load_data(search.base)
    connect(address, search.base.verbose)
    print(console.where_to_look("search", name, run_dir, dashboard_url(), run_dir / TENSORBOARD_DIR,
                                tensorboard_url), flush=True)
    scaling = search.base.scaling
    fit = check_fits(scaling.workers, WorkerShape(scaling.cpus_per_worker, scaling.gpus_per_worker),
                     f"one trial of search {name!r}")
    concurrent = max_concurrent or search.search.max_concurrent or max(1, fit // scaling.workers)
    data_ref = ray.put(splits)
    del splits
    write_experiment_summary(run_dir / TENSORBOARD_DIR, search)
    trainable = _trainable(search, data_ref, run_dir)
    started = time.time()
    if resume and tune.Tuner.can_restore(str(run_dir)):
        tuner = tune.Tuner.restore(str(run_dir), trainable=trainable, resume_errored=True,
                                   param_space=search.param_space())
    elif resume:
        raise UserError(f"nothing to resume: {run_dir} holds no Tune experiment state")
    else:
        tuner = _tuner(search, trainable, run_dir, samples or search.search.samples, concurrent)
    with ctrl_c_after_graceful_stop():
        result_grid = tuner.fit()
    return summarize(result_grid, search, run_dir, data_ref, time.time() - started)


@contextlib.contextmanager
def ctrl_c_after_graceful_stop():
    """Ctrl-C during ``tuner.fit()``: Tune's graceful stop, then KeyboardInterrupt.

    Tune's own SIGINT handler stops the trials and saves its state, but then
    ``fit()`` returns as if the search were done: a summary would be written,
    mark the search finished and refuse ``--resume``. Here the first Ctrl-C is
    noted and passed to Tune as SIGUSR1 (the same graceful stop), and the
    interruption is raised once ``fit()`` returns; a second Ctrl-C interrupts at once.
    """
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers belong to the main thread; Tune installs none elsewhere either
        return
    noted: list[int] = []

    def note_and_stop_gracefully(signum, frame):
        noted.append(signum)
        if len(noted) == 1 and callable(signal.getsignal(signal.SIGUSR1)):  # Tune's, once it runs
            os.kill(os.getpid(), signal.SIGUSR1)
        else:
            raise KeyboardInterrupt(f"signal {signum}")

    saved_env = os.environ.get("TUNE_DISABLE_SIGINT_HANDLER")
    os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"  # Tune leaves SIGINT to the handler above
    previous = signal.signal(signal.SIGINT, note_and_stop_gracefully)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if saved_env is None:
            os.environ.pop("TUNE_DISABLE_SIGINT_HANDLER", None)
        else:
            os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = saved_env
    if noted:
        raise KeyboardInterrupt("search interrupted; Tune saved its state for --resume")
