"""What the driver hands every Ray Train worker: one typed object, the same for a run and a trial.

Pure data (no Ray, no TensorFlow import): built by ``engine.train.make_trainer``,
read by ``worker.loop.train_loop_per_worker``. Ray pickles it once per worker;
the data itself travels as an object-store reference.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from orchestrator.spec import ExperimentSpec
from orchestrator.tasks import TaskRef

# The key of train_loop_config under which Ray Train passes the WorkerConfig.
CONFIG_KEY = "worker"


@dataclass(frozen=True)
class Trial:
    """A search trial as its workers see it.

    Args:
        label: its TensorBoard run name and HParams trial id.
        hparams: its sampled hyperparameters (flat), for the HParams dashboard.
    """

    label: str
    hparams: dict = field(default_factory=dict)


@dataclass(frozen=True)
class WorkerConfig:
    """Everything a worker needs to train.

    Args:
        spec: the run's (or trial's) validated spec.
        task: the task to load in the worker.
        data: object-store reference to the task's ``Arrays``; None for an input-function task.
        run_dir: this run's (or trial's) directory, where Ray Train keeps its checkpoints.
        tensorboard_dir: this run's directory under the central TensorBoard root.
        trial: set when the run is a search trial.
        start_checkpoint: a ``ray.train.Checkpoint`` to start from when the run has none of
            its own yet (a PBT member continuing another member's state).
    """

    spec: ExperimentSpec
    task: TaskRef
    data: Any
    run_dir: str
    tensorboard_dir: str
    trial: Optional[Trial] = None
    start_checkpoint: Any = None

    def as_train_loop_config(self) -> dict:
        return {CONFIG_KEY: self}
