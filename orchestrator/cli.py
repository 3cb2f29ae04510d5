"""The ``orchestrator`` command: distributed Keras training and search on Ray.

    orchestrator train --workers 2 --epochs 20                 # local Ray, the tutorial's MNIST MLP
    orchestrator train --task mnist_cnn --workers 2            # another built-in task
    orchestrator train --task my_task.py:task --task-param units=256   # your own model and data
    orchestrator train --config jobs/configs/train_mnist.yaml --name run1
    orchestrator train --name run1 --resume                    # after Ctrl-C or a crash
    orchestrator tune --config jobs/configs/tune_mnist.yaml --samples 16 --name my-search
    orchestrator tune --config jobs/configs/tune_mnist.yaml --export-top 3 --mlflow-uri http://127.0.0.1:5000
    tensorboard --logdir results/my-search/tensorboard

Flags override the YAML config. Mistakes in input end with one line on stderr
and exit status 2; Ctrl-C stops the workers and says how to resume.
"""

from __future__ import annotations

import functools
import shlex
import signal
import sys
from pathlib import Path
from typing import Any, Callable, Optional

import click

from orchestrator import process
from orchestrator.errors import EXIT_USAGE, UserError
from orchestrator.search_algorithms import ALGORITHMS
from orchestrator.storage import is_uri, local_copy, location

EXIT_INTERRUPTED = 130


def _resume_hint() -> str:
    """``; resume with: <the command as typed> --resume`` (empty before a run name is known)."""
    ctx = click.get_current_context()
    name = ctx.meta.get("run_name")
    # `orchestrator tune ...`, or `python -m jobs.tune_mnist ...` inside `ray job submit`.
    prog = ctx.find_root().info_name or "orchestrator"
    # Quoted: a path with a space must survive a copy-paste into the shell.
    again = shlex.join(a for a in sys.argv[1:] if a not in ("--resume", "--overwrite"))
    return (f"; resume with: {prog} {again} --name {name} --resume"
            if name and "--name" not in sys.argv else
            f"; resume with: {prog} {again} --resume" if name else "")


def _user_errors(fn: Callable) -> Callable:
    """Turn UserError into one line + exit 2, Ctrl-C into a resume hint + exit 130."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        process.sigterm_as_ctrl_c()  # `ray job stop` and schedulers send SIGTERM
        try:
            return fn(*args, **kwargs)
        except UserError as err:
            click.echo(f"error: {err}", err=True)
            sys.exit(EXIT_USAGE)
        except KeyboardInterrupt:
            click.echo(f"\ninterrupted: workers stopped, completed epochs and trials are kept{_resume_hint()}",
                       err=True)
            sys.exit(EXIT_INTERRUPTED)
        except Exception as exc:
            # A full or read-only storage, in whatever shape it reached the driver: one line, exit 2.
            from orchestrator.storage_errors import NO_SPACE, READ_ONLY, file_named, storage_cause

            run_dir = click.get_current_context().meta.get("run_dir")
            cause = storage_cause(exc, run_dir) if run_dir else None
            if not cause:
                raise
            where = file_named(exc, run_dir) or run_dir
            # Ray's log forwarding flushes the workers' tracebacks when Ray shuts down: before
            # this line, so that it is the last one.
            import ray

            if ray.is_initialized():
                ray.shutdown()
            fix = ("make it writable" if cause == READ_ONLY else
                   "free space" if cause == NO_SPACE else "raise the quota or free space")
            code = {NO_SPACE: "ENOSPC", READ_ONLY: "EROFS"}.get(cause, "EDQUOT")
            hint = _resume_hint().replace("; resume with:", ", then resume with:") or ", then rerun with --resume"
            click.echo(f"error: cannot write {where}: {cause} ({code}); the last complete checkpoint "
                       f"and result files are kept; {fix}{hint}", err=True)
            sys.exit(EXIT_USAGE)
        finally:
            # The run's name is free again as soon as the command ends, however it ends.
            from orchestrator import ownership

            ownership.release_all()

    return wrapper


def _common_options(fn: Callable, config_help: str = "YAML experiment spec (e.g. jobs/configs/train_mnist.yaml); "
                                                     "flags override it.") -> Callable:
    options = [
        click.option("--config", "config_path", type=click.Path(dir_okay=False), help=config_help),
        click.option("--gpus-per-worker", type=int, help="GPUs per worker; a worker mirrors over all of them."),
        click.option("--cpus-per-worker", type=float, help="CPUs per worker (default 1)."),
        click.option("--epochs", type=int, help="Maximum epochs (early stopping may end sooner)."),
        click.option("--batch-size", type=int, help="Batch size per replica; global = this x replicas."),
        click.option("--task", "task_name",
                     help="What to train: a built-in (mnist_mlp, the default; mnist_cnn), "
                          "package.module:attr, or path/file.py:attr."),
        click.option("--task-param", "task_params", multiple=True, metavar="KEY=VALUE",
                     help="Set a task parameter (repeatable), e.g. --task-param dropout=0.3."),
        click.option("--data", "data_path", type=click.Path(dir_okay=False),
                     help="The task's `path` parameter: for the MNIST tasks, an mnist.npz "
                          "(default: the Keras cache, else download)."),
        click.option("--storage", help="Results directory, or object storage URI such as s3://bucket/prefix "
                                       "(default: results)."),
        click.option("--name", help="Run name: results go to <storage>/<name>."),
        click.option("--seed", type=int, help="Random seed (default 42)."),
        click.option("--address", help="Ray cluster address (default: RAY_ADDRESS, else a local Ray)."),
        click.option("--resume", is_flag=True,
                     help="Continue an interrupted run of this --name (a dead owner's claim on it is taken over)."),
        click.option("--overwrite", is_flag=True, help="Replace a finished run of this --name."),
        click.option("--mlflow-uri", help="Track in MLflow at this server (default with an `mlflow:` "
                                          "config section: MLFLOW_TRACKING_URI). Needs pip install mlflow."),
        click.option("--mlflow-optional", is_flag=True,
                     help="An unreachable MLflow server is a warning (train untracked), not an error."),
        click.option("--tensorboard", is_flag=True, default=None,
                     help="Serve TensorBoard live on 127.0.0.1 while it runs (config: `tensorboard: {serve: true}`)."),
        click.option("--tensorboard-port", type=int,
                     help="Port of that server (default: 6006 if free, else any free port)."),
        click.option("-v", "--verbose", is_flag=True, default=None,
                     help="Show Ray's and TensorFlow's own logs (default: one line per epoch, "
                          "warnings and errors; config: `verbose: true`)."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def _tensorboard(spec, name: str):
    """A live TensorBoard over the run's central root while the block runs, if ``tensorboard.serve``."""
    from pathlib import Path

    from orchestrator.layout import RunLayout
    from orchestrator.tensorboard_server import maybe_serve

    if spec.tensorboard.serve and is_uri(spec.storage):
        raise UserError(f"--tensorboard serves a local TensorBoard root, and storage {spec.storage!r} is object "
                        f"storage; watch it with `orchestrator tensorboard {name} --storage {spec.storage}` "
                        "(a copy synced at its start) instead")
    logdir = RunLayout.at(Path(spec.storage).expanduser().resolve(), name).tensorboard
    return maybe_serve(spec.tensorboard.serve, logdir, spec.tensorboard.port)


def _overrides(**flags: Any) -> dict[str, Any]:
    mapping = {
        "gpus_per_worker": "scaling.gpus_per_worker", "cpus_per_worker": "scaling.cpus_per_worker",
        "epochs": "training.epochs", "batch_size": "training.batch_size_per_worker",
        "task_name": "task.name", "data_path": "task.path", "storage": "storage", "name": "name",
        "seed": "seed", "workers": "scaling.workers", "mlflow_uri": "mlflow.tracking_uri",
        "mlflow_optional": "mlflow.optional", "verbose": "verbose",
        "tensorboard": "tensorboard.serve", "tensorboard_port": "tensorboard.port",
    }
    # An unset flag (None, or False for --mlflow-optional) must not create an `mlflow:` section.
    out = {mapping[k]: v for k, v in flags.items() if k in mapping and v is not None and v is not False}
    for item in flags.get("task_params") or ():
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UserError(f"--task-param {item!r}: expected KEY=VALUE (valid example: --task-param dropout=0.3)")
        out[f"task.{key.strip()}"] = _scalar(value)
    return out


def _scalar(text: str) -> Any:
    """A command-line value as YAML reads it: 0.3 -> float, [64,32] -> list, none -> None."""
    import yaml

    try:
        return yaml.safe_load(text) if text.strip() else text
    except yaml.YAMLError:
        return text


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="keras-ray-orchestrator")
def cli() -> None:
    """Distributed Keras (tf-keras, MultiWorkerMirroredStrategy) training and search on Ray.

    \b
    Examples:
      orchestrator train --workers 2 --epochs 20
      orchestrator tune --config jobs/configs/tune_mnist.yaml --name my-search
      orchestrator list
    """


@cli.command(short_help="Train a task (default: the MNIST MLP) on Ray Train workers.")
@_common_options
@click.option("--workers", type=int, help="Training workers (Ray Train processes), default 2.")
@_user_errors
def train(config_path: Optional[str], address: Optional[str], resume: bool, overwrite: bool,
          **flags: Any) -> None:
    """Train a task (default: the tutorial's MNIST MLP) on Ray Train workers; writes <storage>/<name>/result.json.

    \b
    Examples:
      orchestrator train --workers 2 --epochs 20
      orchestrator train --task my_task.py:task --task-param units=256 --name run1 --tensorboard
      orchestrator train --name run1 --resume          # after Ctrl-C or a crash
    """
    from orchestrator.spec import load_spec

    spec = load_spec(config_path, _overrides(**flags))
    from orchestrator.engine.train import default_name, run_training

    spec = spec.model_copy(update={"name": spec.name or default_name("train")})
    click.get_current_context().meta["run_name"] = spec.name
    if not is_uri(spec.storage):  # the full-disk diagnosis (storage_errors) probes a local filesystem
        click.get_current_context().meta["run_dir"] = str(Path(spec.storage).expanduser().resolve() / spec.name)
    with _tensorboard(spec, spec.name) as url:
        result = run_training(spec, resume=resume, overwrite=overwrite, address=address, tensorboard_url=url)
    click.echo(format_train_summary(result))


@cli.command(short_help="Search hyperparameters with Ray Tune (ASHA, PBT, EarlyStopping).")
@functools.partial(_common_options, config_help="Required: a tune config, i.e. an experiment spec with a "
                   "`search:` section (e.g. jobs/configs/tune_mnist.yaml); flags override it.")
@click.option("--samples", type=int, help="Number of trials (default: search.samples).")
@click.option("--workers-per-trial", type=int, help="Training workers per trial.")
@click.option("--max-concurrent", type=int, help="Trials at once (default: as many as the cluster holds).")
@click.option("--algorithm", type=click.Choice(list(ALGORITHMS)),
              help="Search algorithm: " + "; ".join(f"{name}: {a.help}" for name, a in ALGORITHMS.items()) + ".")
@click.option("--stop-at", "stop_at", multiple=True, metavar="METRIC=VALUE",
              help="End the search once any trial reaches this, e.g. val_accuracy=0.98 (repeatable).")
@click.option("--export-top", type=int, metavar="K",
              help="Keep the K best trials' models (Keras + SavedModel, config, test evaluation) in top_models/.")
@click.option("--fast-path/--no-fast-path", "fast_path", default=None,
              help="Train one-worker trials inside their reused Tune actor (default: search.fast_path, true); "
                   "--no-fast-path runs every trial under Ray Train.")
@_user_errors
def tune(config_path: Optional[str], address: Optional[str], resume: bool, overwrite: bool,
         samples: Optional[int], workers_per_trial: Optional[int], max_concurrent: Optional[int],
         algorithm: Optional[str], stop_at: tuple, export_top: Optional[int], fast_path: Optional[bool],
         **flags: Any) -> None:
    """Search LR schedules, base LR and patience with Ray Tune; writes <storage>/<name>/summary.json.

    With --algorithm pbt (or pb2), a population trains side by side and the winner's
    LR of every epoch is written as best_schedule.yaml, a config for `orchestrator train`.

    \b
    Examples:
      orchestrator tune --config jobs/configs/tune_mnist.yaml --name my-search
      orchestrator tune --config jobs/configs/tune_mnist.yaml --samples 16 --workers-per-trial 2
      orchestrator tune --config jobs/configs/pbt_mnist.yaml --name pbt1 --stop-at val_accuracy=0.98
    """
    from orchestrator.search_space import load_search
    from orchestrator.spec import load_config

    if not config_path:
        raise UserError("tune needs --config FILE with a `search:` section, "
                        "e.g. --config jobs/configs/tune_mnist.yaml")
    config = load_config(config_path, {
        **_overrides(**flags), "search.workers_per_trial": workers_per_trial, "search.algorithm": algorithm,
        "search.samples": samples, "search.stop_at": _parse_stop_at(stop_at), "search.export_top": export_top,
        "search.fast_path": fast_path})
    search = load_search(config)
    from orchestrator.engine.train import default_name
    from orchestrator.engine.tune import run_search

    name = search.base.name or default_name("search")
    click.get_current_context().meta["run_name"] = name
    if not is_uri(search.base.storage):
        click.get_current_context().meta["run_dir"] = str(Path(search.base.storage).expanduser().resolve() / name)
    with _tensorboard(search.base, name) as url:
        summary = run_search(search, name=name, storage=search.base.storage, samples=samples,
                             max_concurrent=max_concurrent, resume=resume, overwrite=overwrite,
                             address=address, tensorboard_url=url)
    click.echo(format_tune_summary(summary, with_trials=search.base.verbose))


def _parse_stop_at(pairs: tuple) -> Optional[dict]:
    """``("val_accuracy=0.98",)`` -> ``{"val_accuracy": 0.98}``; None when not given."""
    if not pairs:
        return None
    out = {}
    for pair in pairs:
        metric, sep, value = pair.partition("=")
        try:
            out[metric.strip()] = float(value)
        except ValueError:
            sep = ""
        if not sep:
            raise UserError(f"--stop-at {pair!r}: give METRIC=VALUE, e.g. --stop-at val_accuracy=0.98")
    return out
def _console():
    """rich's console on stdout; when not a terminal, wide enough that table rows stay one line each."""
    import shutil

    from rich.console import Console

    tty = sys.stdout.isatty()
    return Console(width=None if tty else max(160, shutil.get_terminal_size().columns), highlight=False,
                   soft_wrap=not tty)


@cli.command("list", short_help="List past runs and searches (reads files only).")
@click.option("--storage", default="results", show_default=True, help="Results directory (or s3://bucket/prefix) to look in.")
@_user_errors
def list_command(storage: str) -> None:
    """List past runs and searches: status, date, best val_loss, accuracy (reads files only).

    \b
    Examples:
      orchestrator list
      orchestrator list --storage /mnt/efs/orchestrator
    """
    from orchestrator.runs import list_runs, list_table

    runs = list_runs(storage)
    if not runs:
        click.echo(f"no runs or searches under {storage}")
        return
    _console().print(list_table(runs))


@cli.command(short_help="Show a run's epochs or a search's trials.")
@click.argument("name")
@click.option("--storage", default="results", show_default=True, help="Results directory (or s3://bucket/prefix) to look in.")
@_user_errors
def show(name: str, storage: str) -> None:
    """Show one run's epochs or one search's trials, from its files (no Ray, no TensorFlow).

    \b
    Examples:
      orchestrator show train-20261127-101500
      orchestrator show my-search --storage /mnt/efs/orchestrator
    """
    from orchestrator.runs import find_run, show_renderables

    console = _console()
    for renderable in show_renderables(find_run(storage, name)):
        console.print(renderable)


@cli.command("tensorboard", short_help="Serve a run's or search's TensorBoard until Ctrl-C.")
@click.argument("name")
@click.option("--storage", default="results", show_default=True, help="Results directory (or s3://bucket/prefix) to look in.")
@click.option("--port", type=int, help="Port (default: 6006 if free, else any free port).")
def tensorboard_command(name: str, storage: str, port: Optional[int]) -> None:
    """Serve a run's or search's TensorBoard on 127.0.0.1 until Ctrl-C.

    \b
    Examples:
      orchestrator tensorboard my-search
      orchestrator tensorboard run1 --storage /mnt/efs/orchestrator --port 6007
    """
    from orchestrator.layout import RunLayout
    from orchestrator.runs import find_run
    from orchestrator.tensorboard_server import serve

    process.sigterm_as_ctrl_c()  # stop the server on `kill` too
    try:
        info = find_run(storage, name)
        logdir = RunLayout(info.path).tensorboard
        if is_uri(storage):  # TensorBoard reads a local copy of the events (TensorFlow cannot read s3://)
            logdir = local_copy(RunLayout.at(location(storage), name).tensorboard)
        with serve(logdir, port) as url:
            click.echo(f"tensorboard: {url} (serving {logdir}; Ctrl-C to stop)")
            while True:
                signal.pause()
    except UserError as err:
        click.echo(f"error: {err}", err=True)
        sys.exit(EXIT_USAGE)
    except KeyboardInterrupt:
        click.echo("tensorboard stopped")


def format_tune_summary(summary: dict, with_trials: bool = True) -> str:
    """The end of a search; ``with_trials`` False where the live table has just listed them."""
    metric = summary["metric"]
    lines = [f"search {summary['name']}: {summary['trials']} trial(s) in {summary['wall_seconds']:.0f} s"]
    for row in summary["results"] if with_trials else []:
        value = row.get(f"best_{metric}")
        shown = f"{value:.4f}" if value is not None else "-"
        lines.append(f"  {row['trial_id']:<14} {metric} {shown:<8} epochs {row['epochs_run']:<3} "
                     f"{row['stop_reason']}")
        for copy in row.get("copies", []):
            lines.append(f"  {'':<14} copied {copy['from']} at epoch {copy['epoch']}, then {copy['config']}")
    hit = (summary.get("stop_at") or {}).get("reached")
    if hit:
        lines.append(f"stopped at the target {summary['stop_at']['targets']}: trial {hit['trial_id']} reached "
                     f"{hit['metrics']} at epoch {hit['epoch']}, {hit['seconds_since_start']:.0f} s in")
    best = summary.get("best_trial")
    if best:
        lines.append(f"best trial {best['trial_id']}: {metric} {best[f'best_{metric}']:.4f} with {best['config']}")
    ev = summary.get("evaluation")
    if ev:
        lines.append(f"  test accuracy: final weights {ev['final_weights']['accuracy']:.4f}, "
                     f"best checkpoint reloaded {ev['best_checkpoint_reloaded']['accuracy']:.4f}")
        lines.append(f"  best model:  {ev.get('exported_model')}")
        lines.append(f"  serving:     {ev.get('saved_model')}")
    if summary.get("best_schedule"):
        lines.append(f"  its LR per epoch: {summary['best_schedule']} (orchestrator train --config it)")
    for top in summary.get("top_models") or []:
        lines.append(f"  top {top['rank']}: {top['trial_id']} test accuracy "
                     f"{top['evaluation']['best_checkpoint_reloaded']['accuracy']:.4f}  {top['dir']}")
    lines += [f"  summary:     {summary['summary_file']}",
              f"  curves:      {summary['plot']}",
              f"  tensorboard: tensorboard --logdir {summary['tensorboard_dir']}"]
    return "\n".join(lines)


def format_train_summary(result: dict) -> str:
    best = result["best"]
    ev = result["evaluation"]
    monitor = next(k for k in best if k not in ("epoch", "checkpoint"))
    run_dir = Path(result["result_file"]).parent
    lines = [
        f"run {result['name']}: {result['epochs_run']} epoch(s), stopped by {result['stop_reason']}; "
        f"best epoch {best['epoch']}: {monitor} {best[monitor]:.4f}; "
        f"{result['wall_seconds']:.1f} s, {result['samples_per_second'] or 0:.0f} samples/s",
        f"  test accuracy: final weights {ev['final_weights']['accuracy']:.4f}, "
        f"best checkpoint reloaded {ev['best_checkpoint_reloaded']['accuracy']:.4f}",
        # TensorBoard's command is in the run's first lines; `orchestrator show NAME` repeats it.
        f"  results: {run_dir}/ (result.json, {Path(ev.get('exported_model') or 'best_model.keras').name})",
        f"  serving: {ev.get('saved_model')} (TF SavedModel)",
    ]
    return "\n".join(lines)


def main() -> None:
    cli(prog_name="orchestrator")


if __name__ == "__main__":
    main()
