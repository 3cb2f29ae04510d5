"""Connecting to Ray, and checking that a cluster can hold what a spec asks for.

Without an address (``--address`` or ``RAY_ADDRESS``) a local Ray is started
with its dashboard bound to 127.0.0.1: Ray Tune needs the dashboard's State API
to release a stopped trial's workers, and nothing here listens beyond loopback::

    orchestrator train                             # local Ray, all local CPUs
    orchestrator train --address 10.0.0.5:6379     # join a running cluster
    RAY_ADDRESS=auto orchestrator tune ...         # e.g. inside `ray job submit`
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Optional

from orchestrator.errors import UserError

# Every process that may import TensorFlow needs tf-keras selected before the
# import (Keras 3 fails under MultiWorkerMirroredStrategy in Ray Train).
WORKER_ENV_VARS = {"TF_USE_LEGACY_KERAS": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}


def worker_runtime_env() -> dict:
    return {"env_vars": dict(WORKER_ENV_VARS)}


def prepare_process_env() -> None:
    """Set the worker env vars in this (driver) process too: ``ray.train.tensorflow`` imports Keras."""
    os.environ.update(WORKER_ENV_VARS)
    # Train V2 is the default in Ray 2.60; pin it so an inherited setting cannot flip APIs.
    os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")
    # A worker group that cannot be placed (e.g. after a node died) fails after this
    # long instead of Train's 60 s; each failure counts against max_failures. Processes
    # of a local Ray started here inherit it; set it on the nodes of a real cluster.
    os.environ.setdefault("RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S", "30")


def connect(address: Optional[str] = None) -> bool:
    """Join ``address`` / ``RAY_ADDRESS``, or start a local Ray. True when this call started it."""
    prepare_process_env()
    import ray

    if ray.is_initialized():
        return False
    address = address or os.environ.get("RAY_ADDRESS")
    try:
        if address:
            ray.init(address=address, log_to_driver=True)
            return False
        ray.init(include_dashboard=True, dashboard_host="127.0.0.1", log_to_driver=True)
        return True
    except ConnectionError as exc:
        raise UserError(f"cannot connect to Ray at {address}: {exc}") from None


@dataclass(frozen=True)
class WorkerShape:
    """Resources of one training worker."""

    cpus: float
    gpus: int = 0

    def describe(self) -> str:
        return f"{{CPU: {self.cpus:g}, GPU: {self.gpus}}}"


def _alive_nodes() -> list[dict]:
    import ray

    return [n for n in ray.nodes() if n.get("Alive")]


def workers_that_fit(shape: WorkerShape, nodes: Optional[list[dict]] = None) -> int:
    """How many workers of ``shape`` the alive nodes can hold at once (each on one node)."""
    total = 0
    for node in nodes if nodes is not None else _alive_nodes():
        res = node.get("Resources", {})
        fit = math.floor(res.get("CPU", 0) / shape.cpus + 1e-9) if shape.cpus else math.inf
        if shape.gpus:
            fit = min(fit, math.floor(res.get("GPU", 0) / shape.gpus + 1e-9))
        total += 0 if fit == math.inf else fit
    return total


def cluster_summary(nodes: Optional[list[dict]] = None) -> str:
    nodes = nodes if nodes is not None else _alive_nodes()
    cpus = sum(n.get("Resources", {}).get("CPU", 0) for n in nodes)
    gpus = sum(n.get("Resources", {}).get("GPU", 0) for n in nodes)
    return f"{len(nodes)} node(s) with {cpus:g} CPU and {gpus:g} GPU in all"


def check_fits(workers: int, shape: WorkerShape, what: str = "a run") -> int:
    """Fail fast, with what was asked and what exists, when ``workers`` cannot all be placed.

    Ray would otherwise leave the run pending, and Train would retry starting
    its worker group forever. Returns how many such workers fit.
    """
    nodes = _alive_nodes()
    fit = workers_that_fit(shape, nodes)
    if fit < workers:
        raise UserError(
            f"{what} needs {workers} worker(s) of {shape.describe()} but the cluster can place "
            f"only {fit} ({cluster_summary(nodes)}); lower --workers / --cpus-per-worker / "
            f"--gpus-per-worker or add nodes")
    return fit
