"""Connecting to Ray, and checking that a cluster can hold what a spec asks for.

Without an address (``--address`` or ``RAY_ADDRESS``) a local Ray is started
with its dashboard bound to 127.0.0.1: Ray Tune needs the dashboard's State API
to release a stopped trial's workers, and nothing here listens beyond loopback::

    orchestrator train                             # local Ray, all local CPUs
    orchestrator train --address 10.0.0.5:6379     # join a running cluster
    RAY_ADDRESS=<head>:6379 orchestrator tune ...  # as `ray job submit` sets it for a job
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Optional

from orchestrator import console, process
from orchestrator.errors import UserError


def worker_runtime_env(verbose: Optional[bool] = None) -> dict:
    """The runtime env of every process that may import TensorFlow; ``verbose`` None: this process's."""
    return {"env_vars": process.worker_env_vars(console.is_verbose() if verbose is None else verbose)}


def prepare_process_env(verbose: Optional[bool] = None) -> None:
    """This (driver) process's env, which a local Ray inherits: see orchestrator/process.py."""
    process.prepare_driver(console.is_verbose() if verbose is None else verbose)


def connect(address: Optional[str] = None, verbose: Optional[bool] = None) -> bool:
    """Join ``address`` / ``RAY_ADDRESS``, or start a local Ray. True when this call started it."""
    prepare_process_env(verbose)
    import ray

    if ray.is_initialized():
        return False
    address = address or os.environ.get("RAY_ADDRESS")
    try:
        with process.keeping_sigterm():
            if address:
                ray.init(address=address, log_to_driver=True, runtime_env=_pinned_cluster_env(address),
                         logging_level=console.ray_init_logging_level(console.is_verbose()))
                return False
            _start_local_ray()
            return True
    except ConnectionError as exc:
        raise UserError(f"cannot connect to Ray at {address}: {exc}") from None


DEFAULT_DASHBOARD_PORT = 8265


def dashboard_url() -> Optional[str]:
    """The Ray dashboard of the cluster this process is connected to (``http://host:port``), if any."""
    import ray

    # `ray.init` gets it from here too (ray._private.worker.RayContext.dashboard_url).
    url = ray._private.worker.get_dashboard_url() if ray.is_initialized() else None
    if url and "://" not in url:
        url = f"http://{url}"
    return url or None


def _start_local_ray(attempts: int = 5) -> None:
    """A local Ray, its dashboard on 127.0.0.1 at a port chosen here, and pinned as every process's API server.

    The GCS address of a new local Ray is unknown before it starts, so the
    address pin of :func:`_pinned_cluster_env` cannot be used; the dashboard's
    can: ``RAY_API_SERVER_ADDRESS`` is what Ray Train's PlacementGroupCleaner
    (State API) asks first, so it finds this cluster even when other Ray
    instances run on the machine.
    """
    import socket

    import ray

    for attempt in range(attempts):
        with socket.socket() as probe:
            try:  # Ray's usual dashboard port when it is free, so the URL is the familiar one
                probe.bind(("127.0.0.1", DEFAULT_DASHBOARD_PORT if attempt == 0 else 0))
            except OSError:
                probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        try:
            # address="local": a new Ray, never one that `ray start` recorded in /tmp/ray.
            ray.init(address="local", include_dashboard=True, dashboard_host="127.0.0.1", dashboard_port=port,
                     log_to_driver=True, logging_level=console.ray_init_logging_level(console.is_verbose()),
                     runtime_env={"env_vars": {"RAY_API_SERVER_ADDRESS": f"http://127.0.0.1:{port}"}})
            return
        except Exception as exc:  # someone took the port between the probe and Ray's bind
            # Ray's own check (ValueError "already occupied"), or the dashboard process
            # losing the race later ("address already in use"): again on a random port.
            if not any(text in str(exc) for text in ("already occupied", "address already in use")) \
                    or attempt == attempts - 1:
                raise
            ray.shutdown()


def _pinned_cluster_env(address: str) -> Optional[dict]:
    """The job's runtime env: ``RAY_ADDRESS`` = the cluster this driver joins, in every task and actor.

    Ray Train's PlacementGroupCleaner, which frees the workers of a Tune trial
    that ended, asks the State API about the controller without an address.
    Ray then guesses the cluster (``RAY_ADDRESS``, else the last ``ray start``
    recorded in /tmp/ray, else the GCS processes it sees): on a host running
    several Ray instances, or a head started with ``--temp-dir``, it guesses
    another cluster, gives up, and the trial's CPUs stay reserved until the job
    ends, so a search waits forever for its final evaluation. Ray merges these
    env vars with a submitted job's runtime env (working_dir etc.).
    """
    if "://" in address:  # Ray Client (ray://) or a dashboard URL: leave Ray's defaults
        return None
    from ray._private.services import canonicalize_bootstrap_address

    try:
        gcs_address = canonicalize_bootstrap_address(address)
    except (ConnectionError, ValueError):
        return None  # ray.init reports the bad address
    return {"env_vars": {"RAY_ADDRESS": gcs_address}} if gcs_address else None


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
