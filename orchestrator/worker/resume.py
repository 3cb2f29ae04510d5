"""Which checkpoint a (re)started worker group resumes from: the last epoch whose report completed.

``ray.train.get_checkpoint()`` is the latest checkpoint Ray Train's controller
*registered*. A worker's ``ray.train.report`` uploads the checkpoint, then
leaves the report in a queue inside the worker process; the controller collects
it on its next poll of every worker (``RAY_TRAIN_HEALTH_CHECK_INTERVAL_S``,
0.5 s here) and registers it only once all ranks' reports of that round are in.
A worker, node or driver that dies in between takes the report with it: the
checkpoint is complete on storage, but Ray Train resumes from the one before
and the epoch is trained again. Here rank 0 also looks at storage for the
complete checkpoint of the highest epoch (``checkpoint_files.complete_state``)
and, if it is newer, every rank resumes from it and the lost report is sent
again, so Ray Train (and Tune) register it as if it had never been lost.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import ray.train
from ray.train import Checkpoint
from ray.train.collective import broadcast_from_rank_zero

from orchestrator.checkpoint_files import REPORT, STATE, newest_complete_checkpoint
from orchestrator.results import read_json


@dataclass
class ResumePoint:
    """The checkpoint to restore (None: start at epoch 1) and whether Ray Train has registered it."""

    checkpoint: Optional[Checkpoint]
    registered: bool = True


def _on_storage(fs, path: str):
    """``path`` on Ray Train's storage filesystem, as something with pathlib's reading methods."""
    from pyarrow.fs import LocalFileSystem

    from orchestrator.storage import RemotePath

    return Path(path) if isinstance(fs, LocalFileSystem) else RemotePath(fs, path, fs.type_name)


def _epoch_of(checkpoint: Optional[Checkpoint]) -> int:
    if checkpoint is None:
        return 0
    try:
        return int(read_json(_on_storage(checkpoint.filesystem, checkpoint.path) / STATE)["epoch"])
    except (OSError, ValueError, KeyError, TypeError):
        return 0


def resume_point() -> ResumePoint:
    """Called by every rank at start, in the same order: rank 0 decides, all follow.

    Rank 0 alone reads storage and broadcasts its choice, so the ranks cannot
    disagree even if storage changed between their reads.
    """
    context = ray.train.get_context()
    registered = ray.train.get_checkpoint()
    choice = None
    if context.get_world_rank() == 0:
        choice = {"path": registered.path if registered else None, "registered": True}
        storage = context.get_storage()
        found = newest_complete_checkpoint(_on_storage(storage.storage_filesystem, storage.experiment_fs_path))
        if found is not None and int(found[1]["epoch"]) > _epoch_of(registered):
            choice = {"path": getattr(found[0], "path", None) or str(found[0]), "registered": False}
    choice = broadcast_from_rank_zero(choice)
    if choice["path"] is None:
        return ResumePoint(None)
    if registered is not None and choice["path"] == registered.path:
        return ResumePoint(registered)
    return ResumePoint(Checkpoint(choice["path"], filesystem=context.get_storage().storage_filesystem),
                       registered=choice["registered"])


def report_again(point: ResumePoint, state: dict, identity: dict) -> None:
    """Send the lost report of an unregistered checkpoint, in place (nothing is copied).

    Every rank calls it (Ray Train consolidates one report per rank); rank 0's
    carries the checkpoint and the metrics it had reported, with this group's
    identity (for ``workers.json``).
    """
    from ray.train import CheckpointUploadMode

    is_chief = identity.get("world_rank") == 0
    metrics = {**state[REPORT], **identity} if is_chief else {"epoch": state["epoch"], **identity}
    ray.train.report(metrics, checkpoint=point.checkpoint if is_chief else None,
                     checkpoint_upload_mode=CheckpointUploadMode.NO_UPLOAD)
