"""The ``orchestrator`` command: distributed Keras training and search on Ray.

    orchestrator train --workers 2 --epochs 20                 # local Ray, full MNIST
    orchestrator train --config jobs/configs/train_mnist.yaml --name run1
    orchestrator train --name run1 --resume                    # after Ctrl-C or a crash
    orchestrator tune --config jobs/configs/tune_mnist.yaml --samples 16 --name my-search
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

from orchestrator.errors import EXIT_USAGE, UserError

EXIT_INTERRUPTED = 130


def _raise_keyboard_interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def _user_errors(fn: Callable) -> Callable:
    """Turn UserError into one line + exit 2, Ctrl-C into a resume hint + exit 130."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        # `ray job stop` and schedulers send SIGTERM: stop as cleanly as on Ctrl-C.
        signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
        try:
            return fn(*args, **kwargs)
        except UserError as err:
            click.echo(f"error: {err}", err=True)
            sys.exit(EXIT_USAGE)
        except KeyboardInterrupt:
            ctx = click.get_current_context()
            name = ctx.meta.get("run_name")
            # `orchestrator tune ...`, or `python -m jobs.tune_mnist ...` inside `ray job submit`.
            prog = ctx.find_root().info_name or "orchestrator"
            # Quoted: a path with a space must survive a copy-paste into the shell.
            again = shlex.join(a for a in sys.argv[1:] if a not in ("--resume", "--overwrite"))
            hint = (f"; resume with: {prog} {again} --name {name} --resume"
                    if name and "--name" not in sys.argv else
                    f"; resume with: {prog} {again} --resume" if name else "")
            click.echo(f"\ninterrupted: workers stopped, completed epochs and trials are kept{hint}",
                       err=True)
            sys.exit(EXIT_INTERRUPTED)

    return wrapper


def _common_options(fn: Callable, config_help: str = "YAML experiment spec (e.g. jobs/configs/train_mnist.yaml); "
                                                     "flags override it.") -> Callable:
    options = [
        click.option("--config", "config_path", type=click.Path(dir_okay=False), help=config_help),
        click.option("--gpus-per-worker", type=int, help="GPUs per worker; a worker mirrors over all of them."),
        click.option("--cpus-per-worker", type=float, help="CPUs per worker (default 1)."),
        click.option("--epochs", type=int, help="Maximum epochs (early stopping may end sooner)."),
        click.option("--batch-size", type=int, help="Batch size per replica; global = this x replicas."),
        click.option("--data", "data_path", type=click.Path(dir_okay=False),
                     help="MNIST .npz (default: the Keras cache, else download)."),
        click.option("--storage", help="Results directory (default: results)."),
        click.option("--name", help="Run name: results go to <storage>/<name>."),
        click.option("--seed", type=int, help="Random seed (default 42)."),
        click.option("--address", help="Ray cluster address (default: RAY_ADDRESS, else a local Ray)."),
        click.option("--resume", is_flag=True, help="Continue an interrupted run of this --name."),
        click.option("--overwrite", is_flag=True, help="Replace a finished run of this --name."),
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

    from orchestrator.engine.train import TENSORBOARD_DIR
    from orchestrator.tensorboard_server import maybe_serve

    logdir = Path(spec.storage).expanduser().resolve() / name / TENSORBOARD_DIR
    return maybe_serve(spec.tensorboard.serve, logdir, spec.tensorboard.port)


def _overrides(**flags: Any) -> dict[str, Any]:
    mapping = {
        "gpus_per_worker": "scaling.gpus_per_worker", "cpus_per_worker": "scaling.cpus_per_worker",
        "epochs": "training.epochs", "batch_size": "training.batch_size_per_worker",
        "data_path": "data.path", "storage": "storage", "name": "name", "seed": "seed",
        "workers": "scaling.workers", "verbose": "verbose",
        "tensorboard": "tensorboard.serve", "tensorboard_port": "tensorboard.port",
    }
    return {mapping[k]: v for k, v in flags.items() if k in mapping and v is not None and v is not False}


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


@cli.command(short_help="Train the MNIST MLP on Ray Train workers.")
@_common_options
@click.option("--workers", type=int, help="Training workers (Ray Train processes), default 2.")
@_user_errors
def train(config_path: Optional[str], address: Optional[str], resume: bool, overwrite: bool,
          **flags: Any) -> None:
    """Train the MNIST MLP on Ray Train workers; writes <storage>/<name>/result.json.

    \b
    Examples:
      orchestrator train --workers 2 --epochs 20
      orchestrator train --config jobs/configs/train_mnist.yaml --name run1 --tensorboard
      orchestrator train --name run1 --resume          # after Ctrl-C or a crash
    """
    from orchestrator.spec import load_spec

    spec = load_spec(config_path, _overrides(**flags))
    from orchestrator.engine.train import default_name, run_training

    spec = spec.model_copy(update={"name": spec.name or default_name("train")})
    click.get_current_context().meta["run_name"] = spec.name
    with _tensorboard(spec, spec.name) as url:
        result = run_training(spec, resume=resume, overwrite=overwrite, address=address, tensorboard_url=url)
    click.echo(format_train_summary(result))


@cli.command(short_help="Search hyperparameters with Ray Tune (ASHA, EarlyStopping).")
@functools.partial(_common_options, config_help="Required: a tune config, i.e. an experiment spec with a "
                   "`search:` section (e.g. jobs/configs/tune_mnist.yaml); flags override it.")
@click.option("--samples", type=int, help="Number of trials (default: search.samples).")
@click.option("--workers-per-trial", type=int, help="Training workers per trial.")
@click.option("--max-concurrent", type=int, help="Trials at once (default: as many as the cluster holds).")
@click.option("--algorithm", type=click.Choice(["random", "optuna"]), help="Search algorithm.")
@_user_errors
def tune(config_path: Optional[str], address: Optional[str], resume: bool, overwrite: bool,
         samples: Optional[int], workers_per_trial: Optional[int], max_concurrent: Optional[int],
         algorithm: Optional[str], **flags: Any) -> None:
    """Search LR schedules, base LR and patience with Ray Tune; writes <storage>/<name>/summary.json.

    \b
    Examples:
      orchestrator tune --config jobs/configs/tune_mnist.yaml --name my-search
      orchestrator tune --config jobs/configs/tune_mnist.yaml --samples 16 --workers-per-trial 2
      orchestrator tune --config jobs/configs/tune_mnist.yaml --name my-search --resume
    """
    from orchestrator.search_space import load_search
    from orchestrator.spec import read_yaml, set_path

    if not config_path:
        raise UserError("tune needs --config FILE with a `search:` section, "
                        "e.g. --config jobs/configs/tune_mnist.yaml")
    config = read_yaml(config_path)
    for dotted, value in _overrides(**flags).items():
        config = set_path(config, dotted, value)
    for dotted, value in {"search.workers_per_trial": workers_per_trial,
                          "search.algorithm": algorithm}.items():
        if value is not None:
            config = set_path(config, dotted, value)
    search = load_search(config)
    from orchestrator.engine.train import default_name
    from orchestrator.engine.tune import run_search

    name = search.base.name or default_name("search")
    click.get_current_context().meta["run_name"] = name
    with _tensorboard(search.base, name) as url:
        summary = run_search(search, name=name, storage=search.base.storage, samples=samples,
                             max_concurrent=max_concurrent, resume=resume, overwrite=overwrite,
                             address=address, tensorboard_url=url)
    click.echo(format_tune_summary(summary, with_trials=search.base.verbose))


def _console():
    """rich's console on stdout; when not a terminal, wide enough that table rows stay one line each."""
    import shutil

    from rich.console import Console

    tty = sys.stdout.isatty()
    return Console(width=None if tty else max(160, shutil.get_terminal_size().columns), highlight=False,
                   soft_wrap=not tty)


@cli.command("list", short_help="List past runs and searches (reads files only).")
@click.option("--storage", default="results", show_default=True, help="Results directory to look in.")
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
@click.option("--storage", default="results", show_default=True, help="Results directory to look in.")
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
@click.option("--storage", default="results", show_default=True, help="Results directory to look in.")
@click.option("--port", type=int, help="Port (default: 6006 if free, else any free port).")
def tensorboard_command(name: str, storage: str, port: Optional[int]) -> None:
    """Serve a run's or search's TensorBoard on 127.0.0.1 until Ctrl-C.

    \b
    Examples:
      orchestrator tensorboard my-search
      orchestrator tensorboard run1 --storage /mnt/efs/orchestrator --port 6007
    """
    from orchestrator.engine.train import TENSORBOARD_DIR
    from orchestrator.runs import find_run
    from orchestrator.tensorboard_server import serve

    signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)  # stop the server on `kill` too
    try:
        info = find_run(storage, name)
        with serve(info.path / TENSORBOARD_DIR, port) as url:
            click.echo(f"tensorboard: {url} (serving {info.path / TENSORBOARD_DIR}; Ctrl-C to stop)")
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
    best = summary.get("best_trial")
    if best:
        lines.append(f"best trial {best['trial_id']}: {metric} {best[f'best_{metric}']:.4f} with {best['config']}")
    ev = summary.get("evaluation")
    if ev:
        lines.append(f"  test accuracy: final weights {ev['final_weights']['accuracy']:.4f}, "
                     f"best checkpoint reloaded {ev['best_checkpoint_reloaded']['accuracy']:.4f}")
        lines.append(f"  best model:  {ev.get('exported_model')}")
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
    ]
    return "\n".join(lines)


def main() -> None:
    cli(prog_name="orchestrator")


if __name__ == "__main__":
    main()
