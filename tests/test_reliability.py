"""Reliability, done for real: killed workers, a killed driver, Ctrl-C, torn writes.

Every run here is the real ``orchestrator`` command in its own process group
(``start_new_session=True``): it starts its own local Ray, and a test ends it
by signalling that group only. Nothing is stopped by name. Every wait has a
deadline and fails with what it was waiting for and the command's output.
"""

from __future__ import annotations

import json
import math
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Optional

import pytest
import yaml

from orchestrator.schedules import HoldThenExpDecay

# Each epoch of 6000 examples at batch 64 x 2 workers takes about a second here.
TRAIN_CONFIG = {
    "seed": 7,
    "training": {"epochs": 8, "batch_size_per_worker": 64, "verbose": 0},
    "lr_schedule": {"name": "hold_then_exp_decay", "hold_epochs": 2, "rate": 0.5},
    "early_stopping": {"enabled": False},
    "checkpoint": {"keep_best": 1},
    "tensorboard": {"histogram_freq": 0},
    "scaling": {"workers": 2, "max_failures": 2},
    "data": {"train_examples": 6000, "validation_examples": 1000, "test_examples": 1000},
}
SCHEDULE = HoldThenExpDecay(hold_epochs=2, rate=0.5)

SEARCH_CONFIG = {
    "seed": 3,
    "training": {"epochs": 3, "batch_size_per_worker": 64, "verbose": 0},
    "early_stopping": {"enabled": False},
    "checkpoint": {"keep_best": 1},
    "tensorboard": {"histogram_freq": 0},
    "data": {"train_examples": 3000, "validation_examples": 1000, "test_examples": 1000},
    "search": {
        "samples": 1,
        "workers_per_trial": 1,
        "max_concurrent": 2,
        "asha": {"enabled": False},
        "space": {
            "optimizer.learning_rate": {"grid": [0.004, 0.002, 0.001, 0.0005]},
            "lr_schedule": {"constant": {}},
        },
    },
}

RUN_TIMEOUT = 240      # one whole CLI run on a busy 2-core machine
STOP_TIMEOUT = 30      # Ctrl-C to exit


# ------------------------------------------------------------------ helpers

class Cli:
    """One ``orchestrator`` command in its own session, output to files, killed by its pgid at the end."""

    def __init__(self, args: list[str], log_dir: Path, tag: str):
        self.args = args
        self.stdout_path = log_dir / f"{tag}.stdout"
        self.stderr_path = log_dir / f"{tag}.stderr"
        env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
        env["PYTHONUNBUFFERED"] = "1"
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen([sys.executable, "-m", "orchestrator.cli", *args],
                                         stdout=out, stderr=err, stdin=subprocess.DEVNULL,
                                         start_new_session=True, env=env)
        self.pgid = self.proc.pid  # a new session: its leader's pid is the group id

    @property
    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace")

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def output_tail(self, chars: int = 4000) -> str:
        return f"--- stdout ---\n{self.stdout[-chars:]}\n--- stderr ---\n{self.stderr[-chars:]}"

    def wait(self, timeout: float, what: str) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"`orchestrator {' '.join(self.args)}` did not {what} within {timeout:.0f} s\n"
                        + self.output_tail())

    def members(self) -> list[int]:
        return session_members(self.pgid)

    def kill_group(self) -> None:
        """SIGKILL everything in this command's session (its process group and any that left it)."""
        for pid in [self.pgid, *self.members()]:
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        try:
            os.killpg(self.pgid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass

    def wait_group_gone(self, timeout: float) -> list[int]:
        """Wait until no process of this session is left; returns the ones still alive (empty: none)."""
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is None:
                left = [self.proc.pid, *self.members()]
            else:
                left = self.members()
            if not left or time.monotonic() > deadline:
                return left
            time.sleep(0.5)


def session_members(sid: int) -> list[int]:
    """Live (non-zombie) processes whose session or process group is ``sid``, from /proc."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        # pid (comm) state ppid pgrp session ...; comm may hold spaces and parentheses.
        fields = stat[stat.rindex(")") + 2:].split()
        state, pgrp, session = fields[0], int(fields[2]), int(fields[3])
        if state != "Z" and (pgrp == sid or session == sid):
            found.append(int(entry))
    return found


def process_alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return state[state.rindex(")") + 2] != "Z"


@pytest.fixture
def cli(tmp_path):
    """Start ``orchestrator`` commands; whatever is left of them is killed by pgid at teardown."""
    started: list[Cli] = []

    def start(*args: str, tag: str = "run") -> Cli:
        command = Cli(list(args), tmp_path, f"{tag}{len(started)}")
        started.append(command)
        return command

    yield start
    for command in started:
        command.kill_group()
        command.wait_group_gone(30)


def wait_for(condition: Callable[[], object], timeout: float, what: str,
              command: Optional[Cli] = None, interval: float = 0.25):
    """Poll ``condition`` until it returns something truthy; fail with ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        if command is not None and command.proc.poll() is not None:
            pytest.fail(f"waiting for {what}, the command exited with {command.proc.returncode}\n"
                        + command.output_tail())
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}"
                + ("\n" + command.output_tail() if command else ""))


def read_json_or_none(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def checkpointed_epoch(run_dir: Path) -> int:
    """The latest epoch saved in one of the run's checkpoints (0: none yet)."""
    epochs = [0]
    for state in run_dir.glob("checkpoint_*/state.json"):
        data = read_json_or_none(state)
        if data:
            epochs.append(data["epoch"])
    return max(epochs)


def write_config(tmp_path: Path, config: dict, mnist_path: Path, name: str) -> Path:
    config = json.loads(json.dumps(config))
    config["data"]["path"] = str(mnist_path)
    path = tmp_path / name
    path.write_text(yaml.safe_dump(config))
    return path


def assert_continuous_history(result: dict, epochs: int) -> None:
    history = result["history"]
    assert [h["epoch"] for h in history] == list(range(1, epochs + 1)), \
        f"history epochs {[h['epoch'] for h in history]}"
    assert result["epochs_run"] == epochs and result["stop_reason"] == "max_epochs"
    for epoch, row in enumerate(history):
        assert math.isclose(row["learning_rate"], SCHEDULE(epoch, 1e-3), rel_tol=1e-6), (epoch, row)


def assert_best_checkpoint_kept(result: dict) -> None:
    best = min(result["history"], key=lambda h: h["val_loss"])
    assert result["best"]["epoch"] == best["epoch"]
    checkpoint = Path(result["best"]["checkpoint"])
    assert (checkpoint / "weights.h5").is_file(), f"best checkpoint {checkpoint} is gone"
    state = json.loads((checkpoint / "state.json").read_text())
    assert state["epoch"] == best["epoch"]
    assert Path(result["evaluation"]["exported_model"]).is_file()
    assert result["evaluation"]["best_checkpoint_reloaded"]["accuracy"] > 0.8


# ------------------------------------------------------------ 1. worker killed

def test_a_killed_worker_is_replaced_and_training_continues_where_it_was(cli, tmp_path, mnist_path):
    config = write_config(tmp_path, TRAIN_CONFIG, mnist_path, "train.yaml")
    storage, name = tmp_path / "results", "worker-killed"
    run_dir = storage / name
    run = cli("train", "--config", str(config), "--storage", str(storage), "--name", name, tag="train")

    wait_for(lambda: checkpointed_epoch(run_dir) >= 2, RUN_TIMEOUT, "2 checkpointed epochs", run)
    roster = wait_for(lambda: read_json_or_none(run_dir / "workers.json"), 30, "workers.json", run)
    victim = next(w["pid"] for w in roster["workers"] if w["world_rank"] == 1)
    assert process_alive(victim), f"rank 1 (pid {victim}) is not running"
    killed_at = checkpointed_epoch(run_dir)
    os.kill(victim, signal.SIGKILL)

    assert run.wait(RUN_TIMEOUT, "finish after the worker was killed") == 0, run.output_tail()
    assert not process_alive(victim)
    assert killed_at < TRAIN_CONFIG["training"]["epochs"], "the run had finished before the kill"

    result = json.loads((run_dir / "result.json").read_text())
    assert_continuous_history(result, TRAIN_CONFIG["training"]["epochs"])
    roster = json.loads((run_dir / "workers.json").read_text())
    assert len(roster["groups"]) >= 2, roster
    assert sorted(w["world_rank"] for w in roster["workers"]) == [0, 1]
    assert victim not in {w["pid"] for w in roster["workers"]}
    assert_best_checkpoint_kept(result)
