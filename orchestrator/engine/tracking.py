"""MLflow tracking of runs and searches, from the driver (no TensorFlow, nothing in the workers).

On when the spec has an ``mlflow:`` section (``--mlflow-uri URI`` makes one);
the server is ``mlflow.tracking_uri``, else ``MLFLOW_TRACKING_URI``::

    orchestrator train --mlflow-uri http://127.0.0.1:5000            # one MLflow run
    orchestrator tune --config c.yaml --mlflow-uri http://...:5000    # a parent run, one nested run per trial

What goes where:

- a training run is one MLflow run: the spec as params (``training.epochs``,
  ``optimizer.learning_rate``, ...), every epoch's loss, accuracy, val_loss,
  val_accuracy and learning_rate (step = epoch), ``stop_reason`` as a tag, the
  before/after test evaluation as ``test_final_*`` / ``test_best_*`` metrics, and
  ``best_model.keras``, the SavedModel and ``result.json`` as artifacts;
- a search is a parent run (base spec and search settings as params, the best
  trial's scores, evaluation and model) with one nested run per trial (its spec
  and hyperparameters as params, its epochs live from Ray Tune through
  :mod:`orchestrator.engine.mlflow_tune`, its stop reason and best scores at the end).

The server is checked before anything trains: unreachable, the command stops
with one line (exit 2), or with ``optional`` warns and trains untracked. A
server lost mid-run never stops the run nor touches its files: tracking stops
with one warning naming the server, what failed, and where the files are.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional

from orchestrator.errors import UserError

EPOCH_METRICS = ("loss", "accuracy", "val_loss", "val_accuracy", "learning_rate")
DEFAULT_EXPERIMENT = "orchestrator"
PARENT_TAG = "mlflow.parentRunId"  # MLflow's own tag for nested runs
# A dead server must cost seconds, not MLflow's default of 7 retries with backoff and 120 s timeouts.
CLIENT_ENV_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
                       "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}


def flatten(data: dict, prefix: str = "") -> dict[str, str]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": "1"}``: MLflow params are flat strings."""
    out: dict[str, str] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = str(value)
    return out


def short_error(exc: BaseException) -> str:
    """One line: MLflow's connection errors span many lines and repeat the URL."""
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:240]}{'...' if len(text) > 240 else ''}"


def warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr, flush=True)



def _local(path) -> str:
    """A file or directory to upload to MLflow, copied from object storage first when it lives there."""
    from orchestrator.storage import is_uri, local_copy

    return str(local_copy(str(path))) if is_uri(str(path)) else str(path)


def _parent(path: str) -> str:
    return path.rsplit("/", 1)[0] if "://" in path else str(Path(path).parent)


class Tracker:
    """One MLflow run; after the first failure it warns once and every call is a no-op.

    Args:
        client: an ``mlflow.MlflowClient`` for ``uri``.
        uri: the tracking URI.
        experiment_id: the MLflow experiment.
        run_id: this tracker's run.
        run_dir: the run's own directory, named in warnings.
    """

    def __init__(self, client, uri: str, experiment_id: str, run_id: str, run_dir: Path):
        self.client, self.uri, self.experiment_id, self.run_id = client, uri, experiment_id, run_id
        self.run_dir = run_dir
        self.failed: Optional[str] = None

    @property
    def active(self) -> bool:
        return self.failed is None

    def describe(self) -> dict:
        return {"tracking_uri": self.uri, "experiment_id": self.experiment_id, "run_id": self.run_id}

    def safely(self, what: str, fn) -> None:
        """``fn()`` unless tracking already failed; a failure becomes one warning, and the run goes on."""
        if not self.active:
            return
        try:
            fn()
        except Exception as exc:  # any client, HTTP or server error
            self.failed = f"{what}: {short_error(exc)}"
            warn(f"MLflow tracking at {self.uri} failed while {what} ({short_error(exc)}); "
                 f"tracking stopped, the run goes on and its own files are complete in {self.run_dir}")

    # ---- logging, each call one or a few batched requests
    def log_params(self, params: dict, run_id: Optional[str] = None) -> None:
        from mlflow.entities import Param

        items = [Param(k, v[:6000]) for k, v in params.items()]
        for start in range(0, len(items), 100):  # MLflow's limit per batch
            self.client.log_batch(run_id or self.run_id, params=items[start:start + 100])

    def log_metrics(self, metrics: dict, step: int = 0, run_id: Optional[str] = None,
                    timestamp: Optional[float] = None) -> None:
        from mlflow.entities import Metric

        millis = int((timestamp or time.time()) * 1000)
        items = [Metric(k, float(v), millis, step) for k, v in metrics.items() if v is not None]
        for start in range(0, len(items), 1000):
            self.client.log_batch(run_id or self.run_id, metrics=items[start:start + 1000])

    def log_history(self, history: list[dict], run_id: Optional[str] = None) -> None:
        from mlflow.entities import Metric

        items = [Metric(k, float(row[k]), int((row.get("started_at") or time.time()) * 1000), int(row["epoch"]))
                 for row in history for k in EPOCH_METRICS if row.get(k) is not None]
        for start in range(0, len(items), 1000):
            self.client.log_batch(run_id or self.run_id, metrics=items[start:start + 1000])

    def log_evaluation(self, evaluation: Optional[dict], run_id: Optional[str] = None) -> None:
        if not evaluation:
            return
        final, best = evaluation["final_weights"], evaluation["best_checkpoint_reloaded"]
        self.log_metrics({"test_final_loss": final["loss"], "test_final_accuracy": final["accuracy"],
                          "test_best_loss": best["loss"], "test_best_accuracy": best["accuracy"]}, run_id=run_id)

    def log_model(self, evaluation: Optional[dict], run_id: Optional[str] = None) -> None:
        """``best_model.keras`` and its SavedModel under the artifact path ``model/``."""
        if not evaluation or not evaluation.get("exported_model"):
            return
        run_id = run_id or self.run_id
        self.client.log_artifact(run_id, _local(evaluation["exported_model"]), "model")
        if evaluation.get("saved_model"):
            self.client.log_artifacts(run_id, _local(_parent(evaluation["saved_model"])), "model/saved_model")

    def finish(self, status: str = "FINISHED", run_id: Optional[str] = None) -> None:
        self.client.set_terminated(run_id or self.run_id, status)

    # ---- what a run and a search log at their end
    def log_run_result(self, result: dict, result_file: Path) -> None:
        """A finished training run: history, stop reason, evaluation, model, result.json; then FINISHED."""
        def scores():
            self.log_history(result["history"])
            self.client.set_tag(self.run_id, "stop_reason", str(result.get("stop_reason")))
            self.log_metrics({"epochs_run": result["epochs_run"], "best_epoch": result["best"]["epoch"],
                              **{f"best_{k}": v for k, v in result["best"].items() if k not in ("epoch", "checkpoint")}})
            self.log_evaluation(result.get("evaluation"))

        def files():
            self.log_model(result.get("evaluation"))
            self.client.log_artifact(self.run_id, _local(result_file))

        self.safely("logging the run's history and evaluation", scores)
        self.safely("uploading the best model", files)
        self.safely("ending the MLflow run", self.finish)

    def log_search_summary(self, summary: dict, summary_file: Path) -> None:
        """A finished search: each trial's nested run completed, the parent's best scores and model."""
        metric = summary["metric"]
        def trials():
            nested = self.trial_runs()
            top = {t["trial_id"]: t for t in summary.get("top_models") or []}
            for row in summary["results"]:
                run_id = nested.get(row["trial_id"])
                if run_id is None:  # not seen live (e.g. a resumed search): logged from the summary
                    run_id = self.start_trial_run(row["trial_id"], row.get("label"), row["config"])
                    self.log_history(row["history"], run_id=run_id)
                    self.finish("FINISHED" if row["status"] != "ERROR" else "FAILED", run_id=run_id)
                self.client.set_tag(run_id, "stop_reason", str(row["stop_reason"]))
                self.log_metrics({"epochs_run": row["epochs_run"], "best_epoch": row.get("best_epoch"),
                                  f"best_{metric}": row.get(f"best_{metric}"),
                                  "best_val_accuracy": row.get("best_val_accuracy")}, run_id=run_id)
                if row["trial_id"] in top:
                    self.log_evaluation(top[row["trial_id"]]["evaluation"], run_id=run_id)
                    self.log_model(top[row["trial_id"]]["evaluation"], run_id=run_id)

        def best():
            trial = summary.get("best_trial")
            if trial:
                self.client.set_tag(self.run_id, "best_trial", trial["trial_id"])
                self.log_metrics({f"best_{metric}": trial[f"best_{metric}"],
                                  "best_val_accuracy": trial.get("best_val_accuracy")})
            self.log_evaluation(summary.get("evaluation"))

        def files():
            self.log_model(summary.get("evaluation"))
            self.client.log_artifact(self.run_id, _local(summary_file))
            if summary.get("plot"):
                self.client.log_artifact(self.run_id, _local(summary["plot"]))

        self.safely("logging the trials", trials)
        self.safely("logging the search's best trial", best)
        self.safely("uploading the best model", files)
        self.safely("ending the MLflow run", self.finish)

    def start_trial_run(self, trial_id: str, label: Optional[str], params: dict) -> str:
        run = self.client.create_run(self.experiment_id, run_name=label or trial_id,
                                     tags={PARENT_TAG: self.run_id, "trial_id": trial_id})
        self.log_params(flatten(params), run_id=run.info.run_id)
        return run.info.run_id

    def trial_runs(self) -> dict[str, str]:
        """{trial_id: MLflow run id} of this search's nested runs."""
        runs = self.client.search_runs([self.experiment_id], f"tags.`{PARENT_TAG}` = '{self.run_id}'",
                                       max_results=10000)
        return {r.data.tags["trial_id"]: r.info.run_id for r in runs if "trial_id" in r.data.tags}


def _client(uri: str):
    try:
        import mlflow
    except ImportError:
        raise UserError("MLflow tracking needs the mlflow package: pip install -e '.[mlflow]' "
                        "(or pip install mlflow)") from None
    for key, value in CLIENT_ENV_DEFAULTS.items():
        os.environ.setdefault(key, value)
    return mlflow.MlflowClient(tracking_uri=uri)


@dataclass(frozen=True)
class Server:
    """A tracking server that answered, and the experiment to log into."""

    client: Any
    uri: str
    experiment_id: str


def check(config) -> Optional[Server]:
    """Before Ray starts: reach the server and find (or create) the experiment.

    Returns None when tracking is off, or optional and the server is down (a
    warning); an unreachable server is otherwise a UserError (one line, exit 2).

    Args:
        config: the spec's ``mlflow`` section (``MlflowSpec``), or None for no tracking.
    """
    if config is None:
        return None
    uri = config.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        raise UserError("mlflow: no tracking server given; set mlflow.tracking_uri, pass --mlflow-uri URI, "
                        "or export MLFLOW_TRACKING_URI (e.g. http://127.0.0.1:5000)")
    client = _client(uri)
    experiment = config.experiment or os.environ.get("MLFLOW_EXPERIMENT_NAME") or DEFAULT_EXPERIMENT
    try:
        found = client.get_experiment_by_name(experiment)
        experiment_id = found.experiment_id if found else client.create_experiment(experiment)
    except Exception as exc:
        if config.optional:
            warn(f"MLflow tracking server {uri} is unreachable ({short_error(exc)}); training without tracking")
            return None
        raise UserError(f"MLflow tracking server {uri} is unreachable ({short_error(exc)}); start it, fix "
                        "--mlflow-uri / mlflow.tracking_uri, or pass --mlflow-optional to train without it") from None
    return Server(client, uri, experiment_id)


def start(server: Optional[Server], *, run_name: str, params: dict, tags: dict, run_dir: Path) -> Optional[Tracker]:
    """Open this run's MLflow run on a :func:`check` ed server; None when tracking is off.

    Called once the cluster is known to hold the run, so a refused run leaves no
    RUNNING MLflow run. A server lost since :func:`check` is a warning: the run goes on untracked.

    Args:
        server: what :func:`check` returned.
        run_name: the MLflow run name (the orchestrator run's name).
        params: flat params to log now.
        tags: tags of the run.
        run_dir: the run's own directory, named in warnings.
    """
    if server is None:
        return None
    try:
        run = server.client.create_run(server.experiment_id, run_name=run_name, tags=tags)
    except Exception as exc:
        warn(f"MLflow tracking at {server.uri} failed while opening the run ({short_error(exc)}); "
             "training without tracking")
        return None
    tracker = Tracker(server.client, server.uri, server.experiment_id, run.info.run_id, run_dir)
    tracker.safely("logging the params", lambda: tracker.log_params(params))
    return tracker


def start_for(server: Optional[Server], spec, kind: str, name: str, run_dir: Path,
              params: Optional[dict] = None) -> Optional[Tracker]:
    """:func:`start` for a ``train`` run or a ``search`` of ``spec``."""
    return start(server, run_name=name, params=params if params is not None else spec_params(spec),
                 tags={"orchestrator.kind": kind, "orchestrator.run_dir": str(run_dir)}, run_dir=run_dir)


@contextlib.contextmanager
def ended_on_error(tracker: Optional[Tracker]) -> Iterator[None]:
    """An exception or Ctrl-C inside the block ends the MLflow run as FAILED / KILLED, and goes on."""
    try:
        yield
    except BaseException as exc:
        if tracker is not None:
            status = "KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED"
            tracker.safely("ending the MLflow run", lambda: tracker.finish(status))
        raise


def spec_params(spec: Any) -> dict[str, str]:
    """The spec as flat params, without where it ran (name, storage) and the tracking settings."""
    return flatten({k: v for k, v in spec.model_dump().items() if k not in ("name", "storage", "mlflow")})
