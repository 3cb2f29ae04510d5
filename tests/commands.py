"""The real ``orchestrator`` command in its own session, and what it leaves on disk.

Helpers for the tests that kill, interrupt, fill the disk under and resume it
(test_interrupts.py, test_reliability.py, test_resume_fidelity.py,
test_object_storage.py). Every run is the real command in its own session
(``start_new_session=True``): it starts its own local Ray (with its own Ray
temp dir, so another Ray on the machine is never joined), and a test ends it
by signalling that session's processes only. Nothing is stopped by name.
Every wait has a deadline and fails with what it was waiting for and the
command's output. The ``cli`` fixture (conftest.py) starts them.
"""

from __future__ import annotations

import json
import math
import os
import re
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Optional

import pytest
import yaml
from conftest import search_config

from orchestrator.schedules import HoldThenExpDecay

# Each epoch of 6000 examples at batch 64 x 2 workers takes about a second here.
TRAIN_CONFIG = {
    "seed": 7,
    "training": {"epochs": 7, "batch_size_per_worker": 64, "verbose": 0},
    "lr_schedule": {"name": "hold_then_exp_decay", "hold_epochs": 2, "rate": 0.5},
    "early_stopping": {"enabled": False},
    "checkpoint": {"keep_best": 1},
    "tensorboard": {"histogram_freq": 0},
    "scaling": {"workers": 2, "max_failures": 2},
    "data": {"train_examples": 6000, "validation_examples": 1000, "test_examples": 1000},
}
SCHEDULE = HoldThenExpDecay(hold_epochs=2, rate=0.5)

# Epochs of about a second even on an idle machine: a kill can land while a trial runs.
SEARCH_CONFIG = search_config({"optimizer.learning_rate": {"grid": [0.004, 0.002, 0.001, 0.0005]},
                               "lr_schedule": {"constant": {}}},
                              epochs=4, batch_size=16, train_examples=12000, asha={"enabled": False})

RUN_TIMEOUT = 420      # one whole CLI run: ~40 s alone, past 200 s on a 2-core machine shared with other runs
STOP_TIMEOUT = 30      # Ctrl-C to exit, as a user waits for it
ORPHAN_GRACE = 60      # after exit, for the local Ray's processes to be gone


# ------------------------------------------------------------------ helpers

class Cli:
    """One ``orchestrator`` command in its own session, output to files, killed by its pgid at the end."""

    def __init__(self, args: list[str], log_dir: Path, tag: str):
        self.args = args
        self.stdout_path = log_dir / f"{tag}.stdout"
        self.stderr_path = log_dir / f"{tag}.stderr"
        env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
        env["PYTHONUNBUFFERED"] = "1"
        # Its own Ray temp dir: other Rays on this machine (other test runs) are not found
        # through /tmp/ray/ray_current_cluster and joined instead of starting a local one.
        # Short, for Ray's unix socket paths.
        self.ray_tmp = tempfile.mkdtemp(prefix="rel-ray-", dir="/tmp")
        env["RAY_TMPDIR"] = self.ray_tmp
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
        """SIGKILL what is left of this command: itself, and every process of its session."""
        if self.proc.poll() is None:  # not reaped yet, so the pid is still ours
            self.proc.kill()
        for pid in self.members():
            try:
                os.kill(pid, signal.SIGKILL)
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


def write_config(tmp_path: Path, config: dict, mnist_path: Path, name: str) -> Path:
    config = json.loads(json.dumps(config))
    config["task"] = {**config.get("task", {}), "path": str(mnist_path)}
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


def reported_epoch(run_dir: Path) -> int:
    """The latest epoch whose checkpoint Ray Train has registered (what a restart resumes from)."""
    snapshot = read_json_or_none(run_dir / "checkpoint_manager_snapshot.json")
    latest = (snapshot or {}).get("latest_checkpoint_result") or {}
    return int((latest.get("metrics") or {}).get("epoch") or 0)


def tune_results(run_dir: Path) -> dict[str, list[dict]]:
    """Tune's per-trial result rows (``<run>/<trial dir>/result.json``), by trial id."""
    found = {}
    for path in run_dir.glob("*/result.json"):
        rows = []
        try:
            text = path.read_text()
        except OSError:
            continue
        for line in text.splitlines():
            try:
                rows.append(json.loads(line))
            except ValueError:
                break  # a line being written
        if rows:
            found[rows[0]["trial_id"]] = rows
    return found


def finished_trials(run_dir: Path) -> list[str]:
    return [trial for trial, rows in tune_results(run_dir).items() if rows[-1].get("stop_reason")]


def trial_epochs(run_dir: Path) -> dict[str, int]:
    """Each started trial's latest epoch on storage (written at once, unlike Tune's rows): the one its
    Train run registered, or on the fast path (no Train run) its newest complete checkpoint's."""
    from orchestrator.checkpoint_files import newest_complete_checkpoint

    trials = run_dir / "trials"
    return {p.name: max(reported_epoch(p), int((newest_complete_checkpoint(p) or (None, {"epoch": 0}))[1]["epoch"]))
            for p in trials.iterdir()} if trials.is_dir() else {}


def one_finished_one_running(run_dir: Path, epochs: int = SEARCH_CONFIG["training"]["epochs"]
                             ) -> Optional[tuple[list[str], list[str]]]:
    """(finished, running) trial ids once a trial has finished while another is early in its run.

    "Early": at most half its epochs done, so it is unlikely to finish between this check and a kill.
    """
    finished = finished_trials(run_dir)
    running = [t for t, epoch in trial_epochs(run_dir).items()
               if t not in finished and 1 <= epoch <= epochs // 2]
    return (finished, running) if finished and running else None


def checkpoint_listing(directory: Path) -> dict[str, tuple]:
    """A trial's Train checkpoints, every file with its size and mtime: what retraining would change.

    (Not Ray's ``.validate_storage_marker``, which Train rewrites whenever a run starts.)
    """
    return {str(p.relative_to(directory)): (p.stat().st_size, p.stat().st_mtime_ns)
            for c in sorted(directory.glob("checkpoint_*")) for p in [c, *sorted(c.rglob("*"))]}


def resumed_epochs(command: Cli) -> list[int]:
    """The epochs whose checkpoint a worker group said it resumed from, in order."""
    return [int(m) for m in re.findall(r"\[orchestrator\] resuming from the checkpoint of epoch (\d+)",
                                       command.stdout + command.stderr)]


def resume_command(stderr: str) -> list[str]:
    """The command the interrupt message tells the user to run, as argv after `orchestrator`."""
    hint = [line for line in stderr.splitlines() if "resume with: orchestrator " in line]
    assert hint, f"no resume hint in stderr:\n{stderr[-3000:]}"
    argv = shlex.split(hint[-1].split("resume with: orchestrator ", 1)[1])
    assert "--resume" in argv
    return argv
