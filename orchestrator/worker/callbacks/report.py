"""Report each epoch to Ray Train with a checkpoint that a restart resumes from."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Callable, Optional

import orchestrator.worker  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow)

import tensorflow as tf

from orchestrator.best import best
from orchestrator.scratch import scratch
from orchestrator.checkpoint_files import BEST_WEIGHTS, FILES, REPORT, STATE, TRAIN_STATE, WEIGHTS, manifest

# Test hook (tests/test_resume_fidelity.py): "RANK:EPOCH:ACTION:MARKER". Right after
# rank RANK's report of epoch EPOCH returns, once (MARKER, a file, is created first):
# ACTION "exit" SIGKILLs this worker, "killpg" the process group of its session's
# leader (the command: driver, local Ray and all). This is the moment Ray Train can
# lose a report: it waits in the worker until the controller's next poll collects it.
KILL_AFTER_REPORT_ENV = "ORCHESTRATOR_TEST_KILL_AFTER_REPORT"


def to_python(logs: dict) -> dict:
    """Plain floats: numpy scalars in Keras logs break ray.train.report's serialization."""
    return {k: float(v) for k, v in (logs or {}).items() if k not in ("outputs",)}


class ReportToRayTrain(tf.keras.callbacks.Callback):
    """At every epoch end, save a resumable checkpoint and ``ray.train.report`` it.

    Every worker calls ``report`` (Ray Train V2 requires it) and saves (under
    MultiWorkerMirroredStrategy saving all-reduces the metric variables), but
    only the chief hands a checkpoint to Ray, which uploads it to the run's
    storage and keeps the best ``keep_best`` by the monitored metric plus the
    latest. Place it after EarlyStopping so ``stop_reason`` sees its decision.

    Args:
        is_chief: whether this worker is rank 0.
        max_epochs: the run's epoch limit, to tell "max_epochs" endings.
        best_weights_path: the chief's ModelCheckpoint file, carried in each checkpoint.
        extra_state: returns extra JSON state to save (e.g. early stopping counters).
        history: epochs already run before a resume, continued here.
        examples_per_epoch: training examples per epoch, for samples/s.
        monitor, mode: what "best" means (as for ModelCheckpoint).
        identity: who this worker is (rank, node, pid), added to every report.
        report: the report function (``ray.train.report``); injectable for tests.
    """

    def __init__(self, *, is_chief: bool, max_epochs: int, best_weights_path: str,
                 extra_state: Callable[[], dict], history: Optional[list[dict]] = None,
                 examples_per_epoch: int = 0, monitor: str = "val_loss", mode: str = "min",
                 identity: Optional[dict] = None, report: Optional[Callable] = None):
        super().__init__()
        self.is_chief = is_chief
        self.identity = dict(identity or {})
        self.max_epochs = max_epochs
        self.best_weights_path = best_weights_path
        self.extra_state = extra_state
        self.history = list(history or [])
        self.examples_per_epoch = examples_per_epoch
        self.monitor = monitor
        self.mode = mode
        if report is None:
            import ray.train
            report = ray.train.report
        self._report = report
        self._epoch_start = 0.0
        self._epoch_started_at = 0.0

    def _best(self) -> Optional[dict]:
        return best(self.history, self.monitor, self.mode)

    def on_epoch_begin(self, epoch, logs=None):
        # Wall clock too, comparable across processes: `bench` measures cold start
        # (command start -> first epoch begun) and the full epoch cycle with it.
        self._epoch_started_at = time.time()
        self._epoch_start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        seconds = time.perf_counter() - self._epoch_start
        metrics = to_python(logs)
        if self.model.stop_training:
            stop_reason = "early_stopping"
        elif epoch + 1 >= self.max_epochs:
            stop_reason = "max_epochs"
        else:
            stop_reason = None
        metrics.update(epoch=epoch + 1, epoch_seconds=seconds, started_at=self._epoch_started_at,
                       samples_per_second=self.examples_per_epoch / seconds if seconds > 0 else 0.0)
        self.history.append(dict(metrics))
        best = self._best()
        metrics.update(
            best_epoch=best["epoch"] if best else None,
            **{f"best_{self.monitor}": best[self.monitor] if best else None},
            stop_reason=stop_reason,
            **self.identity,
        )
        # The report itself is saved too: a restart that finds this checkpoint on
        # storage unregistered (its report was lost) sends it again (resume.py).
        state = {"epoch": epoch + 1, "history": self.history, "stop_reason": stop_reason,
                 REPORT: metrics, **self.extra_state()}
        # Ray kills a worker stopped while it reports: scratch() is swept by a later run then.
        with scratch("ckpt") as tmp:
            self._save(tmp, state)
            checkpoint = None
            if self.is_chief:
                from ray.train import Checkpoint
                checkpoint = Checkpoint.from_directory(str(tmp))
            self._report(metrics, checkpoint=checkpoint)
        _maybe_kill_after_report(self.identity.get("world_rank"), epoch + 1)

    def _save(self, directory: Path, state: dict) -> None:
        # Every worker saves: reading synced-on-read variables (metrics) all-reduces,
        # so a chief saving alone would wait forever. Non-chief copies are discarded.
        tf.train.Checkpoint(model=self.model, optimizer=self.model.optimizer).write(
            str(directory / TRAIN_STATE / "ckpt"))
        self.model.save_weights(str(directory / WEIGHTS))
        if not self.is_chief:
            return
        if os.path.exists(self.best_weights_path):
            shutil.copyfile(self.best_weights_path, directory / BEST_WEIGHTS)
        # Written last, listing every other file with its size: a checkpoint on
        # storage whose files all match is complete (checkpoint_files.complete_state).
        (directory / STATE).write_text(json.dumps({**state, FILES: manifest(directory)}, indent=1))


def _maybe_kill_after_report(rank, epoch: int) -> None:
    """The test hook described at :data:`KILL_AFTER_REPORT_ENV`; nothing when it is unset."""
    spec = os.environ.get(KILL_AFTER_REPORT_ENV)
    if not spec:
        return
    want_rank, want_epoch, action, marker = spec.split(":", 3)
    if int(want_rank) != rank or int(want_epoch) != epoch:
        return
    try:
        fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return  # once per run: not again after the restart
    os.write(fd, str(os.getpid()).encode())
    os.close(fd)
    import signal
    if action == "killpg":
        os.killpg(os.getsid(0), signal.SIGKILL)  # the session leader: the command that started Ray
    # This worker too, at once: Ray's worker processes need not be in the leader's group, and a
    # worker outliving its driver for a moment would train (and checkpoint) the next epoch.
    os.kill(os.getpid(), signal.SIGKILL)


def read_state(directory: str | Path) -> dict:
    return json.loads((Path(directory) / STATE).read_text())


def restore_train_state(model: tf.keras.Model, directory: str | Path) -> None:
    """Load weights and optimizer state saved by :class:`ReportToRayTrain`."""
    tf.train.Checkpoint(model=model, optimizer=model.optimizer).read(
        str(Path(directory) / TRAIN_STATE / "ckpt")).assert_existing_objects_matched()
