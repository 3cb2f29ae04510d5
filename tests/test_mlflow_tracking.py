"""MLflow tracking against a real ``mlflow server`` (SQLite backend, local artifact root, 127.0.0.1).

A 2-worker run and a 2-trial search are read back through ``mlflow.MlflowClient``
and checked against their result.json / summary.json; an unreachable server
stops the command before training (exit 2) or, optional, is a warning; a server
stopped mid-run leaves the run finished, its files whole, and one warning.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import SMALL_SUBSET, small_run_config

import mlflow  # the dev extra installs it

SUBSET = SMALL_SUBSET
BASE = small_run_config(seed=4)
EPOCH_METRICS = ("loss", "accuracy", "val_loss", "val_accuracy", "learning_rate")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class MlflowServer:
    """``mlflow server`` in its own process group, stopped by that group's id."""

    def __init__(self, root: Path):
        self.port = _free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        (root / "artifacts").mkdir(parents=True, exist_ok=True)
        self.log = open(root / "server.log", "wb")
        self.proc = subprocess.Popen(
            [str(Path(sys.executable).parent / "mlflow"), "server",
             "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
             "--default-artifact-root", str(root / "artifacts"),
             "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1"],
            stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 180
        while True:
            try:
                with urllib.request.urlopen(f"{self.uri}/health", timeout=5) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            assert self.proc.poll() is None, (root / "server.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "mlflow server did not answer within 180 s"
            time.sleep(0.5)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=30)
        self.log.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    server = MlflowServer(tmp_path_factory.mktemp("mlflow"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def client(server):
    return mlflow.MlflowClient(tracking_uri=server.uri)


@pytest.fixture(scope="module")
def tracked_run(server, local_ray, tmp_path_factory, mnist_path):
    from orchestrator.engine.train import run_training
    from orchestrator.spec import build_spec

    spec = build_spec({**BASE, "name": "tracked", "storage": str(tmp_path_factory.mktemp("results")),
                       "scaling": {"workers": 2}, "mlflow": {"tracking_uri": server.uri, "experiment": "runs"},
                       "task": {"path": str(mnist_path)}, "data": SUBSET})
    return run_training(spec)


@pytest.fixture(scope="module")
def tracked_search(server, tracked_run, local_ray, tmp_path_factory, mnist_path):
    from orchestrator.engine.tune import run_search
    from orchestrator.search_space import load_search

    search = load_search({**BASE, "mlflow": {"tracking_uri": server.uri, "experiment": "searches"},
                          "task": {"path": str(mnist_path)}, "data": SUBSET,
                          "search": {"samples": 1, "max_concurrent": 2, "asha": {"enabled": False},
                                     "space": {"optimizer.learning_rate": {"grid": [0.003, 0.0003]}}}})
    return run_search(search, name="tracked-search", storage=str(tmp_path_factory.mktemp("results")))


def _history(client, run_id: str, key: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


def _artifacts(client, run_id: str, path: str = "") -> set[str]:
    out = set()
    for item in client.list_artifacts(run_id, path or None):
        out |= _artifacts(client, run_id, item.path) if item.is_dir else {item.path}
    return out


def test_a_two_worker_run_is_one_mlflow_run_matching_result_json(tracked_run, client):
    result = json.loads(Path(tracked_run["result_file"]).read_text())
    assert result["workers"] and len(result["workers"]) == 2
    run = client.get_run(result["mlflow"]["run_id"])
    assert run.info.status == "FINISHED" and run.info.run_name == "tracked"
    assert client.get_experiment(run.info.experiment_id).name == "runs"
    params = run.data.params
    assert params["scaling.workers"] == "2" and params["training.epochs"] == "2"
    assert params["optimizer.learning_rate"] == str(result["spec"]["optimizer"]["learning_rate"])
    for key in EPOCH_METRICS:
        assert _history(client, run.info.run_id, key) == [(h["epoch"], h[key]) for h in result["history"]], key
    assert run.data.tags["stop_reason"] == result["stop_reason"] == "max_epochs"
    evaluation = result["evaluation"]
    assert run.data.metrics["test_best_accuracy"] == evaluation["best_checkpoint_reloaded"]["accuracy"]
    assert run.data.metrics["test_final_loss"] == evaluation["final_weights"]["loss"]
    artifacts = _artifacts(client, run.info.run_id)
    assert {"model/best_model.keras", "model/saved_model/1/saved_model.pb", "result.json"} <= artifacts
    downloaded = client.download_artifacts(run.info.run_id, "model/best_model.keras",
                                           str(Path(tracked_run["result_file"]).parent.parent))
    assert Path(downloaded).read_bytes() == Path(evaluation["exported_model"]).read_bytes()


def test_a_search_is_a_parent_run_with_one_nested_run_per_trial(tracked_search, client):
    summary = json.loads(Path(tracked_search["summary_file"]).read_text())
    parent = client.get_run(summary["mlflow"]["run_id"])
    assert parent.info.status == "FINISHED" and parent.data.tags["best_trial"] == summary["best_trial"]["trial_id"]
    assert parent.data.params["search.samples"] == "1"
    assert parent.data.metrics["test_best_accuracy"] == summary["evaluation"]["best_checkpoint_reloaded"]["accuracy"]
    assert "model/best_model.keras" in _artifacts(client, parent.info.run_id)

    nested = client.search_runs([parent.info.experiment_id],
                                f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    by_trial = {r.data.tags["trial_id"]: r for r in nested}
    assert set(by_trial) == {r["trial_id"] for r in summary["results"]} and len(nested) == 2
    for row in summary["results"]:
        run = by_trial[row["trial_id"]]
        assert run.info.status == "FINISHED"
        assert run.data.params["optimizer.learning_rate"] == str(row["config"]["optimizer.learning_rate"])
        assert run.data.tags["stop_reason"] == row["stop_reason"]
        for key in EPOCH_METRICS:
            assert _history(client, run.info.run_id, key) == [(h["epoch"], h[key]) for h in row["history"]], key
        assert run.data.metrics["best_val_loss"] == row["best_val_loss"]


def test_an_unreachable_server_is_one_line_and_exit_2_before_training(tmp_path, mnist_path):
    import yaml

    (tmp_path / "c.yaml").write_text(yaml.safe_dump({**BASE, "task": {"path": str(mnist_path)}, "data": SUBSET}))
    dead = f"http://127.0.0.1:{_free_port()}"
    started = time.monotonic()
    out = subprocess.run([sys.executable, "-m", "orchestrator.cli", "train", "--config", str(tmp_path / "c.yaml"),
                          "--storage", str(tmp_path / "r"), "--name", "x", "--mlflow-uri", dead],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 2, out.stderr[-3000:]
    assert out.stderr.count("\n") == 1 and out.stderr.startswith(f"error: MLflow tracking server {dead} is unreachable")
    assert "--mlflow-optional" in out.stderr
    assert not list((tmp_path / "r").rglob("*.json")), "something ran"
    assert time.monotonic() - started < 120


def test_optional_tracking_with_a_dead_server_warns_and_trains(local_ray, tmp_path, mnist_path, capfd):
    from orchestrator.engine.train import run_training
    from orchestrator.spec import build_spec

    dead = f"http://127.0.0.1:{_free_port()}"
    spec = build_spec({**BASE, "name": "untracked", "storage": str(tmp_path), "training": {**BASE["training"], "epochs": 1},
                       "mlflow": {"tracking_uri": dead, "optional": True},
                       "task": {"path": str(mnist_path)}, "data": SUBSET})
    result = run_training(spec)
    err = capfd.readouterr().err
    assert f"warning: MLflow tracking server {dead} is unreachable" in err and "training without tracking" in err
    assert result["mlflow"] is None and (tmp_path / "untracked" / "result.json").is_file()


def test_a_server_stopped_mid_run_leaves_the_run_finished_and_says_so(local_ray, tmp_path, mnist_path, capfd):
    from orchestrator.engine.train import run_training
    from orchestrator.spec import build_spec

    server = MlflowServer(tmp_path / "mlflow")
    run_dir = tmp_path / "results" / "orphaned"
    stopped = threading.Event()

    def stop_after_first_epoch():
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and not (run_dir / "checkpoint_manager_snapshot.json").exists():
            time.sleep(0.2)
        server.stop()
        stopped.set()

    spec = build_spec({**BASE, "name": "orphaned", "storage": str(tmp_path / "results"),
                       "training": {**BASE["training"], "epochs": 3},
                       "mlflow": {"tracking_uri": server.uri}, "task": {"path": str(mnist_path)}, "data": SUBSET})
    watcher = threading.Thread(target=stop_after_first_epoch, daemon=True)
    watcher.start()
    try:
        result = run_training(spec)
    finally:
        watcher.join(timeout=330)
        server.stop()
    assert stopped.is_set()
    on_disk = json.loads((run_dir / "result.json").read_text())
    assert on_disk["epochs_run"] == 3 and on_disk["mlflow"]["run_id"] == result["mlflow"]["run_id"]
    assert (run_dir / "best_model.keras").is_file() and (run_dir / "saved_model" / "1" / "saved_model.pb").is_file()
    err = capfd.readouterr().err
    warnings = [line for line in err.splitlines() if line.startswith("warning: MLflow")]
    assert len(warnings) == 1, err[-3000:]
    assert f"MLflow tracking at {server.uri} failed while logging the run's history" in warnings[0]
    assert str(run_dir) in warnings[0]
