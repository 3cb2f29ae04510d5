"""Rewind a run's TensorBoard event files to a resume point, so every epoch is shown once.

A restarted worker group resumes at epoch ``k``; the attempt that died may
already have written events for epoch ``k`` and later, and the resumed attempt
writes them again. TensorBoard's Python loader (``--load_fast=false``, and
wherever its data server is unavailable) then draws both attempts' points (a
zig-zag); its remedy, purging on a ``SessionLog.START`` event, purges every tag
of a run from one step on, which would also drop the ``*_vs_iterations`` tags
that share the validation run but count iterations, not epochs. So the chief
rewrites the files before training on: each run directory's events before the
resume point, once per (tag, step), go to one new file, and the old files are
deleted. Every reader of event files then sees each epoch once.

Steps: epoch summaries use the epoch index; Keras's ``evaluation_*_vs_iterations``
use the optimizer's iteration count, restored with the checkpoint.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

from tensorboard.backend.event_processing.event_file_loader import RawEventFileLoader
from tensorboard.compat.proto import event_pb2
from tensorboard.summary.writer.record_writer import RecordWriter

# Written by hp.KerasCallback when training (re)starts: the resumed attempt writes them anew.
HPARAMS_SESSION_TAGS = ("_hparams_/session_start_info", "_hparams_/session_end_info")


def _is_event_file(name: str) -> bool:
    return "tfevents" in name


def _keep(event: event_pb2.Event, epoch: int, iterations: int) -> bool:
    if event.HasField("summary"):
        tags = [v.tag for v in event.summary.value]
        if any(t in HPARAMS_SESSION_TAGS for t in tags):
            return False
        if any(t.endswith("_vs_iterations") for t in tags):
            return event.step <= iterations  # logged at the iteration count reached by that epoch
        return event.step < epoch
    if event.HasField("session_log"):
        return False
    if event.HasField("graph_def"):
        return epoch > 0  # a fresh start (epoch 0) writes the graph again
    return event.step < epoch


def _key(event: event_pb2.Event):
    if event.HasField("summary"):
        return ("summary", tuple(v.tag for v in event.summary.value), event.step)
    if event.HasField("graph_def"):
        return ("graph",)
    return None  # no identity: kept as is


def rewind_run_dir(directory: Path, epoch: int, iterations: int) -> int:
    """Rewrite one run directory's event files; returns how many events were dropped."""
    files = sorted(p for p in directory.iterdir() if p.is_file() and _is_event_file(p.name))
    if not files:
        return 0
    records: list[tuple[bytes, event_pb2.Event]] = []
    for path in files:
        for raw in RawEventFileLoader(str(path)).Load():  # a torn last record ends the file
            records.append((raw, event_pb2.Event.FromString(raw)))
    kept, seen = [], set()
    for raw, event in reversed(records):  # the last write of a (tag, step) wins
        if event.HasField("file_version"):
            continue
        if not _keep(event, epoch, iterations):
            continue
        key = _key(event)
        if key is not None:
            if key in seen:
                continue
            seen.add(key)
        kept.append(raw)
    kept.reverse()
    versions = [raw for raw, event in records if event.HasField("file_version")]
    dropped = len(records) - len(versions) - len(kept)
    if dropped == 0 and len(files) == 1:
        return 0
    target = None
    if kept:
        # Named a second before its oldest event: TensorBoard's Python loader reads a
        # run's files in name order, so this one comes before the resumed attempt's.
        first_time = int(min(event.wall_time for _, event in records)) - 1
        target = directory / f"events.out.tfevents.{first_time:010d}.{socket.gethostname()}.rewound"
        tmp = directory / ".rewind.tmp"  # not an event file name: no reader picks it up half-written
        with open(tmp, "wb") as f:
            writer = RecordWriter(f)
            for raw in versions[:1] + kept:
                writer.write(raw)
            writer.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    # A kill from here on leaves the old files next to the new one; the next
    # rewind reads both and keeps each (tag, step) once.
    for path in files:
        if path != target:
            path.unlink(missing_ok=True)
    return dropped


def rewind(log_dir: str | Path, epoch: int, iterations: int) -> int:
    """Drop every event of ``log_dir``'s runs at or after the resume point (epoch index ``epoch``).

    Args:
        log_dir: the run's TensorBoard directory (its subdirectories are its runs).
        epoch: the first epoch index (0-based) the resumed attempt trains.
        iterations: the optimizer's iteration count restored from the checkpoint.

    Returns:
        How many events were dropped, over all run directories.
    """
    log_dir = Path(log_dir)
    if not log_dir.is_dir():
        return 0
    return sum(rewind_run_dir(Path(d), epoch, iterations) for d, _, _ in os.walk(log_dir))
