"""Losing a node mid-run, on a real 2-node Ray cluster on this machine.

``ray.cluster_utils.Cluster`` starts a head and a second node (separate
raylets); the run's two workers are SPREAD over them, and the second node is
removed after two epochs. If what is left can hold the workers, Ray Train
restarts the group there and the run resumes from its last checkpoint;
otherwise the run ends, within a bounded time, with one line naming what is
missing.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from pathlib import Path

import pytest

from orchestrator.spec import build_spec

SUBSET = {"train_examples": 8000, "validation_examples": 1000, "test_examples": 1000}


def _spec(storage: Path, name: str, mnist_path: Path, epochs: int):
    return build_spec({
        "name": name, "storage": str(storage),
        "training": {"epochs": epochs, "batch_size_per_worker": 32, "verbose": 0},
        "early_stopping": {"enabled": False},
        "tensorboard": {"histogram_freq": 0},
        "scaling": {"workers": 2, "placement": "SPREAD", "max_failures": 1},
        "task": {"path": str(mnist_path)}, "data": SUBSET,
    })


@pytest.fixture
def two_node_cluster(monkeypatch):
    import ray
    from ray.cluster_utils import Cluster

    from orchestrator.engine.runtime import prepare_process_env

    # The Train controller of this in-process cluster reads it from its environment.
    monkeypatch.setenv("RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S", "15")
    prepare_process_env()
    assert not ray.is_initialized()
    with socket.socket() as probe:  # other Rays on this machine may hold 8265
        probe.bind(("127.0.0.1", 0))
        dashboard_port = probe.getsockname()[1]
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 1, "include_dashboard": True, "dashboard_host": "127.0.0.1",
        "dashboard_port": dashboard_port})
    yield cluster
    ray.shutdown()
    cluster.shutdown()


def _train_in_background(spec):
    from orchestrator.engine.train import run_training

    outcome: dict = {}

    def target():
        try:
            outcome["result"] = run_training(spec)
        except BaseException as exc:  # handed to the test thread
            outcome["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, outcome


def _wait_for_epochs(run_dir: Path, epochs: int, timeout: float) -> list[dict]:
    deadline = time.time() + timeout
    while time.time() < deadline:
        roster = run_dir / "workers.json"
        snapshot = run_dir / "checkpoint_manager_snapshot.json"
        if roster.exists() and snapshot.exists():
            latest = json.loads(snapshot.read_text()).get("latest_checkpoint_result") or {}
            if (latest.get("metrics") or {}).get("epoch", 0) >= epochs:
                return json.loads(roster.read_text())["workers"]
        time.sleep(0.5)
    raise AssertionError(f"the run did not report {epochs} epochs within {timeout} s")


def _start(cluster, storage, name, mnist_path, epochs):
    import ray

    ray.init(address=cluster.address)
    spec = _spec(storage, name, mnist_path, epochs)
    thread, outcome = _train_in_background(spec)
    workers = _wait_for_epochs(storage / name, 2, timeout=240)
    return spec, thread, outcome, workers


def test_run_resumes_on_the_nodes_left_when_they_fit(two_node_cluster, tmp_path, mnist_path):
    second = two_node_cluster.add_node(num_cpus=1)
    third = two_node_cluster.add_node(num_cpus=1)  # spare room for the restarted worker
    two_node_cluster.wait_for_nodes()
    spec, thread, outcome, workers = _start(two_node_cluster, tmp_path, "survives", mnist_path, epochs=8)
    assert len({w["node_id"] for w in workers}) == 2, "SPREAD should put the workers on two nodes"
    victim = next(n for n in (second, third) if n.node_id in {w["node_id"] for w in workers})
    two_node_cluster.remove_node(victim)

    thread.join(timeout=300)
    assert not thread.is_alive(), "the run hung after losing a node"
    assert "error" not in outcome, outcome.get("error")
    result = outcome["result"]
    assert [h["epoch"] for h in result["history"]] == list(range(1, 9))
    roster = json.loads((tmp_path / "survives" / "workers.json").read_text())
    assert len(roster["groups"]) >= 2 and victim.node_id not in {w["node_id"] for w in roster["workers"]}


def test_run_ends_with_a_clear_error_when_what_is_left_is_too_small(two_node_cluster, tmp_path, mnist_path):
    from orchestrator.errors import UserError

    second = two_node_cluster.add_node(num_cpus=1)
    two_node_cluster.wait_for_nodes()
    spec, thread, outcome, workers = _start(two_node_cluster, tmp_path, "shrinks", mnist_path, epochs=40)
    removed_at = time.time()
    two_node_cluster.remove_node(second)

    thread.join(timeout=240)
    assert not thread.is_alive(), "the run hung after losing a node"
    error = outcome.get("error")
    assert isinstance(error, UserError), repr(error)
    message = str(error)
    assert "needs 2 worker(s) of {CPU: 1, GPU: 0} but the cluster can place only 1" in message
    assert "1 node(s)" in message and "\n" not in message
    assert time.time() - removed_at < 200
