"""Which node and process ran each worker: ``<run>/workers.json``, kept by the Train controller."""

from __future__ import annotations

from typing import Any, Optional

from ray.train.v2.api.callback import UserCallback

from orchestrator.results import write_json_atomic
from orchestrator.storage import location

IDENTITY_KEYS = ("world_rank", "world_size", "node_id", "pid")


class WorkerRoster(UserCallback):
    """Record every worker group's placement, from the identity each worker reports.

    Runs in the Ray Train controller, which sees all workers' reports (Ray keeps
    only rank 0's as the run's metrics). A new entry is added whenever the group
    changes, e.g. after Ray Train restarted it on another node.

    Args:
        path: where to write the roster (a local or shared-filesystem path).
    """

    def __init__(self, path: str):
        self.path = path
        self.groups: list[list[dict]] = []

    def after_report(self, run_context: Any, metrics: list[dict], checkpoint: Optional[Any]) -> None:
        roster = [{k: m.get(k) for k in IDENTITY_KEYS} for m in metrics]
        if not self.groups or self.groups[-1] != roster:
            self.groups.append(roster)
            write_json_atomic(location(self.path), {"workers": roster, "groups": self.groups})
