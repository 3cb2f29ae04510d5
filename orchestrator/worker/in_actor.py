"""The search's fast path: a one-worker trial trained inside its (reused) Tune trial actor.

A Ray Train worker group per trial costs a controller, new processes, a
TensorFlow import and the data fetched again: seconds per trial, as long as a
small trial trains. A trial of one worker has nothing to distribute, so Tune's
own trial actor runs the same worker loop (:func:`orchestrator.worker.loop.train_loop_per_worker`)
itself, and Tune hands the actor on to the next trial (``reuse_actors``):
TensorFlow is imported and the arrays fetched once per actor, and
``tf.keras.backend.clear_session()`` runs between trials.

:class:`TuneTrialSession` answers the loop's questions as Ray Train would: each
epoch's checkpoint goes to the trial's directory under ``trials/`` (named, kept
and pruned as Ray Train does: the best ``keep_best`` by the monitored metric plus
the latest), and its metrics with that ``checkpoint_path`` to Tune, which is what
``TuneReportCallback`` sends from a Ray Train run. A restarted trial (retried
after a failure, or a resumed search) resumes from its newest complete checkpoint.
"""

from __future__ import annotations

import dataclasses
import gc
import os
import shutil
import time
from datetime import datetime
from pathlib import Path
from typing import Callable, Optional

import orchestrator.worker  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow)

import ray
import tensorflow as tf
from ray import tune
from ray.train import Checkpoint

from orchestrator.checkpoint_files import REPORT, complete_state, newest_complete_checkpoint
from orchestrator.contract import WorkerConfig
from orchestrator.layout import RunLayout
from orchestrator.worker.resume import ResumePoint

CHECKPOINT_PATH_KEY = "checkpoint_path"  # as ray.tune.integration.ray_train.TuneReportCallback names it

# What this actor process keeps between the trials it runs.
_arrays: dict = {}
_trials_run = 0


def _resident_mb() -> Optional[float]:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


class TuneTrialSession:
    """The worker loop's session (see :mod:`orchestrator.worker.session`) for a trial in its Tune actor.

    Args:
        run_dir: the trial's directory (``<search>/trials/<trial_id>``), where its checkpoints go.
        keep_best: checkpoints kept besides the latest, best by ``monitor``.
        monitor, mode: what "best" means.
        identity: extra fields of every report (this actor's trial count and memory).
        to_tune: how an epoch's metrics and its persisted checkpoint reach Tune; by default
            ``tune.report(metrics)`` with the checkpoint's path among the metrics (what
            ``TuneReportCallback`` sends). A PBT member also hands Tune the checkpoint itself.
    """

    world_rank = 0
    world_size = 1

    def __init__(self, run_dir: str, keep_best: int, monitor: str, mode: str, identity: dict,
                 to_tune: Optional[Callable[[dict, Optional[str]], None]] = None):
        self.run_dir = Path(run_dir)
        self.keep_best = keep_best
        self.monitor = monitor
        self.mode = mode
        self.identity = identity
        self.to_tune = to_tune or (lambda metrics, _path: tune.report(metrics))

    def report(self, metrics: dict, checkpoint: Optional[Checkpoint] = None, **_ignored) -> None:
        path = None
        if checkpoint is not None:
            path = self._persist(Path(checkpoint.path))
            metrics = {**metrics, CHECKPOINT_PATH_KEY: path}
        self.to_tune(metrics, path)  # Tune stops or pauses a trial here: the report does not return

    def _persist(self, source: Path) -> str:
        """Copy a reported checkpoint into the trial's directory under a new name, whole or not at all."""
        name = "checkpoint_" + datetime.now().strftime("%Y-%m-%d_%H-%M-%S.%f")
        layout = RunLayout(self.run_dir)
        staging = layout.staging(name)
        shutil.copytree(source, staging)
        os.replace(staging, layout.checkpoint(name))
        self._prune()
        return str(layout.checkpoint(name))

    def _prune(self) -> None:
        """Ray Train's CheckpointConfig(num_to_keep=keep_best, score = monitor): the best and the latest."""
        found = []
        for directory in self.run_dir.glob("checkpoint_*"):
            state = complete_state(directory)
            if state is not None:
                found.append((directory, state))
        if not found:
            return
        latest = max(found, key=lambda f: (int(f[1]["epoch"]), f[0].name))[0]
        sign = 1 if self.mode == "min" else -1
        scored = sorted((f for f in found if (f[1].get(REPORT) or {}).get(self.monitor) is not None),
                        key=lambda f: sign * f[1][REPORT][self.monitor])
        keep = {latest, *(d for d, _ in scored[:self.keep_best])}
        for directory, _ in found:
            if directory not in keep:
                shutil.rmtree(directory, ignore_errors=True)

    def resume_point(self) -> ResumePoint:
        """The trial's newest complete checkpoint on storage (a damaged one is passed over), or none."""
        found = newest_complete_checkpoint(self.run_dir)
        return ResumePoint(Checkpoint(str(found[0])) if found else None)

    def report_again(self, point, state: dict, identity: dict) -> None:
        """Nothing to send again: Tune has no record of checkpoints to catch up with (summary reads them)."""


def _gradient_registry() -> dict:
    """TensorFlow's global registry of gradient functions, by op type name (empty if TF moved it)."""
    from tensorflow.python.framework import ops

    return getattr(getattr(ops, "_gradient_registry", None), "_registry", {})


def _drop_gradients_since(before: set) -> None:
    """Forget the gradient functions TensorFlow registered during a trial that is over.

    Tracing a train step registers a ``CustomGradient-<n>`` entry per all-reduce
    (``tf.custom_gradient`` in graph mode, ``ReplicaContext.all_reduce`` of the
    gradients) and never removes it; each one holds its traced graph, and
    ``clear_session()`` does not drop them (tensorflow#27492, tensorflow#97697;
    tf-keras PR #898 proposes this same purge). Dropped only after the trial's model
    and functions are gone, so nothing can ask for those gradients again.
    """
    registry = _gradient_registry()
    for name in [n for n in registry if n not in before and n.startswith("CustomGradient-")]:
        del registry[name]


def train_trial(run: WorkerConfig, to_tune: Optional[Callable[[dict, Optional[str]], None]] = None) -> None:
    """Train one trial in this process, as one Ray Train worker would, then leave TensorFlow clean.

    Args:
        run: what a Ray Train worker of the trial would get; ``run.start_checkpoint``
            (a PBT member's copy of another member) is where a trial with no
            checkpoint of its own in ``run.run_dir`` starts.
        to_tune: see :class:`TuneTrialSession`.
    """
    global _trials_run
    from orchestrator.worker.loop import train_loop_per_worker

    tf.keras.backend.clear_session()  # the last trial's graphs and layer names, if it left any
    gc.collect()
    # What is left now outlives trials (TensorFlow's and Keras's modules, the arrays): kept out of
    # later collections, which otherwise walk all of it at each trial's end and start (README, Benchmark).
    gc.freeze()
    _trials_run += 1
    Path(run.run_dir).mkdir(parents=True, exist_ok=True)
    if isinstance(run.data, ray.ObjectRef):
        key = run.data.hex()
        if key not in _arrays:
            _arrays.clear()  # another search's data: keep one
            _arrays[key] = ray.get(run.data)
        run = dataclasses.replace(run, data=_arrays[key])
    spec = run.spec
    session = TuneTrialSession(run.run_dir, spec.checkpoint.keep_best, spec.checkpoint.monitor,
                               spec.checkpoint.mode,
                               identity={"actor_trials": _trials_run, "actor_rss_mb": _resident_mb(),
                                         "actor_pid": os.getpid(), "trial_started_at": time.time()},
                               to_tune=to_tune)
    registered = set(_gradient_registry())
    try:
        train_loop_per_worker(run.as_train_loop_config(), session=session)
    finally:
        tf.keras.backend.clear_session()
        _drop_gradients_since(registered)
        gc.collect()
