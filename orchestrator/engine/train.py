"""One distributed training run: a Ray Train V2 trainer (``TF_CONFIG`` backend) over the worker loop.

    $ orchestrator train --workers 2 --epochs 20
    ...
    $ ls results/train-20261127-101500/
    best_model.keras  checkpoint_2026-11-27_10-15-40.123456/ ...  result.json  tensorboard/

The same pieces serve a search: :func:`make_trainer` builds the trainer that
each Tune trial runs, :func:`evaluate_checkpoints` scores a best checkpoint.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Optional

from orchestrator import console, integrity, ownership, process, storage_errors
from orchestrator import storage as storage_mod
from orchestrator.best import best
from orchestrator.errors import UserError
from orchestrator.engine import tracking
from orchestrator.engine.runtime import (WorkerShape, check_fits, connect, dashboard_url,
                                         worker_runtime_env)
from orchestrator.checkpoint_files import STATE
from orchestrator.results import FORMAT_VERSION, read_json, write_json_atomic
from orchestrator.contract import Trial, WorkerConfig
from orchestrator.layout import RunLayout
from orchestrator.spec import ExperimentSpec
from orchestrator.tasks import Resolved, TaskRef, resolve



def train_loop(config: dict) -> None:
    """Ray Train's per-worker entry: imports TensorFlow in the worker, never in the driver."""
    from orchestrator.worker.loop import train_loop_per_worker

    train_loop_per_worker(config)


def default_name(prefix: str) -> str:
    return f"{prefix}-{time.strftime('%Y%m%d-%H%M%S')}"


# Set by Ray's job supervisor in the environment of a submitted job's entrypoint.
_IN_RAY_JOB = "RAY_JOB_CONFIG_JSON_ENV_VAR"


def storage_root(storage: str):
    """The storage root, created and checked writable: a local ``Path``, or a ``storage.RemotePath``
    for a URI (``s3://bucket/prefix``; see orchestrator/storage.py)."""
    if _IN_RAY_JOB in os.environ and not storage_mod.is_uri(storage) \
            and not os.path.isabs(os.path.expanduser(storage)):
        raise UserError(f"storage: {storage!r} is relative, so inside `ray job submit` it lands in the job's "
                        "temporary copy of the working dir, which Ray deletes; pass an absolute path that every "
                        "node shares, or an object store URI (valid examples: `--storage /mnt/efs/orchestrator`, "
                        "`--storage s3://my-bucket/orchestrator`)")
    return storage_mod.check(storage)


def prepare_run_dir(storage: str, name: str, *, resume: bool, overwrite: bool,
                    what: str = "run") -> Path:
    """``<storage>/<name>``, refusing to silently reuse a name.

    A finished ``what`` (``"run"`` or ``"search"``: its ``RunLayout.finished`` file exists)
    is kept unless ``overwrite``; an interrupted one is continued only with ``resume``.
    """
    layout = RunLayout.at(storage_root(storage), name)
    run_dir, finished = layout.root, layout.finished(what)
    if overwrite and resume:
        raise UserError("--resume and --overwrite contradict each other; pick one")
    if resume and not run_dir.exists():
        raise UserError(f"nothing to resume: no {what} named {name!r} under {run_dir.parent}")
    # One live command per name, before anything in it is read or changed (see ownership.py).
    ownership.acquire(run_dir, what)
    if overwrite:
        _set_aside(run_dir)
    elif finished.exists():
        check_json_file(finished, what, name)
        raise UserError(f"{what} {name!r} already finished ({finished}); "
                        "choose another --name, or pass --overwrite to replace it")
    elif not resume and any(not ownership.is_ownership_file(c.name) for c in run_dir.iterdir()):
        raise UserError(f"{what} {name!r} exists but did not finish ({run_dir}); "
                        "pass --resume to continue it, or --overwrite to start over")
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir


def _aside(run_dir: Path) -> Path:
    return run_dir.with_name(f".{run_dir.name}.replaced")


def _set_aside(run_dir: Path) -> None:
    """``--overwrite``: move the old run's files aside (the owner record stays), to delete or put back later."""
    aside = _aside(run_dir)
    if aside.exists():
        _remove(aside)  # left by an overwrite whose driver was killed
    children = [c for c in run_dir.iterdir() if not ownership.is_ownership_file(c.name)]
    if children:
        aside.mkdir()
        for child in children:
            _move(child, aside / child.name)


def _remove(path) -> None:
    if isinstance(path, storage_mod.RemotePath):
        path.rmtree() if path.is_dir() else path.unlink(missing_ok=True)
    elif path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _move(source, target) -> None:
    """A rename on a local filesystem; a copy and delete, object by object, on object storage."""
    if isinstance(source, storage_mod.RemotePath):
        source.move_to(target)
    else:
        os.replace(source, target)


@contextlib.contextmanager
def replaced_run(run_dir: Path):
    """Around a run started with ``--overwrite``: a UserError (bad input found late, e.g. a task
    that cannot train) puts the replaced run back untouched; otherwise it is deleted."""
    aside = _aside(run_dir)
    try:
        yield
    except UserError:
        if aside.exists():
            for child in run_dir.iterdir():
                if not ownership.is_ownership_file(child.name):
                    _remove(child)
            for child in aside.iterdir():
                _move(child, run_dir / child.name)
        raise
    finally:
        if aside.exists():
            _remove(aside)


def check_resumable(run_dir: Path, what: str = "run") -> None:
    """Fail before starting anything if the checkpoint a resume would load is unusable.

    A damaged latest checkpoint falls back to the previous complete one (said on
    stderr); with none, one line names the damaged file. A run interrupted before
    Ray Train registered a checkpoint starts from epoch 1, or from a complete one
    whose report was lost (worker/resume.py).
    """
    try:
        note = integrity.resume_point(run_dir)
    except integrity.CorruptFile as exc:
        raise UserError(f"cannot resume {what} {run_dir.name!r} from its latest checkpoint: "
                        f"{exc.path} is {exc.problem}; "
                        "restore it, or pass --overwrite to start over") from None
    if note:
        print(f"[orchestrator] {what} {run_dir.name!r}: {note}", file=sys.stderr, flush=True)


def check_json_file(path: Path, what: str, name: str) -> None:
    """One line naming ``path`` if a result file a command reads is not whole JSON."""
    try:
        integrity.read_json_file(path)
    except integrity.CorruptFile as exc:
        raise UserError(f"{what} {name!r}: {exc.path} is {exc.problem}; "
                        "restore it, or pass --overwrite to start over") from None


def make_trainer(spec: ExperimentSpec, task: TaskRef, data_ref, *, storage_path: str, name: str,
                 tensorboard_dir: str, trial: Optional[Trial] = None, callbacks: Optional[list] = None,
                 start_checkpoint=None):
    """The Ray Train trainer of one run (also what each Tune trial runs): TF_CONFIG + the worker loop.

    ``start_checkpoint`` (a ``ray.train.Checkpoint``): where the workers start when
    the run has no checkpoint of its own yet (a PBT member continuing another's
    state); Train V2's way, as ``resume_from_checkpoint`` is gone.
    """
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    # What ray.train.tensorflow.TensorflowTrainer is, minus its TensorFlow import (see tf_backend).
    from ray.train.v2.api.data_parallel_trainer import DataParallelTrainer

    from orchestrator.engine.roster import WorkerRoster
    from orchestrator.engine.tf_backend import TFConfigBackendConfig

    scaling = spec.scaling
    where = storage_mod.location(storage_path)
    run_dir = RunLayout.at(where, name).root
    if isinstance(where, storage_mod.RemotePath):  # Ray Train writes through the same filesystem object
        storage_args = {"storage_path": where.path, "storage_filesystem": where.fs}
        local_path, worker_run_dir = None, run_dir
    else:
        storage_args = {"storage_path": str(where)}
        local_path, worker_run_dir = str(where), str(run_dir)
    # A full or read-only storage is not retried: no restart of the group can free a disk.
    trainer = storage_errors.trainer_class(DataParallelTrainer, local_path)(
        train_loop,
        backend_config=TFConfigBackendConfig(),
        train_loop_config=WorkerConfig(spec=spec, task=task, data=data_ref, run_dir=worker_run_dir,
                                       tensorboard_dir=tensorboard_dir, trial=trial,
                                       start_checkpoint=start_checkpoint).as_train_loop_config(),
        scaling_config=ScalingConfig(
            num_workers=scaling.workers, use_gpu=scaling.gpus_per_worker > 0,
            resources_per_worker={"CPU": scaling.cpus_per_worker, "GPU": scaling.gpus_per_worker},
            placement_strategy=scaling.placement),
        run_config=RunConfig(
            name=name, **storage_args,
            # Bounded on every path: worker errors, node preemptions, and worker groups
            # that cannot start (Train's default retries those forever).
            failure_config=FailureConfig(max_failures=scaling.max_failures,
                                         controller_failure_limit=scaling.max_failures,
                                         max_preemption_failures=scaling.max_failures),
            checkpoint_config=CheckpointConfig(
                num_to_keep=spec.checkpoint.keep_best,
                checkpoint_score_attribute=spec.checkpoint.monitor,
                checkpoint_score_order=spec.checkpoint.mode),
            worker_runtime_env=worker_runtime_env(spec.verbose),
            logging_config=console.train_logging_config(spec.verbose),
            callbacks=[WorkerRoster(RunLayout(run_dir).roster if local_path is None
                                    else str(RunLayout(run_dir).roster)),
                       *(callbacks or [])]),
    )
    trainer.orchestrator_run_dir = run_dir  # where its task verdict and roster land (fit_or_explain)
    return trainer


def fit_or_explain(trainer, spec: ExperimentSpec, what: str):
    """``trainer.fit()``; when it fails because the cluster shrank, say so in one line.

    A node that dies takes its workers with it; Ray Train restarts the group on
    what is left if it fits (``max_failures`` times). If it no longer fits, the
    error that reaches us is a startup timeout: name the lost resources instead.
    """
    from ray.train import TrainingFailedError

    try:
        with process.train_fit_interruptible(trainer):
            result = trainer.fit()
    except TrainingFailedError:
        scaling = spec.scaling
        check_fits(scaling.workers, WorkerShape(scaling.cpus_per_worker, scaling.gpus_per_worker),
                   f"{what} (restarting after a failure)")
        raise
    raise_task_error(result.metrics, getattr(trainer, "orchestrator_run_dir", None)
                     or RunLayout.at(Path(trainer.run_config.storage_path), trainer.run_config.name).root)
    return result


def raise_task_error(metrics: Optional[dict], run_dir: Optional[Path] = None) -> None:
    """The workers' verdict that the task cannot train (see worker.preflight), as a one-line UserError."""
    if metrics and metrics.get("task_error"):
        raise UserError(metrics["task_error"])
    verdict = RunLayout(run_dir).task_error if run_dir is not None else None
    if verdict is not None and verdict.exists():
        message = verdict.read_text()
        verdict.unlink()
        raise UserError(message)


def checkpoint_uri(checkpoint, run_dir) -> str:
    """A checkpoint's directory as the user names it: a local path, or a URI on object storage."""
    if isinstance(run_dir, storage_mod.RemotePath):
        return str(storage_mod.RemotePath(run_dir.fs, checkpoint.path, run_dir.scheme))
    return checkpoint.path


def best_of(best_checkpoints: list, monitor: str, mode: str):
    """(checkpoint, metrics) with the best ``monitor`` among Ray's kept checkpoints."""
    found = best(best_checkpoints, mode=mode, value=lambda cm: cm[1].get(monitor))
    return found if found is not None else (None, None)


def evaluate_checkpoints(spec: ExperimentSpec, task: TaskRef, final_checkpoint, best_checkpoint, data_ref,
                         export_path: Optional[str]) -> dict:
    """Run the before/after test evaluation (and export) in one Ray task with TensorFlow."""
    import ray

    @ray.remote(num_cpus=1, runtime_env=worker_runtime_env(spec.verbose))
    def evaluate(spec, task_ref, final_ckpt, best_ckpt, arrays, export):
        from orchestrator.worker.evaluate import evaluate_and_export

        with final_ckpt.as_directory() as final_dir, best_ckpt.as_directory() as best_dir:
            return evaluate_and_export(spec, task_ref, final_dir, best_dir, arrays, export)

    return ray.get(evaluate.remote(spec, task, final_checkpoint, best_checkpoint, data_ref, export_path))


def load_data(spec: ExperimentSpec) -> tuple[Resolved, Optional[object], dict]:
    """Find the task and load its arrays on the driver, before Ray starts, so bad input fails fast.

    Returns the task, its ``Arrays`` (None when workers read their own shards
    through the task's input function) and what to record about the data.
    """
    task = resolve(spec.task)
    if task.task.per_worker_input:
        return task, None, {"task": spec.task.name, "input": "input_fn (each worker reads its shard)"}
    arrays = task.task.arrays(task.params, spec.data.caps(), spec.task.name)
    return task, arrays, {"task": spec.task.name, **arrays.sizes()}


def run_training(spec: ExperimentSpec, *, resume: bool = False, overwrite: bool = False,
                 address: Optional[str] = None, tensorboard_url: Optional[str] = None) -> dict:
    """Train one run as ``spec`` says; returns what ``result.json`` holds.

    Input is checked before Ray starts (run name, storage, data, a resumable
    checkpoint); then Ray is joined (``address``) or started, and the cluster
    is checked to hold the workers.
    """
    name = spec.name or default_name("train")
    spec = spec.model_copy(update={"name": name})
    task, arrays, data_info = load_data(spec)  # before the run dir is touched: bad input changes nothing
    run_dir = prepare_run_dir(spec.storage, name, resume=resume, overwrite=overwrite)
    with replaced_run(run_dir):
        return _train(spec, task, arrays, data_info, run_dir, resume=resume, address=address,
                      tensorboard_url=tensorboard_url)


def _train(spec: ExperimentSpec, task: Resolved, arrays, data_info: dict, run_dir: Path, *, resume: bool,
           address: Optional[str], tensorboard_url: Optional[str]) -> dict:
    import ray

    name = spec.name
    remote = isinstance(run_dir, storage_mod.RemotePath)
    if resume and not remote:  # the checks read checkpoints with local file I/O (README: Where results go)
        check_resumable(run_dir)
    mlflow_server = tracking.check(spec.mlflow)  # before Ray: a dead server fails fast
    connect(address, spec.verbose)
    check_fits(spec.scaling.workers, WorkerShape(spec.scaling.cpus_per_worker, spec.scaling.gpus_per_worker),
               f"run {name!r}")
    # Once the cluster is known to hold the run (no MLflow run left RUNNING by a refusal), before it trains.
    tracker = tracking.start_for(mlflow_server, spec, "train", name, run_dir)
    data_ref = ray.put(arrays) if arrays is not None else None
    del arrays  # the object store holds it now
    layout = RunLayout(run_dir)
    tensorboard_dir = layout.tensorboard
    print(console.where_to_look("run", name, run_dir, dashboard_url(), tensorboard_dir, tensorboard_url),
          flush=True)
    started = time.time()
    trainer = make_trainer(spec, task.ref, data_ref, storage_path=run_dir.parent, name=name,
                           tensorboard_dir=tensorboard_dir if remote else str(tensorboard_dir))
    with tracking.ended_on_error(tracker):
        result = fit_or_explain(trainer, spec, f"run {name!r}")
    wall = time.time() - started

    final_checkpoint = result.checkpoint
    best_checkpoint, best_metrics = best_of(result.best_checkpoints or [], spec.checkpoint.monitor,
                                            spec.checkpoint.mode)
    if final_checkpoint is None or best_checkpoint is None:
        raise RuntimeError(f"run {name!r} reported no checkpoint; see the worker logs above")
    with final_checkpoint.as_directory() as directory:
        state = read_json(Path(directory) / STATE)
    history = state["history"]
    with tracking.ended_on_error(tracker):
        evaluation = evaluate_checkpoints(spec, task.ref, final_checkpoint, best_checkpoint, data_ref,
                                          layout.export if remote else str(layout.export))
    trained_seconds = sum(h.get("epoch_seconds", 0.0) for h in history)
    out = {
        "format_version": FORMAT_VERSION,
        "name": name,
        "status": "finished",
        "spec": spec.model_dump(),
        "data": data_info,
        "workers": read_json(layout.roster)["workers"] if layout.roster.exists() else None,
        "replicas": (result.metrics or {}).get("replicas"),
        "history": history,
        "epochs_run": len(history),
        "resumed_from_epochs": state.get("resumed_from_epochs", []),
        "stop_reason": state.get("stop_reason"),
        "stopped_epoch": len(history) if state.get("stop_reason") == "early_stopping" else None,
        "best": {"epoch": best_metrics["epoch"], spec.checkpoint.monitor: best_metrics[spec.checkpoint.monitor],
                 "checkpoint": checkpoint_uri(best_checkpoint, run_dir)},
        "final_checkpoint": checkpoint_uri(final_checkpoint, run_dir),
        "evaluation": evaluation,
        "tensorboard_dir": str(tensorboard_dir),
        "wall_seconds": wall,
        "samples_per_second": (data_info["train"] * len(history) / trained_seconds)
        if trained_seconds and "train" in data_info else None,
        "mlflow": tracker.describe() if tracker else None,
    }
    write_json_atomic(layout.result, out)
    if tracker:  # after the run's own files: tracking can never lose them
        tracker.log_run_result(out, layout.result)
    out["result_file"] = str(layout.result)
    return out
