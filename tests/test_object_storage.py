"""Object storage: ``--storage s3://bucket/prefix`` against a real S3-compatible server on 127.0.0.1.

The server is moto's ``moto_server`` (as Ray's own storage tests use), started
here and ended by its pid. Every output is read back from the bucket with
boto3 (not with this project's code): result.json and the summary, the
checkpoints, the exported model (downloaded, then loaded with plain tf-keras
in a process that imports nothing of this project) and the TensorBoard events
(downloaded, then read with TensorBoard's own loader). The run and the
search are each killed whole (driver, local Ray, workers) right after a
report, and resumed from the bucket.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import run_cli
from commands import ORPHAN_GRACE, RUN_TIMEOUT, SEARCH_CONFIG
from test_resume_fidelity import (CONFIG, EPOCHS, KILLED_AFTER, assert_one_run_trained_each_epoch_once,
                                  assert_tensorboard_once_per_epoch, resumed_epochs)

BUCKET = "orchestrator-results"
PREFIX = "team/experiments"
STORAGE = f"s3://{BUCKET}/{PREFIX}"
SECRET = "moto-secret-5f1c2a"  # must appear in no file the runs leave


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MotoServer:
    """``moto_server`` on 127.0.0.1 in its own session; :meth:`stop` ends it by its pid."""

    def __init__(self, log: Path, env: dict | None = None):
        self.port = _free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        with open(log, "wb") as out:
            self.proc = subprocess.Popen(["moto_server", "-H", "127.0.0.1", "-p", str(self.port)],
                                         stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                         env={**os.environ, **(env or {})})
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"moto_server did not start: {log.read_text()[-2000:]}")
                time.sleep(0.3)

    def client(self, service: str = "s3", **keys):
        import boto3

        return boto3.client(service, endpoint_url=self.endpoint, region_name="us-east-1",
                            aws_access_key_id=keys.get("key", "testing"),
                            aws_secret_access_key=keys.get("secret", SECRET))

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=20)


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """A bucket on a local S3, and the standard AWS variables pointing at it (for commands started here)."""
    tmp = tmp_path_factory.mktemp("s3")
    server = MotoServer(tmp / "moto.log")
    with pytest.MonkeyPatch.context() as mp:
        for var in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "RAY_ADDRESS"):
            mp.delenv(var, raising=False)
        mp.setenv("AWS_ACCESS_KEY_ID", "testing")
        mp.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
        mp.setenv("AWS_DEFAULT_REGION", "us-east-1")
        mp.setenv("AWS_ENDPOINT_URL", server.endpoint)
        mp.setenv("AWS_EC2_METADATA_DISABLED", "true")
        mp.setenv("ORCHESTRATOR_CACHE", str(tmp / "cache"))
        server.client().create_bucket(Bucket=BUCKET)
        try:
            yield server
        finally:
            server.stop()


def keys(server: MotoServer, prefix: str) -> list[str]:
    paginator = server.client().get_paginator("list_objects_v2")
    return [o["Key"] for page in paginator.paginate(Bucket=BUCKET, Prefix=prefix) for o in page.get("Contents", [])]


def get_json(server: MotoServer, key: str):
    return json.loads(server.client().get_object(Bucket=BUCKET, Key=key)["Body"].read())


def download(server: MotoServer, prefix: str, local: Path) -> Path:
    client = server.client()
    for key in keys(server, prefix):
        if key.endswith("/"):  # a directory marker
            continue
        target = local / key[len(prefix):].lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        client.download_file(BUCKET, key, str(target))
    return local


def key_of(uri: str) -> str:
    assert uri.startswith(f"s3://{BUCKET}/"), uri
    return uri[len(f"s3://{BUCKET}/"):]


def write_config(tmp_path: Path, config: dict, mnist_path: Path) -> Path:
    config = json.loads(json.dumps(config))
    config["task"] = {**config.get("task", {}), "path": str(mnist_path)}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def assert_no_secret_and_no_local_results(server: MotoServer, prefix: str, name: str) -> None:
    client = server.client()
    for key in keys(server, prefix):
        if key.endswith((".json", ".csv", ".yaml", ".txt", ".pkl")):
            assert SECRET not in client.get_object(Bucket=BUCKET, Key=key)["Body"].read().decode(errors="replace"), key
    assert not (Path.cwd() / "results" / name).exists(), "results were written to the local disk"


def load_outside_the_project(model: Path, mnist_path: Path) -> float:
    """Test accuracy (first 500 test images) of a downloaded .keras file, loaded with plain tf-keras."""
    code = f"""
import os; os.environ["TF_USE_LEGACY_KERAS"] = "1"
import numpy as np, tf_keras
d = np.load({str(mnist_path)!r})
model = tf_keras.models.load_model({str(model)!r})
p = model.predict(d["x_test"][:500].astype("float32") / 255.0, verbose=0)
print(float(np.mean(np.argmax(p, axis=1) == d["y_test"][:500])))
"""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "TF_USE_LEGACY_KERAS")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd="/",
                         env={**env, "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert out.returncode == 0, out.stderr[-3000:]
    return float(out.stdout.strip().splitlines()[-1])


def assert_tensorboard_serves(name: str, tmp_path: Path) -> None:
    """`orchestrator tensorboard NAME --storage s3://...` serves the run's train and validation scalars."""
    from test_tensorboard_live import get_json

    port = _free_port()
    with open(tmp_path / "serve.txt", "w") as out:
        serving = subprocess.Popen([sys.executable, "-m", "orchestrator.cli", "tensorboard", name, "--storage", STORAGE,
                                    "--port", str(port)], cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        while True:
            tags = get_json(f"http://127.0.0.1:{port}/data/plugin/scalars/tags") or {}
            if {"train", "validation"} <= set(tags):
                break
            assert serving.poll() is None and time.monotonic() < deadline, (tmp_path / "serve.txt").read_text()
            time.sleep(1)
        assert "epoch_loss" in tags["validation"], tags
        os.killpg(serving.pid, signal.SIGINT)
        assert serving.wait(60) == 0, (tmp_path / "serve.txt").read_text()
    finally:
        if serving.poll() is None:
            os.killpg(serving.pid, signal.SIGKILL)


# ------------------------------------------------------------------ bad storage: one line, exit 2, no training

def _no_credentials(tmp: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    return {**env, "AWS_SHARED_CREDENTIALS_FILE": str(tmp / "none"), "AWS_CONFIG_FILE": str(tmp / "none")}


BAD = [
    ("unknown-scheme", lambda tmp, s3: ("nosuchfs://bucket/x", dict(os.environ)), "Unrecognized filesystem type"),
    ("missing-bucket", lambda tmp, s3: ("s3://no-such-bucket/x", dict(os.environ)), "bucket 'no-such-bucket' does not exist"),
    ("unreachable-endpoint", lambda tmp, s3: (STORAGE, {**os.environ, "AWS_ENDPOINT_URL": f"http://127.0.0.1:{_free_port()}"}),
     "cannot reach http://127.0.0.1:"),
    ("no-credentials", lambda tmp, s3: (STORAGE, _no_credentials(tmp)), "no AWS credentials found"),
]


@pytest.mark.parametrize("case,setup,expected", BAD, ids=[b[0] for b in BAD])
def test_bad_storage_fails_before_training_in_one_line(s3, tmp_path, mnist_path, case, setup, expected):
    storage, env = setup(tmp_path, s3)
    out = run_cli(["train", "--storage", storage, "--name", "never", "--data", str(mnist_path), "--epochs", "1"],
                  cwd=tmp_path, env=env, timeout=180)
    assert out.returncode == 2, out.stderr[-3000:]
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: storage") and expected in lines[0], out.stderr
    assert "Epoch" not in out.stdout and not keys(s3, f"{PREFIX}/never")
    assert not (tmp_path / "results").exists()


@pytest.mark.parametrize("argv", [["list"], ["show", "run1"]], ids=["list", "show"])
def test_reading_a_missing_bucket_fails_in_one_line(s3, tmp_path, argv):
    out = run_cli([*argv, "--storage", "s3://no-such-bucket/x"], cwd=tmp_path)
    assert out.returncode == 2 and out.stderr.strip().splitlines() == [
        f"error: storage 's3://no-such-bucket/x{'/run1' if argv[0] == 'show' else ''}': "
        "bucket 'no-such-bucket' does not exist"], out.stderr


def test_no_write_permission_fails_before_training(tmp_path, mnist_path):
    """A reader's keys on a server that checks IAM: the probe object is refused (AccessDenied)."""
    # The first 4 requests (bucket, user, policy, access key) run unauthenticated; then IAM decides.
    server = MotoServer(tmp_path / "moto-auth.log", env={"INITIAL_NO_AUTH_ACTION_COUNT": "4"})
    try:
        server.client().create_bucket(Bucket=BUCKET)
        iam = server.client("iam")
        iam.create_user(UserName="reader")
        iam.put_user_policy(UserName="reader", PolicyName="read", PolicyDocument=json.dumps({
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": ["s3:GetObject", "s3:ListBucket"], "Resource": "*"}]}))
        key = iam.create_access_key(UserName="reader")["AccessKey"]
        env = {**os.environ, "AWS_ENDPOINT_URL": server.endpoint, "AWS_ACCESS_KEY_ID": key["AccessKeyId"],
               "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"], "AWS_DEFAULT_REGION": "us-east-1",
               "AWS_EC2_METADATA_DISABLED": "true"}
        out = run_cli(["train", "--storage", STORAGE, "--name", "never", "--data", str(mnist_path), "--epochs", "1"],
                      cwd=tmp_path, env=env, timeout=180)
    finally:
        server.stop()
    assert out.returncode == 2, out.stderr[-3000:]
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "access denied" in lines[0], out.stderr


# ------------------------------------------------------------------ a 2-worker run, killed and resumed from the bucket

def killed_after_report(cli, args: list[str], epoch: int, tmp_path: Path, monkeypatch):
    """Run ``orchestrator *args`` until rank 0's report of ``epoch`` kills the whole command (test hook)."""
    marker = tmp_path / "killed.pid"
    monkeypatch.setenv("ORCHESTRATOR_TEST_KILL_AFTER_REPORT", f"0:{epoch}:killpg:{marker}")
    first = cli(*args, tag=args[0])
    first.wait(RUN_TIMEOUT, "be killed by the hook")
    assert marker.exists(), "the hook never killed the command\n" + first.output_tail()
    assert not first.wait_group_gone(ORPHAN_GRACE), "processes of the killed command still alive"
    return first


def test_a_run_on_s3_killed_and_resumed_leaves_every_output_in_the_bucket(s3, cli, tmp_path, mnist_path,
                                                                          monkeypatch):
    name = "run-s3"
    config = write_config(tmp_path, CONFIG, mnist_path)
    args = ["train", "--config", str(config), "--storage", STORAGE, "--name", name]
    first = killed_after_report(cli, args, KILLED_AFTER, tmp_path, monkeypatch)
    assert f"{PREFIX}/{name}/result.json" not in keys(s3, f"{PREFIX}/{name}")
    # Synced every epoch: the killed chief never reached its train end, yet epochs 1..2 are in the bucket.
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    board = EventAccumulator(str(download(s3, f"{PREFIX}/{name}/tensorboard", tmp_path / "killed-tb") / "validation"))
    board.Reload()
    assert [e.step for e in board.Tensors("epoch_loss")] == list(range(KILLED_AFTER))
    interrupted = run_cli(["show", name, "--storage", STORAGE], cwd=tmp_path)  # read from the checkpoints' state
    assert interrupted.returncode == 0, interrupted.stderr
    assert f"resume with: orchestrator train --name {name} --storage {STORAGE} --resume" in interrupted.stdout

    monkeypatch.delenv("ORCHESTRATOR_TEST_KILL_AFTER_REPORT")
    resumed = cli(*args, "--resume", tag="train-resume")
    assert resumed.wait(RUN_TIMEOUT, "finish the resumed run") == 0, resumed.output_tail()
    assert resumed_epochs(resumed) == [KILLED_AFTER], resumed.output_tail()

    run = f"{PREFIX}/{name}"
    result = get_json(s3, f"{run}/result.json")
    assert_one_run_trained_each_epoch_once(result, first, resumed)
    assert len(get_json(s3, f"{run}/workers.json")["workers"]) == 2
    best_key = key_of(result["best"]["checkpoint"])
    assert get_json(s3, f"{best_key}/state.json")["epoch"] == result["best"]["epoch"]
    assert f"{best_key}/weights.h5" in keys(s3, best_key)
    assert f"{run}/saved_model/1/saved_model.pb" in keys(s3, f"{run}/saved_model/")

    local = download(s3, run, tmp_path / "copy")
    accuracy = load_outside_the_project(local / "best_model.keras", mnist_path)
    assert abs(accuracy - result["evaluation"]["best_checkpoint_reloaded"]["accuracy"]) < 1e-6
    assert_tensorboard_once_per_epoch(local / "tensorboard", EPOCHS)
    assert_no_secret_and_no_local_results(s3, run, name)

    # Read back through the commands and the Python API, and the name-reuse rule holds there.
    shown = run_cli(["show", name, "--storage", STORAGE], cwd=tmp_path)
    assert shown.returncode == 0 and f"result: {STORAGE}/{name}/result.json" in shown.stdout, shown.stderr
    listed = run_cli(["list", "--storage", STORAGE], cwd=tmp_path)
    assert listed.returncode == 0 and name in listed.stdout, listed.stderr
    import orchestrator

    opened = orchestrator.open_run(f"{STORAGE}/{name}")
    assert opened.status == "finished" and list(opened.history["epoch"]) == list(range(1, EPOCHS + 1))
    assert_tensorboard_serves(name, tmp_path)
    again = run_cli(args, cwd=tmp_path)
    assert again.returncode == 2 and "already finished" in again.stderr, again.stderr
    assert get_json(s3, f"{run}/result.json") == result


# ------------------------------------------------------------------ a 2-trial search, killed and resumed

def test_a_search_on_s3_killed_and_resumed_leaves_every_output_in_the_bucket(s3, cli, tmp_path, mnist_path,
                                                                             monkeypatch):
    name = "search-s3"
    config = {**SEARCH_CONFIG, "training": {**SEARCH_CONFIG["training"], "epochs": 2, "batch_size_per_worker": 64},
              "data": {"train_examples": 2000, "validation_examples": 500, "test_examples": 500},
              "search": {**SEARCH_CONFIG["search"],
                         "space": {"optimizer.learning_rate": {"grid": [0.003, 0.001]}, "lr_schedule": {"constant": {}}}}}
    args = ["tune", "--config", str(write_config(tmp_path, config, mnist_path)), "--storage", STORAGE, "--name", name]
    # The first trial to report epoch 1 kills the whole command (driver, local Ray, every trial).
    killed_after_report(cli, args, 1, tmp_path, monkeypatch)
    search = f"{PREFIX}/{name}"
    assert f"{search}/summary.json" not in keys(s3, search)

    monkeypatch.delenv("ORCHESTRATOR_TEST_KILL_AFTER_REPORT")
    resumed = cli(*args, "--resume", tag="tune-resume")
    assert resumed.wait(RUN_TIMEOUT, "finish the resumed search") == 0, resumed.output_tail()
    # A trial cut off by the kill went on from its checkpoint in the bucket, not from scratch.
    assert resumed_epochs(resumed), resumed.output_tail()

    summary = get_json(s3, f"{search}/summary.json")
    assert summary["trials"] == 2 and sorted(r["config"]["optimizer.learning_rate"] for r in summary["results"]) \
        == [0.001, 0.003]
    for row in summary["results"]:
        assert [h["epoch"] for h in row["history"]] == [1, 2], row
        assert get_json(s3, key_of(row["final_checkpoint"]) + "/state.json")["epoch"] == 2
    names = set(keys(s3, search))
    assert {f"{search}/summary.csv", f"{search}/curves.png", f"{search}/best_model.keras"} <= names
    local = download(s3, search, tmp_path / "copy")
    accuracy = load_outside_the_project(local / "best_model.keras", mnist_path)
    assert abs(accuracy - summary["evaluation"]["best_checkpoint_reloaded"]["accuracy"]) < 1e-6
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    for row in summary["results"]:
        board = EventAccumulator(str(local / "tensorboard" / row["label"] / "validation"))
        board.Reload()
        assert [e.step for e in board.Tensors("epoch_loss")] == [0, 1], row["label"]
    assert_no_secret_and_no_local_results(s3, search, name)
