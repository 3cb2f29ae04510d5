"""The HParams experiment summary of a search, written by the driver without TensorFlow.

TensorBoard's HParams dashboard reads one experiment summary at the log root
(what was searched, which metrics to compare) and, per trial run, the session
written by the trial's chief worker (``hp.KerasCallback``) with scalar metrics
``best_<search metric>``, ``best_val_loss``/``best_val_accuracy`` and ``epochs_run``. This module writes
the root summary with TensorBoard's own protos and record writer, so the
driver never imports TensorFlow.
"""

from __future__ import annotations

import socket
import time
from pathlib import Path

from tensorboard.compat.proto import event_pb2
from tensorboard.plugins.hparams import summary_v2 as hp
from tensorboard.summary.writer.record_writer import RecordWriter

from orchestrator.best import trial_metrics
from orchestrator.search_space import SCHEDULE_KEY, Domain, Search



def _domain(value):
    if isinstance(value, Domain):
        if value.kind in ("choice", "grid"):
            return hp.Discrete(list(value.args))
        if value.kind == "randint":
            return hp.IntInterval(int(value.args[0]), int(value.args[1]))
        return hp.RealInterval(float(value.args[0]), float(value.args[1]))
    return hp.Discrete([value])


def experiment_hparams(search: Search) -> list:
    """One HParam per searched field; the schedule family and each family's parameters."""
    params = [hp.HParam(key, _domain(value)) for key, value in search.fields.items()]
    if search.schedules:
        params.append(hp.HParam(SCHEDULE_KEY, hp.Discrete(list(search.schedules))))
        for family, family_params in search.schedules.items():
            params += [hp.HParam(f"{family}.{name}", _domain(value)) for name, value in family_params.items()]
    return params


def write_experiment_summary(log_root: str | Path, search: Search) -> Path:
    """Write the root HParams summary (idempotent in meaning; a resumed search writes it again)."""
    from orchestrator.storage import RemotePath

    if isinstance(log_root, RemotePath):  # object storage: written here, uploaded as one object
        import tempfile

        with tempfile.TemporaryDirectory(prefix="orchestrator-hparams-") as tmp:
            local = write_experiment_summary(tmp, search)
            target = log_root / local.name
            target.upload(local)
            return target
    root = Path(log_root)
    root.mkdir(parents=True, exist_ok=True)
    # The scalars each trial's chief writes into its run (worker.callbacks.tensorboard.HParamsMetrics).
    metrics = [hp.Metric(tag, display_name=tag.replace("_", " ")) for tag in trial_metrics(search.search.metric)]
    summary = hp.hparams_config_pb(hparams=experiment_hparams(search), metrics=metrics)
    now = time.time()
    path = root / f"events.out.tfevents.{int(now)}.{socket.gethostname()}.hparams.v2"
    with open(path, "wb") as f:
        writer = RecordWriter(f)
        writer.write(event_pb2.Event(wall_time=now, file_version="brain.Event:2").SerializeToString())
        writer.write(event_pb2.Event(wall_time=now, step=0, summary=summary).SerializeToString())
    return path
