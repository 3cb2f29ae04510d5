"""Live MLflow tracking of a search's trials: Ray's ``MLflowLoggerCallback``, one nested run per trial.

Ray's callback runs on the driver, in Tune's controller; it opens a run when
a trial starts and ends it with the trial. Changed here: each trial's run is
nested under the search's parent run (MLflow's ``mlflow.parentRunId`` tag) and
tagged with its ``trial_id``; its params are the trial's spec and
hyperparameters (not Tune's raw config); each report logs the epoch metrics with
step = epoch in one batched request (Ray's logs every reported key, one request
each); and a tracking error warns once and stops tracking, never the search.
"""

from __future__ import annotations

import functools
import time
from typing import Callable, Optional

from ray.air.integrations.mlflow import MLflowLoggerCallback

from orchestrator.engine.tracking import EPOCH_METRICS, PARENT_TAG, flatten, short_error, spec_params, warn


def trial_params(search, config: dict) -> dict:
    """The trial's spec (flat) and its hyperparameters, as MLflow params."""
    return {**spec_params(search.trial_spec(config)), **flatten(search.hparams(config))}


class NestedTrialRuns(MLflowLoggerCallback):
    """Args:
        tracking_uri: the MLflow server.
        experiment_id: the search's experiment.
        parent_run_id: the search's run, parent of every trial's.
        params_of: a trial's Tune config -> its params (see :func:`trial_params`).
    """

    def __init__(self, tracking_uri: str, experiment_id: str, parent_run_id: str,
                 params_of: Callable[[dict], dict]):
        super().__init__(tracking_uri, tags={PARENT_TAG: parent_run_id})
        self.experiment_id = experiment_id
        self.params_of = params_of
        self.failed: Optional[str] = None

    def _safely(self, what: str, fn) -> None:
        if self.failed:
            return
        try:
            fn()
        except Exception as exc:  # the search goes on untracked
            self.failed = f"{what}: {short_error(exc)}"
            warn(f"MLflow tracking at {self.tracking_uri} failed while {what} ({short_error(exc)}); "
                 "live tracking of the trials stopped, the search goes on")

    def setup(self, *args, **kwargs):
        def setup():
            self.mlflow_util.setup_mlflow(tracking_uri=self.tracking_uri, experiment_id=self.experiment_id)
        self.tags = dict(self.tags or {})
        self._trial_runs = {}
        self._safely("connecting", setup)

    def log_trial_start(self, trial):
        def start():
            if trial not in self._trial_runs:
                run = self.mlflow_util.start_run(run_name=str(trial.trial_id),
                                                 tags={**self.tags, "trial_id": trial.trial_id})
                self._trial_runs[trial] = run.info.run_id
                params = self.params_of(trial.config)
                from mlflow.entities import Param
                items = [Param(k, v[:6000]) for k, v in params.items()]
                client = self.mlflow_util._get_client()
                for at in range(0, len(items), 100):
                    client.log_batch(run.info.run_id, params=items[at:at + 100])
        self._safely(f"starting trial {trial.trial_id}'s run", start)

    def log_trial_result(self, iteration: int, trial, result: dict):
        def log():
            from mlflow.entities import Metric

            run_id = self._trial_runs.get(trial)
            if run_id is None or result.get("epoch") is None:
                return
            millis, step = int(time.time() * 1000), int(result["epoch"])
            metrics = [Metric(k, float(result[k]), millis, step) for k in EPOCH_METRICS if result.get(k) is not None]
            self.mlflow_util._get_client().log_batch(run_id, metrics=metrics)
        self._safely(f"logging trial {trial.trial_id}'s epoch", log)

    def log_trial_end(self, trial, failed: bool = False):
        def end():
            run_id = self._trial_runs.get(trial)
            if run_id is not None:
                self.mlflow_util._get_client().set_terminated(run_id, "FAILED" if failed else "FINISHED")
        self._safely(f"ending trial {trial.trial_id}'s run", end)


def callback_for(tracker, search) -> NestedTrialRuns:
    return NestedTrialRuns(tracker.uri, tracker.experiment_id, tracker.run_id,
                           functools.partial(trial_params, search))
