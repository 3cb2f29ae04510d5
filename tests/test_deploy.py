"""Deploying: real Ray clusters started with `ray start`, token auth on, driven by the real CLIs.

1. A head (1 CPU) and a second node (2 CPUs; separate raylets and temp dirs)
   run ``orchestrator train --address <gcs>`` with ``scaling.placement: SPREAD``:
   one worker per node (PACK would put both on the second node), one central
   TensorBoard root, one result.json.
2. A 2-CPU head, as ``cluster.yaml`` starts it (token auth, dashboard on
   127.0.0.1): ``ray job submit --working-dir .`` runs a small search to
   SUCCEEDED; a second, long one is ended by ``ray job stop``.

Every Ray process here was started by this file, in its own session, and is
ended by pid (never ``ray stop``, which would end every Ray on the machine).
Ports are picked free; other Ray instances may run at the same time.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
from pathlib import Path
from typing import Optional

import pytest
from conftest import USER_TASK
import yaml

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
RAY = str(BIN / "ray") if (BIN / "ray").exists() else shutil.which("ray")
ORCHESTRATOR = str(BIN / "orchestrator") if (BIN / "orchestrator").exists() else shutil.which("orchestrator")
SUBSET = {"train_examples": 3000, "validation_examples": 1000, "test_examples": 1000}
NODE_START_TIMEOUT = 180    # `ray start` on a busy 2-core machine
RUN_TIMEOUT = 420           # one small training run or search, start to end
STOP_TIMEOUT = 20           # `ray job stop` to STOPPED; the head waits this long before SIGKILL
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _psutil():
    import ray  # noqa: F401  (Ray bundles psutil and puts it on sys.path)
    import psutil

    return psutil


def _run(args: list[str], env: dict, timeout: float, what: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    try:
        done = subprocess.run(args, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(f"{what} did not finish within {timeout} s: {' '.join(args)}\n"
                             f"{(exc.stdout or '')[-3000:]}\n{(exc.stderr or '')[-3000:]}") from None
    done.stdout, done.stderr = ANSI.sub("", done.stdout), ANSI.sub("", done.stderr)
    return done


def _tail(done: subprocess.CompletedProcess, chars: int = 4000) -> str:
    return f"exit {done.returncode}\n--- stdout\n{done.stdout[-chars:]}\n--- stderr\n{done.stderr[-chars:]}"


# --------------------------------------------------------------------- auth

@pytest.fixture(scope="module")
def token(tmp_path_factory) -> dict:
    """A fresh cluster token, made the way a user makes one: `ray get-auth-token --generate`.

    HOME is a new directory, so the token lands in <home>/.ray/auth_token, not in ~/.ray.
    """
    home = tmp_path_factory.mktemp("home")
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")}
    made = _run([RAY, "get-auth-token", "--generate"], {**env, "HOME": str(home)}, 60, "ray get-auth-token")
    path = home / ".ray" / "auth_token"
    assert made.returncode == 0 and path.is_file(), _tail(made)
    value = path.read_text().strip()
    assert made.stdout.strip() == value and len(value) >= 32
    return {"path": path, "value": value}


def _base_env() -> dict:
    drop = ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_ADDRESS", "RAY_API_SERVER_ADDRESS",
            "RAY_RUNTIME_ENV_IGNORE_GITIGNORE")
    return {**{k: v for k, v in os.environ.items() if k not in drop}, "RAY_USAGE_STATS_ENABLED": "0"}


def node_env(token: dict, **extra: str) -> dict:
    """What cluster.yaml exports before `ray start`: token mode, the token file.

    Plus, for the teardown only: no 30 s drain when our `ray start` gets SIGTERM.
    """
    return {**_base_env(), "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token["path"]),
            "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0", **extra}


def client_env(token: dict, **extra: str) -> dict:
    """A user's shell: RAY_AUTH_MODE=token and RAY_AUTH_TOKEN=$(ray get-auth-token)."""
    return {**_base_env(), "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token["value"], **extra}


# ------------------------------------------------------------------ cluster

class RayNode:
    """One `ray start --block` of ours, in a session of its own, with its own --temp-dir."""

    def __init__(self, args: list[str], env: dict, log: Path):
        # Short: Ray's unix sockets live under it (108-byte limit).
        self.temp_dir = Path(tempfile.mkdtemp(prefix="rt", dir="/tmp"))
        self.log = log
        self._log_file = open(log, "wb")
        self.proc = subprocess.Popen(
            [RAY, "start", "--block", "--disable-usage-stats", f"--temp-dir={self.temp_dir}",
             "--object-store-memory=400000000", f"--dashboard-agent-listen-port={_free_port()}", *args],
            env=env, stdout=self._log_file, stderr=subprocess.STDOUT, start_new_session=True)

    def log_text(self) -> str:
        return ANSI.sub("", self.log.read_text(errors="replace"))

    def wait_started(self) -> None:
        deadline = time.monotonic() + NODE_START_TIMEOUT
        while time.monotonic() < deadline:
            if "Ray runtime started" in self.log_text():
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.5)
        raise AssertionError(f"`ray start` did not come up within {NODE_START_TIMEOUT} s:\n{self.log_text()[-4000:]}")

    def processes(self) -> list:
        psutil = _psutil()
        try:
            root = psutil.Process(self.proc.pid)
            return [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def stop(self) -> None:
        """SIGTERM to our `ray start` (it stops its node), then SIGKILL whatever of its tree is left."""
        psutil = _psutil()
        tree = self.processes()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        _, alive = psutil.wait_procs(tree, timeout=30)
        for proc in alive:
            try:
                proc.kill()  # psutil checks the pid still is that process
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(alive, timeout=15)
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)  # our session's group, if anything is left in it
        except ProcessLookupError:
            pass
        self.proc.wait(timeout=15)
        self._log_file.close()
        shutil.rmtree(self.temp_dir, ignore_errors=True)


class Cluster:
    """A head plus nodes joined with `ray start --address`, all on this machine."""

    def __init__(self, token: dict, logs: Path, node_extra_env: Optional[dict] = None):
        self.token = token
        self.logs = logs
        self.extra = node_extra_env or {}
        self.nodes: list[RayNode] = []
        self.gcs_address = ""
        self.dashboard_port = 0

    @property
    def dashboard_url(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    def start_head(self, cpus: int) -> RayNode:
        port, self.dashboard_port = _free_port(), _free_port()
        head = RayNode(["--head", f"--port={port}", f"--num-cpus={cpus}", "--dashboard-host=127.0.0.1",
                        f"--dashboard-port={self.dashboard_port}", f"--ray-client-server-port={_free_port()}"],
                       node_env(self.token, **self.extra), self.logs / "head.log")
        self.nodes.append(head)
        head.wait_started()
        joined = re.search(r"ray start --address='([\d.]+:\d+)'", head.log_text())
        assert joined, head.log_text()[-3000:]
        self.gcs_address = joined.group(1)
        assert self.gcs_address.endswith(f":{port}")
        return head

    def add_node(self, cpus: int) -> RayNode:
        node = RayNode([f"--address={self.gcs_address}", f"--num-cpus={cpus}"],
                       node_env(self.token, **self.extra), self.logs / f"node{len(self.nodes)}.log")
        self.nodes.append(node)
        node.wait_started()
        return node

    def alive_nodes(self, count: int) -> list[dict]:
        """`ray list nodes`, once `count` nodes are alive."""
        deadline = time.monotonic() + NODE_START_TIMEOUT
        while True:
            listed = _run([RAY, "list", "nodes", "--address", self.gcs_address, "--format", "json"],
                          client_env(self.token), 120, "ray list nodes")
            nodes = [n for n in json.loads(listed.stdout or "[]") if n["state"] == "ALIVE"] \
                if listed.returncode == 0 else []
            if len(nodes) == count:
                return nodes
            if time.monotonic() > deadline:
                raise AssertionError(f"{count} alive nodes expected, got {len(nodes)}\n{_tail(listed)}")
            time.sleep(2)

    def shutdown(self) -> None:
        for node in reversed(self.nodes):
            node.stop()


@pytest.fixture
def two_nodes(token, tmp_path):
    """Head 1 CPU, second node 2 CPUs: PACK would put both 1-CPU workers on the second node."""
    cluster = Cluster(token, tmp_path)
    try:
        cluster.start_head(cpus=1)
        cluster.add_node(cpus=2)
        yield cluster
    finally:
        cluster.shutdown()


def _write_yaml(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


# ------------------------------------------------------- 1. two-node SPREAD run

def test_spread_training_through_the_cli_puts_one_worker_on_each_node(two_nodes, tmp_path, mnist_path):
    nodes = two_nodes.alive_nodes(2)
    node_ids = {n["node_id"] for n in nodes}
    assert sorted((n["is_head_node"], n["resources_total"]["CPU"]) for n in nodes) == [(False, 2.0), (True, 1.0)]
    storage, name = tmp_path / "shared-storage", "spread"
    config = _write_yaml(tmp_path / "spread.yaml", {
        "seed": 5,
        "training": {"epochs": 2, "batch_size_per_worker": 64, "verbose": 2},
        "early_stopping": {"patience": 5},
        "checkpoint": {"keep_best": 1},
        "scaling": {"workers": 2, "cpus_per_worker": 1, "placement": "SPREAD"},
        "task": {"path": str(mnist_path)}, "data": SUBSET,
    })
    run = _run([ORCHESTRATOR, "train", "--config", str(config), "--address", two_nodes.gcs_address,
                "--storage", str(storage), "--name", name],
               client_env(two_nodes.token), RUN_TIMEOUT, "orchestrator train on the 2-node cluster", cwd=tmp_path)
    assert run.returncode == 0, _tail(run)
    assert f"run {name}: 2 epoch(s)" in run.stdout, _tail(run)

    run_dir = storage / name
    roster = json.loads((run_dir / "workers.json").read_text())
    workers = sorted(roster["workers"], key=lambda w: w["world_rank"])
    assert [w["world_rank"] for w in workers] == [0, 1]
    placed = [w["node_id"] for w in workers]
    assert len(set(placed)) == 2, f"SPREAD put both workers on one node: {workers}"
    assert set(placed) == node_ids, f"workers ran on {placed}, the cluster's nodes are {sorted(node_ids)}"
    assert len({w["pid"] for w in workers}) == 2

    results = sorted(storage.rglob("result.json"))
    assert results == [run_dir / "result.json"], results
    result = json.loads(results[0].read_text())
    assert result["workers"] == roster["workers"] and result["replicas"] == 2
    assert result["spec"]["scaling"]["placement"] == "SPREAD"
    assert result["epochs_run"] == 2 and [h["epoch"] for h in result["history"]] == [1, 2]
    assert {k: result["data"][k] for k in ("train", "validation", "test")} == \
        {"train": 3000, "validation": 1000, "test": 1000}
    assert Path(result["evaluation"]["exported_model"]).is_file()

    # One TensorBoard root, written by the chief alone, wherever the workers ran.
    root = run_dir / "tensorboard"
    assert result["tensorboard_dir"] == str(root)
    assert sorted(p.name for p in root.iterdir()) == ["train", "validation"]
    events = sorted(storage.rglob("events.out.tfevents.*"))
    assert events and all(root in e.parents for e in events), events
    chief = workers[0]["pid"]
    assert {int(e.name.split(".")[-3]) for e in events} == {chief}, (events, chief)
    for node in two_nodes.nodes:
        assert not list(node.temp_dir.rglob("events.out.tfevents.*")), f"stray TensorBoard files in {node.temp_dir}"


# ------------------------------------------------------------- 2. Ray jobs

@pytest.fixture(scope="module")
def job_head(token, tmp_path_factory):
    """A 2-CPU head as cluster.yaml starts it; `ray job stop` gives a job STOP_TIMEOUT s before SIGKILL."""
    cluster = Cluster(token, tmp_path_factory.mktemp("job-head"),
                      node_extra_env={"RAY_JOB_STOP_WAIT_TIME_S": str(STOP_TIMEOUT)})
    try:
        cluster.start_head(cpus=2)
        yield cluster
    finally:
        cluster.shutdown()


def _job(head: Cluster, *args: str, timeout: float = 120, env: Optional[dict] = None) -> subprocess.CompletedProcess:
    command, *rest = args
    return _run([RAY, "job", command, "--address", head.dashboard_url, *rest], env or client_env(head.token),
                timeout, f"ray job {command}")


def job_status(head: Cluster, submission_id: str) -> str:
    shown = _job(head, "status", submission_id)
    text = shown.stdout + shown.stderr
    assert shown.returncode == 0, _tail(shown)
    for pattern, status in ((rf"Job '{submission_id}' succeeded", "SUCCEEDED"),
                            (rf"Job '{submission_id}' was stopped", "STOPPED"),
                            (rf"Job '{submission_id}' failed", "FAILED")):
        if re.search(pattern, text):
            return status
    found = re.search(rf"Status for job '{submission_id}': (\w+)", text)
    assert found, _tail(shown)
    return found.group(1)


def wait_for_job(head: Cluster, submission_id: str, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while True:
        status = job_status(head, submission_id)
        if status in ("SUCCEEDED", "FAILED", "STOPPED"):
            return status
        if time.monotonic() > deadline:
            logs = _job(head, "logs", submission_id).stdout
            raise AssertionError(f"job {submission_id} still {status} after {timeout} s\n{logs[-4000:]}")
        time.sleep(3)


def submit(head: Cluster, submission_id: str, config: Path, storage: Optional[Path], name: str,
           env: Optional[dict] = None) -> None:
    """`ray job submit --working-dir .` from the repository, as the README says, without waiting."""
    where = ["--storage", str(storage)] if storage else []
    submitted = _job(head, "submit", "--working-dir", ".", "--submission-id", submission_id, "--no-wait", "--",
                     "python", "-m", "jobs.tune_mnist", "--config", str(config), *where, "--name", name, env=env)
    assert submitted.returncode == 0 and f"Job '{submission_id}' submitted successfully" in submitted.stdout + \
        submitted.stderr, _tail(submitted)


def search_config(path: Path, mnist_path: Path, epochs: int, **search: dict) -> Path:
    return _write_yaml(path, {
        "seed": 3,
        "training": {"epochs": epochs, "batch_size_per_worker": 64, "verbose": 2},
        "checkpoint": {"keep_best": 1},
        "tensorboard": {"histogram_freq": 1},
        "task": {"path": str(mnist_path)}, "data": SUBSET,
        "search": {"samples": 1, "workers_per_trial": 1, "max_concurrent": 2,
                   "space": {"optimizer.learning_rate": {"grid": [0.002, 0.001]},
                             "lr_schedule": {"constant": {}}},
                   **search},
    })


def test_the_head_wants_the_token_and_serves_its_dashboard_on_loopback_only(job_head, tmp_path):
    psutil = _psutil()
    listening = {c.laddr.ip for c in psutil.net_connections(kind="inet")
                 if c.status == psutil.CONN_LISTEN and c.laddr.port == job_head.dashboard_port}
    assert listening and listening <= {"127.0.0.1", "::ffff:127.0.0.1"}, listening

    url = f"{job_head.dashboard_url}/api/jobs/"
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(url, timeout=30)
    assert refused.value.code == 401
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {job_head.token['value']}"})
    assert urllib.request.urlopen(request, timeout=30).status == 200

    # A shell without the token (and no ~/.ray/auth_token) is turned away; with it, it is let in.
    empty_home = tmp_path / "home"
    empty_home.mkdir()
    anonymous = _job(job_head, "list", env={**_base_env(), "HOME": str(empty_home)})
    assert anonymous.returncode != 0 and "Authentication" in anonymous.stdout + anonymous.stderr, _tail(anonymous)
    assert _job(job_head, "list").returncode == 0


def test_a_submitted_search_succeeds_and_leaves_its_results_on_the_storage_path(job_head, tmp_path, mnist_path):
    storage, name, submission = tmp_path / "shared-storage", "job-search", "search-ok"
    config = search_config(tmp_path / "search.yaml", mnist_path, epochs=2,
                           asha={"grace_period": 2, "reduction_factor": 2})
    # Only Ray's defaults and .rayignore decide what is uploaded, not .gitignore.
    submit(job_head, submission, config, storage, name,
           env=client_env(job_head.token, RAY_RUNTIME_ENV_IGNORE_GITIGNORE="1"))
    status = wait_for_job(job_head, submission, RUN_TIMEOUT)
    logs = ANSI.sub("", _job(job_head, "logs", submission).stdout)
    assert status == "SUCCEEDED", logs[-5000:]

    summary_file = storage / name / "summary.json"
    summary = json.loads(summary_file.read_text())
    rows = summary["results"]
    assert summary["status"] == "finished" and summary["trials"] == 2 and len(rows) == 2
    assert sorted(r["config"]["optimizer.learning_rate"] for r in rows) == [0.001, 0.002]
    for row in rows:
        assert row["status"] == "TERMINATED" and row["epochs_run"] == 2, row
        assert [h["epoch"] for h in row["history"]] == [1, 2], row
    # What `ray job logs` shows (not a terminal): one line per finished trial, the search's
    # final table, our summary; no worker epoch lines of trials unless --verbose.
    for row in rows:
        assert re.search(rf"trial {row['trial_id']} finished: max epochs \(2\), best val_loss \d", logs), \
            logs[-3000:]
    assert not re.search(r"Epoch 1/2", logs), logs[-3000:]
    assert f"search {name}: 2 trial(s)" in logs and f"summary:     {summary_file}" in logs

    root = storage / name / "tensorboard"
    assert summary["tensorboard_dir"] == str(root)
    assert sorted(p.name for p in root.iterdir() if p.is_dir()) == sorted(r["label"] for r in rows)
    for row in rows:
        assert sorted(p.name for p in (root / row["label"]).iterdir() if p.is_dir()) == ["train", "validation"]
        assert list((root / row["label"] / "validation").glob("events.out.tfevents.*"))

    best = summary["best_trial"]
    assert best["best_val_loss"] == min(r["best_val_loss"] for r in rows)
    exported = storage / name / "best_model.keras"
    assert summary["evaluation"]["exported_model"] == str(exported)
    assert {"config.json", "model.weights.h5"} <= set(zipfile.ZipFile(exported).namelist())
    assert summary["evaluation"]["test_examples"] == 1000
    assert summary["evaluation"]["best_checkpoint_reloaded"]["accuracy"] > 0.5

    # The working dir the head unpacked: the code, nothing of .git, caches, results or data.
    unpacked = [p for p in job_head.nodes[0].temp_dir.glob("session_2*/runtime_resources/working_dir_files/_ray_pkg_*")
                if p.is_dir()]
    assert len(unpacked) == 1, unpacked
    files = [p for p in unpacked[0].rglob("*") if p.is_file()]
    relative = {str(p.relative_to(unpacked[0])) for p in files}
    assert {"jobs/tune_mnist.py", "orchestrator/cli.py", "pyproject.toml"} <= relative
    unwanted = [r for r in relative if re.match(r"(\.git|\.pytest_cache|results|data|.*\.egg-info)/", r)
                or "__pycache__" in r or r.endswith(".npz")]
    assert not unwanted, unwanted
    assert sum(p.stat().st_size for p in files) < 10 * 2**20


def test_a_job_trains_a_task_file_from_its_working_dir(job_head, tmp_path, mnist_path):
    """The task file travels in --working-dir; the job's workers import it from there."""
    work, storage = tmp_path / "work", tmp_path / "shared-storage"
    work.mkdir()
    (work / "user_task.py").write_text(USER_TASK)
    submitted = _job(job_head, "submit", "--working-dir", str(work), "--submission-id", "task-file", "--no-wait",
                     "--", "python", "-m", "jobs.train_mnist", "--task", "user_task.py:task",
                     "--task-param", f"path={mnist_path}", "--workers", "2", "--cpus-per-worker", "1",
                     "--epochs", "2", "--storage", str(storage), "--name", "task-job")
    assert submitted.returncode == 0, _tail(submitted)
    status = wait_for_job(job_head, "task-file", RUN_TIMEOUT)
    logs = ANSI.sub("", _job(job_head, "logs", "task-file").stdout)
    assert status == "SUCCEEDED", logs[-5000:]
    result = json.loads((storage / "task-job" / "result.json").read_text())
    assert result["spec"]["task"]["name"] == "user_task.py:task" and result["epochs_run"] == 2
    assert result["data"]["train"] == 2000 and len({w["pid"] for w in result["workers"]}) == 2
    assert result["evaluation"]["best_checkpoint_reloaded"]["accuracy"] > 0.5


def test_a_job_whose_results_would_be_lost_with_its_working_dir_is_refused(job_head, tmp_path, mnist_path):
    config = search_config(tmp_path / "search.yaml", mnist_path, epochs=2)  # storage: the default, relative
    submit(job_head, "relative-storage", config, None, "lost")
    status = wait_for_job(job_head, "relative-storage", RUN_TIMEOUT)
    logs = ANSI.sub("", _job(job_head, "logs", "relative-storage").stdout)
    assert status == "FAILED", logs[-3000:]
    assert "error: storage: 'results' is relative" in logs and "`--storage /mnt/efs/orchestrator`" in logs, logs
    assert "Traceback" not in logs, logs


def _ray_list(head: Cluster, kind: str, *filters: str) -> list[dict]:
    args = [RAY, "list", kind, "--address", head.gcs_address, "--format", "json", "--limit", "10000"]
    for f in filters:
        args += ["--filter", f]
    listed = _run(args, client_env(head.token), 120, f"ray list {kind}")
    assert listed.returncode == 0, _tail(listed)
    if listed.stdout.strip() == "No resource in the cluster":  # what it prints for an empty list
        return []
    return json.loads(listed.stdout)


def test_ray_job_stop_ends_a_running_search_within_seconds_and_leaves_no_processes(job_head, tmp_path, mnist_path):
    psutil = _psutil()
    storage, name, submission = tmp_path / "shared-storage", "job-stopped", "search-stopped"
    run_dir = storage / name
    config = search_config(tmp_path / "long.yaml", mnist_path, epochs=200, asha={"enabled": False})
    config = _write_yaml(config, {**yaml.safe_load(config.read_text()), "early_stopping": {"enabled": False}})
    submit(job_head, submission, config, storage, name)

    deadline = time.monotonic() + RUN_TIMEOUT
    while not list(run_dir.glob("trials/*/checkpoint_*/state.json")):
        status = job_status(job_head, submission)
        assert status in ("PENDING", "RUNNING"), f"job {submission} is {status} before training\n" + \
            _job(job_head, "logs", submission).stdout[-4000:]
        assert time.monotonic() < deadline, f"no trial checkpointed an epoch within {RUN_TIMEOUT} s"
        time.sleep(2)
    [job] = _ray_list(job_head, "jobs", f"submission_id={submission}")
    assert job["status"] == "RUNNING", job
    actors = [a for a in _ray_list(job_head, "actors", f"job_id={job['job_id']}", "state=ALIVE")
              if a["class_name"] in ("RayTrainWorker", "TrainController", "ImplicitFunc")]
    # What trains: Ray Train's workers, or on the search's fast path (one worker) the trial actors themselves.
    assert any(a["class_name"] in ("RayTrainWorker", "ImplicitFunc") for a in actors), actors
    processes = [psutil.Process(int(job["driver_info"]["pid"]))]
    processes += [psutil.Process(a["pid"]) for a in actors if psutil.pid_exists(a["pid"])]

    started = time.monotonic()
    stop = _job(job_head, "stop", submission, timeout=STOP_TIMEOUT + 60)
    took = time.monotonic() - started
    assert stop.returncode == 0, _tail(stop)
    assert job_status(job_head, submission) == "STOPPED"
    assert took < STOP_TIMEOUT, f"`ray job stop` took {took:.1f} s"

    # The driver stopped as on Ctrl-C (not SIGKILLed): it said how to resume.
    logs = ANSI.sub("", _job(job_head, "logs", submission).stdout)
    assert "interrupted: workers stopped" in logs, logs[-4000:]
    assert re.search(rf"resume with: python -m jobs\.tune_mnist .*--name {name}.* --resume", logs), logs[-2000:]

    # Its driver, trial actors, Train controllers and workers are gone: processes and Ray's records.
    _, alive = psutil.wait_procs(processes, timeout=30)
    assert not alive, f"still running after the stop: {[(p.pid, p.name()) for p in alive]}"
    deadline = time.monotonic() + 30
    while True:
        left = [a for a in _ray_list(job_head, "actors", f"job_id={job['job_id']}", "state=ALIVE")
                if a["class_name"] in ("RayTrainWorker", "TrainController", "ImplicitFunc")]
        if not left:
            break
        assert time.monotonic() < deadline, f"actors of the stopped job still ALIVE: {left}"
        time.sleep(2)

    # Nothing claims the search finished: no summary, whole or half.
    assert not list(run_dir.glob("*summary*")), sorted(p.name for p in run_dir.iterdir())
    assert not (run_dir / "best_model.keras").exists()
