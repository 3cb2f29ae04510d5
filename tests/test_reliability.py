"""Reliability, done for real: killed workers, a killed driver, Ctrl-C, torn writes, two commands on one
name, damaged files, a full disk, and kills during a search.

Every run here is the real ``orchestrator`` command in its own session
(``start_new_session=True``): it starts its own local Ray (with its own Ray
temp dir, so another Ray on the machine is never joined), and a test ends it
by signalling that session's processes only. Nothing is stopped by name.
Every wait has a deadline and fails with what it was waiting for and the
command's output.
"""

from __future__ import annotations

import json
import math
import os
import random
import re
import select
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Optional

import pytest
import yaml
from conftest import pbt_search_config, search_config

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
        shutil.rmtree(command.ray_tmp, ignore_errors=True)


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

    "Early": at least two epochs to go, so it cannot finish between this check and a kill.
    """
    finished = finished_trials(run_dir)
    running = [t for t, epoch in trial_epochs(run_dir).items()
               if t not in finished and 1 <= epoch <= epochs - 2]
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


# ------------------------------------------------------------ 1. worker killed

def test_a_killed_worker_is_replaced_and_training_continues_where_it_was(cli, tmp_path, mnist_path):
    config = write_config(tmp_path, TRAIN_CONFIG, mnist_path, "train.yaml")
    storage, name = tmp_path / "results", "worker-killed"
    run_dir = storage / name
    epochs = TRAIN_CONFIG["training"]["epochs"]
    run = cli("train", "--config", str(config), "--storage", str(storage), "--name", name, tag="train")

    wait_for(lambda: reported_epoch(run_dir) >= 2, RUN_TIMEOUT, "Ray Train to register epoch 2", run)
    roster = wait_for(lambda: read_json_or_none(run_dir / "workers.json"), 30, "workers.json", run)
    victim = next(w["pid"] for w in roster["workers"] if w["world_rank"] == 1)
    assert process_alive(victim), f"rank 1 (pid {victim}) is not running"
    killed_after = reported_epoch(run_dir)
    assert killed_after < epochs, "the run had finished before the kill; make epochs longer"
    os.kill(victim, signal.SIGKILL)  # mid-epoch: the next epoch is running now

    assert run.wait(RUN_TIMEOUT, "finish after a worker was killed") == 0, run.output_tail()
    assert not process_alive(victim)

    result = json.loads((run_dir / "result.json").read_text())
    # Ray Train restarted the group from a registered checkpoint, not from scratch.
    resumed = result["resumed_from_epochs"]
    assert resumed and resumed[0] >= killed_after, (resumed, killed_after)
    assert_continuous_history(result, epochs)
    roster = json.loads((run_dir / "workers.json").read_text())
    assert len(roster["groups"]) >= 2, roster
    assert sorted(w["world_rank"] for w in roster["workers"]) == [0, 1]
    assert victim not in {w["pid"] for w in roster["workers"]}
    assert result["workers"] == roster["workers"]
    assert_best_checkpoint_kept(result)


# ------------------------------------------------------------ 2. driver killed

@pytest.mark.parametrize("fast_path", [False, True], ids=["ray-train", "fast-path"])
def test_a_search_whose_driver_was_killed_resumes_without_rerunning_finished_trials(cli, tmp_path, mnist_path,
                                                                                     fast_path):
    # fast path: each trial trains in its (reused) Tune actor instead of a Ray Train worker group. Trials
    # of a slot start together and run in step there, and Tune's rows lag its trials by seconds: more
    # epochs keep the moment of the kill (a trial done, another with epochs to go) seconds long.
    training = {**SEARCH_CONFIG["training"], **({"epochs": 8} if fast_path else {})}
    epochs = training["epochs"]
    config = write_config(tmp_path, {**SEARCH_CONFIG, "training": training,
                                     "search": {**SEARCH_CONFIG["search"], "fast_path": fast_path}},
                          mnist_path, "search.yaml")
    storage, name = tmp_path / "results", "driver-killed"
    run_dir = storage / name
    args = ["tune", "--config", str(config), "--storage", str(storage), "--name", name]
    search = cli(*args, tag="tune")

    done, running = wait_for(lambda: one_finished_one_running(run_dir, epochs), RUN_TIMEOUT,
                             "a finished trial while another one runs", search, interval=0.1)
    os.killpg(search.pgid, signal.SIGKILL)  # the driver, its local Ray and every worker
    left = search.wait_group_gone(ORPHAN_GRACE)
    assert not left, f"processes of the killed search still alive: {left}"
    assert not (run_dir / "summary.json").exists(), "the search had finished before the kill"

    before = tune_results(run_dir)
    finished = {trial: (before[trial], checkpoint_listing(run_dir / "trials" / trial))
                for trial in finished_trials(run_dir)}
    assert set(done) <= set(finished) and not set(running) & set(finished)

    resumed = cli(*args, "--resume", tag="tune-resume")
    assert resumed.wait(RUN_TIMEOUT, "finish the resumed search") == 0, resumed.output_tail()

    summary = json.loads((run_dir / "summary.json").read_text())
    rows = summary["results"]
    assert summary["trials"] == 4 and len(rows) == 4
    assert len({r["trial_id"] for r in rows}) == 4
    assert sorted(r["config"]["optimizer.learning_rate"] for r in rows) == [0.0005, 0.001, 0.002, 0.004]
    for row in rows:
        assert row["status"] == "TERMINATED", row
        assert row["stop_reason"] == f"max_epochs ({epochs})", row
        assert [h["epoch"] for h in row["history"]] == list(range(1, epochs + 1)), row
        assert Path(row["best_checkpoint"]).is_dir(), row

    by_id = {r["trial_id"]: r for r in rows}
    after = tune_results(run_dir)
    for trial, (old_rows, old_files) in finished.items():
        # Not retrained: its Train checkpoints are exactly as they were, file by file.
        assert checkpoint_listing(run_dir / "trials" / trial) == old_files, f"trial {trial} was retrained"
        # Its results are kept, each epoch once: the summary has what it reported before the kill.
        row = by_id[trial]
        assert [(h["epoch"], h["val_loss"]) for h in row["history"]] == \
            [(r["epoch"], r["val_loss"]) for r in old_rows]
        assert row["best_val_loss"] == min(r["val_loss"] for r in old_rows)
        assert Path(row["best_checkpoint"]).name in old_files
        # Tune's own rows for it are not repeated either.
        tune_epochs = [r["epoch"] for r in after.get(trial, [])]
        assert len(tune_epochs) == len(set(tune_epochs)), tune_epochs
    # A trial cut off mid-run went on from its last checkpoint, not from scratch:
    # its record says so (the console line can be lost with a worker's log stream).
    for trial in running:
        assert by_id[trial]["resumed_from_epochs"] and by_id[trial]["resumed_from_epochs"][0] >= 1, \
            f"trial {trial}, running at the kill, did not resume from a checkpoint\n" + resumed.output_tail()
    assert Path(summary["evaluation"]["exported_model"]).is_file()


PBT_SEARCH_CONFIG = pbt_search_config(epochs=6)


def recorded_copies(run_dir: Path) -> list[dict]:
    """Copies recorded in the members' Tune checkpoints so far (each member's lineage.json)."""
    copies = []
    for lineage in run_dir.glob("run_pbt_trial_*/checkpoint_*/lineage.json"):
        try:
            copies += [c for c in json.loads(lineage.read_text())["copies"] if c not in copies]
        except (OSError, ValueError):
            pass
    return copies


def test_a_pbt_search_whose_driver_was_killed_resumes_its_population_and_lineage(cli, tmp_path, mnist_path):
    config = write_config(tmp_path, PBT_SEARCH_CONFIG, mnist_path, "pbt.yaml")
    storage, name = tmp_path / "results", "pbt-killed"
    run_dir = storage / name
    args = ["tune", "--config", str(config), "--storage", str(storage), "--name", name]
    search = cli(*args, tag="pbt")
    # Killed once a member has copied another and trained on from it.
    copies = wait_for(lambda: recorded_copies(run_dir), RUN_TIMEOUT, "a PBT copy", search, interval=0.1)
    os.killpg(search.pgid, signal.SIGKILL)
    assert not search.wait_group_gone(ORPHAN_GRACE), "processes of the killed search still alive"
    assert not (run_dir / "summary.json").exists(), "the search had finished before the kill"

    resumed = cli(*args, "--resume", tag="pbt-resume")
    assert resumed.wait(RUN_TIMEOUT, "finish the resumed PBT search") == 0, resumed.output_tail()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["trials"] == 2 and len({r["trial_id"] for r in summary["results"]}) == 2
    epochs = PBT_SEARCH_CONFIG["training"]["epochs"]
    for row in summary["results"]:
        assert row["status"] == "TERMINATED", row["stop_reason"]
        assert [h["epoch"] for h in row["history"]] == list(range(1, epochs + 1)), row["trial_id"]
    # The population went on from its checkpoints (not from scratch), lineage included:
    # the copy made before the kill is still in the copier's record, with who trained what.
    assert resumed_epochs(resumed), resumed.output_tail()
    lineages = [c for row in summary["results"] for c in row["lineage"]]
    first = copies[0]
    assert {k: first[k] for k in ("member", "from", "epoch")} in \
        [{k: c[k] for k in ("member", "from", "epoch")} for c in lineages], (copies, lineages)


# ------------------------------------------------------------ 3. stopped by the user

def _assert_stopped_cleanly(command: Cli, started: float) -> None:
    code = command.wait(STOP_TIMEOUT, "stop within 30 s of Ctrl-C")
    assert time.monotonic() - started < STOP_TIMEOUT
    assert code == 130, f"exit status {code}\n{command.output_tail()}"
    assert "interrupted" in command.stderr and "--resume" in command.stderr, command.output_tail()
    left = command.wait_group_gone(ORPHAN_GRACE)
    assert not left, "orphans after Ctrl-C: " + "; ".join(
        f"{pid}: {Path(f'/proc/{pid}/cmdline').read_bytes()[:120]!r}" for pid in left if process_alive(pid))


def test_ctrl_c_stops_training_cleanly_and_the_hinted_resume_finishes_it(cli, tmp_path, mnist_path):
    epochs = 5
    config = write_config(tmp_path, {**TRAIN_CONFIG, "training": {**TRAIN_CONFIG["training"], "epochs": epochs}},
                          mnist_path, "my train.yaml")  # a space in a path, as users have
    storage, name = tmp_path / "results", "interrupted"
    run_dir = storage / name
    run = cli("train", "--config", str(config), "--storage", str(storage), "--name", name, tag="train")

    wait_for(lambda: reported_epoch(run_dir) >= 1, RUN_TIMEOUT, "Ray Train to register epoch 1", run)
    stopped_after = reported_epoch(run_dir)
    assert stopped_after < epochs
    started = time.monotonic()
    os.killpg(run.pgid, signal.SIGINT)  # what Ctrl-C in a terminal does
    _assert_stopped_cleanly(run, started)
    assert not (run_dir / "result.json").exists()

    argv = resume_command(run.stderr)
    resumed = cli(*argv, tag="train-resume")
    assert resumed.wait(RUN_TIMEOUT, "finish the resumed run") == 0, resumed.output_tail()
    resumed_from = resumed_epochs(resumed)
    assert resumed_from and stopped_after <= resumed_from[0] < epochs, resumed.output_tail()
    result = json.loads((run_dir / "result.json").read_text())
    assert_continuous_history(result, epochs)
    assert_best_checkpoint_kept(result)


def test_ctrl_c_stops_a_search_cleanly_and_the_hinted_resume_finishes_it(cli, tmp_path, mnist_path):
    epochs = SEARCH_CONFIG["training"]["epochs"]
    two_trials = {**SEARCH_CONFIG, "search": {**SEARCH_CONFIG["search"], "space": {
                 "optimizer.learning_rate": {"grid": [0.004, 0.002]}, "lr_schedule": {"constant": {}}}}}
    config = write_config(tmp_path, two_trials, mnist_path, "search.yaml")
    storage, name = tmp_path / "results", "search-interrupted"
    run_dir = storage / name
    search = cli("tune", "--config", str(config), "--storage", str(storage), "--name", name, tag="tune")

    wait_for(lambda: any(1 <= e <= epochs - 2 for e in trial_epochs(run_dir).values()), RUN_TIMEOUT,
             "a trial's first epoch", search, interval=0.1)
    started = time.monotonic()
    os.killpg(search.pgid, signal.SIGINT)
    _assert_stopped_cleanly(search, started)
    assert not (run_dir / "summary.json").exists(), "an interrupted search was summarized as finished"
    argv = resume_command(search.stderr)
    assert argv[:1] == ["tune"] and argv[argv.index("--name") + 1] == name

    resumed = cli(*argv, tag="tune-resume")
    assert resumed.wait(RUN_TIMEOUT, "finish the resumed search") == 0, resumed.output_tail()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["trials"] == 2 and len({r["trial_id"] for r in summary["results"]}) == 2
    for row in summary["results"]:
        assert row["stop_reason"] == f"max_epochs ({epochs})", row
        assert [h["epoch"] for h in row["history"]] == list(range(1, epochs + 1)), row


# ------------------------------------------------------------ 4. atomic outputs

WRITER = """
import sys
from orchestrator.results import write_json_atomic
path, generation = sys.argv[1], int(sys.argv[2])
print("writing", flush=True)
while True:
    generation += 1
    # 8 MB whose length changes with each generation: a torn or mixed file cannot pass.
    write_json_atomic(path, {"generation": generation, "text": "x" * (8_000_000 + generation),
                             "end": generation})
"""


def test_a_result_file_killed_mid_write_is_the_old_or_the_new_one_never_torn(tmp_path):
    from orchestrator.results import write_json_atomic

    directory = tmp_path / "run"
    target = directory / "result.json"
    write_json_atomic(target, {"generation": 0, "text": "x" * 8_000_000, "end": 0})
    rng = random.Random(1234)
    generation, generations, leftovers = 0, [], set()
    for _ in range(30):
        writer = subprocess.Popen([sys.executable, "-c", WRITER, str(target), str(generation)],
                                  stdout=subprocess.PIPE, text=True)
        try:
            assert select.select([writer.stdout], [], [], 60)[0], "the writer did not start within 60 s"
            assert writer.stdout.readline().strip() == "writing"
            time.sleep(rng.uniform(0.0, 0.3))
        finally:
            writer.kill()
            writer.wait(timeout=30)
            writer.stdout.close()
        data = json.loads(target.read_text())  # a torn file fails here
        assert data["end"] == data["generation"] >= generation
        assert len(data["text"]) == 8_000_000 + data["generation"]
        generation = data["generation"]
        generations.append(generation)
        others = {p.name for p in directory.iterdir()} - {"result.json"}
        # A kill mid-write leaves its temporary file: hidden, and never named like a result.
        assert all(n.startswith(".result.json.") and n.endswith(".tmp") for n in others), others
        leftovers |= others
    assert generations[-1] > 0, "the writer never completed a write"
    assert leftovers, "no kill landed in the middle of a write: nothing was tested"
    assert sorted(p.name for p in directory.glob("*.json")) == ["result.json"]
    assert sorted(p.name for p in directory.glob("result*")) == ["result.json"]


# ------------------------------------------------------------ 5. one owner per name

SMALL_TRAIN = {**TRAIN_CONFIG, "training": {**TRAIN_CONFIG["training"], "epochs": 3},
               "scaling": {"workers": 1, "max_failures": 2}, "checkpoint": {"keep_best": 2},
               "data": {"train_examples": 3000, "validation_examples": 1000, "test_examples": 1000}}


def event_file_pids(directory: Path) -> list[int]:
    """The writer pid in each TensorBoard event file's name (events.out.tfevents.<time>.<host>.<pid>.<n>.v2)."""
    return [int(p.name.split(".")[-3]) for p in directory.rglob("events.out.tfevents.*")]


def test_two_commands_on_one_name_the_second_refuses_in_one_line_and_touches_nothing(cli, tmp_path, mnist_path):
    import socket

    config = write_config(tmp_path, {**SMALL_TRAIN, "training": {**SMALL_TRAIN["training"], "epochs": 2}},
                          mnist_path, "train.yaml")
    storage, name = tmp_path / "results", "contended"
    run_dir = storage / name
    args = ["train", "--config", str(config), "--storage", str(storage), "--name", name]
    first, second = cli(*args, tag="a"), cli(*args, tag="b")  # started together

    loser = wait_for(lambda: next((c for c in (first, second) if c.proc.poll() is not None), None), 120,
                     "one of the two commands to give up")
    winner = second if loser is first else first
    assert winner.proc.poll() is None, "both commands ended:\n" + first.output_tail() + second.output_tail()
    assert loser.proc.returncode == 2, loser.output_tail()
    lines = [line for line in loser.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and loser.stdout.strip() == "", loser.output_tail()
    match = re.fullmatch(rf"error: run '{name}' is in use by pid (\d+) on host (\S+) since "
                         r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) UTC \(\.owner\.json in .*\); .*", lines[0])
    assert match, lines[0]
    assert int(match[1]) == winner.proc.pid and match[2] == socket.gethostname()
    assert os.listdir(loser.ray_tmp) == [], "the loser started a Ray"

    assert winner.wait(RUN_TIMEOUT, "finish") == 0, winner.output_tail()
    result = json.loads((run_dir / "result.json").read_text())
    assert [h["epoch"] for h in result["history"]] == [1, 2]
    # Only the winner's files: one worker group, one TensorBoard writer (its chief), nothing else.
    roster = json.loads((run_dir / "workers.json").read_text())
    assert len(roster["groups"]) == 1
    assert set(event_file_pids(run_dir / "tensorboard")) == {roster["workers"][0]["pid"]}
    assert len(list((run_dir / "tensorboard").rglob("events.out.tfevents.*"))) == 2  # train/ + validation/
    for state in run_dir.glob("checkpoint_*/state.json"):
        saved = json.loads(state.read_text())
        assert saved["history"] == result["history"][:saved["epoch"]]
    assert not (run_dir / ".owner.json").exists(), "the winner did not release the name"


def test_a_sigkilled_owner_does_not_block_resume(cli, tmp_path, mnist_path, monkeypatch):
    config = write_config(tmp_path, SMALL_TRAIN, mnist_path, "train.yaml")
    storage, name = tmp_path / "results", "owner-killed"
    run_dir = storage / name
    args = ["train", "--config", str(config), "--storage", str(storage), "--name", name]
    # The whole command SIGKILLed right after epoch 1's report, whatever the machine's speed
    # (a kill after polling for the epoch could land when all 3 short epochs were done).
    marker = tmp_path / "killed.pid"
    monkeypatch.setenv("ORCHESTRATOR_TEST_KILL_AFTER_REPORT", f"0:1:killpg:{marker}")
    run = cli(*args, tag="train")
    run.wait(RUN_TIMEOUT, "be killed by the hook")
    assert marker.exists(), "the hook never killed the command\n" + run.output_tail()
    assert not run.wait_group_gone(ORPHAN_GRACE)
    monkeypatch.delenv("ORCHESTRATOR_TEST_KILL_AFTER_REPORT")
    record = json.loads((run_dir / ".owner.json").read_text())
    assert record["pid"] == run.proc.pid and not process_alive(record["pid"])  # left behind, stale

    resumed = cli(*args, "--resume", tag="resume")
    assert resumed.wait(RUN_TIMEOUT, "finish the resumed run") == 0, resumed.output_tail()
    assert resumed_epochs(resumed), resumed.output_tail()
    result = json.loads((run_dir / "result.json").read_text())
    assert [h["epoch"] for h in result["history"]] == [1, 2, 3]
    assert not (run_dir / ".owner.json").exists()


def test_an_owner_is_stale_only_when_provably_dead(tmp_path, monkeypatch):
    """The rules that let ``--resume`` take a name over: dead pid, reused pid, reboot, silent remote host."""
    import socket

    from orchestrator import ownership
    from orchestrator.errors import UserError

    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        here = {"host": socket.gethostname(), "boot_id": ownership.boot_id(), "since": time.time(),
                "heartbeat": time.time()}
        alive = {**here, "pid": live.pid, "pid_start": ownership.process_start(live.pid)}
        assert ownership.stale_reason(alive) is None
        assert "another process" in ownership.stale_reason({**alive, "pid_start": "1"})  # pid reused
        assert "rebooted" in ownership.stale_reason({**alive, "boot_id": "another-boot"})
        remote = {**alive, "host": "some-other-host"}
        assert ownership.stale_reason(remote) is None  # cannot be probed: alive while it beats
        assert "no heartbeat" in ownership.stale_reason({**remote, "heartbeat": time.time() - 3600})

        directory = tmp_path / "run"
        directory.mkdir()
        (directory / ".owner.json").write_text(json.dumps(remote))
        with pytest.raises(UserError, match="in use by pid .* on host some-other-host"):
            ownership.acquire(directory)
        (directory / ".owner.json").write_text(json.dumps(alive))  # e.g. storage without shared locks
        with pytest.raises(UserError, match=f"in use by pid {live.pid}"):
            ownership.acquire(directory)
    finally:
        live.kill()
        live.wait()
    hold = ownership.acquire(directory)  # its pid is gone now: taken over
    try:
        assert ownership.is_me(json.loads((directory / ".owner.json").read_text()))
    finally:
        hold.release()
    assert not (directory / ".owner.json").exists()


# ------------------------------------------------------------ 6. corrupted files

TINY_SEARCH = {**SEARCH_CONFIG, "training": {**SEARCH_CONFIG["training"], "epochs": 2},
               "checkpoint": {"keep_best": 2},
               "data": {"train_examples": 3000, "validation_examples": 1000, "test_examples": 1000},
               "search": {**SEARCH_CONFIG["search"], "space": {
                   "optimizer.learning_rate": {"grid": [0.002]}, "lr_schedule": {"constant": {}}}}}


def _finished(kind: str, config: dict, tmp_path_factory, mnist_path: Path) -> tuple[Path, Path]:
    """(config file, run dir) of one real finished run or search, made once per module."""
    base = tmp_path_factory.mktemp(f"finished-{kind}")
    config_path = write_config(base, config, mnist_path, f"{kind}.yaml")
    command = Cli([kind, "--config", str(config_path), "--storage", str(base / "results"), "--name", "made"],
                  base, kind)
    try:
        assert command.wait(RUN_TIMEOUT, "finish") == 0, command.output_tail()
    finally:
        command.kill_group()
        shutil.rmtree(command.ray_tmp, ignore_errors=True)
    return config_path, base / "results" / "made"


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, mnist_path):
    return _finished("train", SMALL_TRAIN, tmp_path_factory, mnist_path)


@pytest.fixture(scope="module")
def finished_search(tmp_path_factory, mnist_path):
    return _finished("tune", TINY_SEARCH, tmp_path_factory, mnist_path)


def truncate(path: Path) -> Path:
    path.write_bytes(path.read_bytes()[:path.stat().st_size // 2])
    return path


def edit_json(path: Path, **changes) -> Path:
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))
    return path


def listing(directory: Path) -> dict[str, tuple]:
    return {str(p.relative_to(directory)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in directory.rglob("*") if not p.name.startswith(".owner")}


def each_checkpoint(run_dir: Path, damage: Callable[[Path], Path]) -> Path:
    """Damage every kept checkpoint the same way (no complete one to fall back to); returns the latest's file."""
    hit = [damage(c) for c in sorted(run_dir.glob("checkpoint_2*"))]
    assert len(hit) >= 2, hit
    return hit[-1]


def assert_resume_refused(command: str, config: Path, run_dir: Path, damaged: Path) -> None:
    """``--resume`` of a damaged run or search: one line naming the file, exit 2, nothing changed."""
    before = listing(run_dir)
    out = subprocess.run([sys.executable, "-m", "orchestrator.cli", command, "--config", str(config),
                          "--storage", str(run_dir.parent), "--name", run_dir.name, "--resume"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2, out.stdout + out.stderr
    assert out.stdout == "" and len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert out.stderr.startswith("error: ") and str(damaged) in out.stderr, out.stderr
    assert "Traceback" not in out.stderr
    assert listing(run_dir) == before, f"a refused {command} changed {run_dir}"


TRAIN_DAMAGE = {
    "weights.h5 truncated": lambda d: each_checkpoint(d, lambda c: truncate(c / "weights.h5")),
    "best.weights.h5 truncated": lambda d: each_checkpoint(d, lambda c: truncate(c / "best.weights.h5")),
    "state.json epoch is text": lambda d: each_checkpoint(d, lambda c: edit_json(c / "state.json", epoch="2")),
    "state.json history not a list": lambda d: each_checkpoint(
        d, lambda c: edit_json(c / "state.json", history={"epoch": 1})),
    "Ray Train's snapshot cut in half, no complete checkpoint to rebuild it from": lambda d: (
        each_checkpoint(d, lambda c: truncate(c / "weights.h5")),
        truncate(d / "checkpoint_manager_snapshot.json"))[1],
    "result.json cut in half": lambda d: truncate(d / "result.json"),
}


def test_a_truncated_latest_checkpoint_falls_back_to_the_previous_one_and_says_so(cli, finished_run, tmp_path):
    config, made = finished_run
    storage = tmp_path / "results"
    run_dir = storage / "fallback"
    shutil.copytree(made, run_dir)
    (run_dir / "result.json").unlink()
    latest = max(run_dir.glob("checkpoint_2*/state.json"), key=lambda p: json.loads(p.read_text())["epoch"]).parent
    truncate(latest / "weights.h5")
    run = cli("train", "--config", str(config), "--storage", str(storage), "--name", "fallback", "--resume")
    assert run.wait(RUN_TIMEOUT, "finish from the previous checkpoint") == 0, run.output_tail()
    assert f"{latest / 'weights.h5'}: truncated or damaged HDF5" in run.stderr, run.output_tail()
    assert "resuming from the previous complete checkpoint" in run.stderr
    result = json.loads((run_dir / "result.json").read_text())
    assert result["resumed_from_epochs"] == [2], run.output_tail()  # epoch 3 redone from epoch 2
    assert [h["epoch"] for h in result["history"]] == [1, 2, 3]
    assert (run_dir / f"corrupt-{latest.name}").is_dir()  # kept for a look, out of Ray's way


def _trial_dir(run_dir: Path) -> Path:
    return next((run_dir / "trials").iterdir())


SEARCH_DAMAGE = {
    "tuner.pkl missing": lambda d: (d / "tuner.pkl").unlink() or d / "tuner.pkl",
    "experiment state missing": lambda d: [p.unlink() for p in d.glob("experiment_state-*.json")] and
    d / "experiment_state-",
    "experiment state cut in half": lambda d: truncate(max(d.glob("experiment_state-*.json"))),
    "a trial's state.json with wrong types": lambda d: each_checkpoint(
        _trial_dir(d), lambda c: edit_json(c / "state.json", epoch=None)),
    "summary.json cut in half": lambda d: truncate(d / "summary.json"),
}


@pytest.mark.parametrize("command, damage", [("train", d) for d in TRAIN_DAMAGE] + [("tune", d) for d in SEARCH_DAMAGE])
def test_a_damaged_file_is_refused_in_one_line_naming_it(request, tmp_path, command, damage):
    finished, final, table = {"train": ("finished_run", "result.json", TRAIN_DAMAGE),
                              "tune": ("finished_search", "summary.json", SEARCH_DAMAGE)}[command]
    config, made = request.getfixturevalue(finished)
    run_dir = tmp_path / "results" / "damaged"
    shutil.copytree(made, run_dir)
    if damage != f"{final} cut in half":
        (run_dir / final).unlink()  # an interrupted run or search: what --resume is for
    assert_resume_refused(command, config, run_dir, table[damage](run_dir))


# ------------------------------------------------------------ 7. full disk

def _mount_tmpfs(directory: Path, size: str, remount: bool = False) -> subprocess.CompletedProcess:
    options = f"remount,size={size}" if remount else f"size={size}"
    return subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(directory)],
                          capture_output=True, text=True)


def test_a_full_disk_ends_in_one_line_without_retries_and_resumes_once_enlarged(cli, tmp_path, mnist_path):
    disk = tmp_path / "disk"
    disk.mkdir()
    # Room for one checkpoint (~6 MB: weights.h5, best.weights.h5 with the optimizer, train_state), not two.
    mounted = _mount_tmpfs(disk, "10m")
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (the test needs root): {mounted.stderr.strip()}")
    started: list[Cli] = []
    try:
        config = write_config(tmp_path, {**SMALL_TRAIN, "checkpoint": {"keep_best": 1}}, mnist_path, "train.yaml")
        run_dir = disk / "full"
        run = cli("train", "--config", str(config), "--storage", str(disk), "--name", "full", tag="full")
        started.append(run)
        code = run.wait(RUN_TIMEOUT, "end on the full disk")
        assert code == 2, run.output_tail()
        last = run.stderr.strip().splitlines()[-1]
        assert last.startswith(f"error: cannot write {disk}") and "no space left on device (ENOSPC)" in last, \
            run.output_tail()
        assert "resume with: orchestrator train" in last and last.endswith("--resume"), last
        driver_lines = [line for line in run.stderr.splitlines() if not line.startswith("(")]
        assert not any(line.startswith("Traceback") for line in driver_lines), run.output_tail()
        # No retry: a restarted group would say it resumed from the checkpoint it found.
        assert resumed_epochs(run) == [], run.output_tail()
        assert not (run_dir / "result.json").exists()
        from orchestrator import integrity

        # The newest complete checkpoint on disk (Ray's own record of them may be the file the disk
        # emptied: it is rewritten in place; --resume rebuilds it from the checkpoints then).
        complete = []
        for directory in run_dir.glob("checkpoint_2*"):
            try:
                complete.append(integrity.check_checkpoint(directory)["epoch"])
            except integrity.CorruptFile:
                pass
        assert complete and max(complete) < SMALL_TRAIN["training"]["epochs"], run.output_tail()

        enlarged = _mount_tmpfs(disk, "96m", remount=True)
        assert enlarged.returncode == 0, enlarged.stderr
        resumed = cli(*shlex.split(last.split("resume with: orchestrator ", 1)[1]), tag="resume")
        started.append(resumed)
        assert resumed.wait(RUN_TIMEOUT, "finish once the disk was enlarged") == 0, resumed.output_tail()
        # From one checkpoint that the disk left whole (one whose copy was cut may look whole but for
        # the size of its TF data file: --resume skips it), not from scratch.
        result = json.loads((run_dir / "result.json").read_text())
        resumed_from = result["resumed_from_epochs"]
        assert len(resumed_from) == 1 and set(resumed_from) <= set(complete), (complete, resumed.output_tail())
        assert [h["epoch"] for h in result["history"]] == [1, 2, 3]
        assert Path(result["evaluation"]["exported_model"]).is_file()
    finally:
        for command in started:  # nothing of the runs may hold the mount
            command.kill_group()
            command.wait_group_gone(30)
        if subprocess.run(["umount", str(disk)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(disk)], capture_output=True)


FULL_DISK_SEARCH = search_config({"optimizer.learning_rate": {"grid": [0.002, 0.001, 0.003]}},
                                 epochs=3, train_examples=2000, asha={"enabled": False})


def test_a_search_on_a_full_disk_stops_in_one_line_and_resumes_once_enlarged(cli, tmp_path, mnist_path):
    disk = tmp_path / "disk"
    disk.mkdir()
    # Room for a few checkpoints and events of the first two trials, not for three trials.
    mounted = _mount_tmpfs(disk, "12m")
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (the test needs root): {mounted.stderr.strip()}")
    started: list[Cli] = []
    try:
        config = write_config(tmp_path, FULL_DISK_SEARCH, mnist_path, "search.yaml")
        run_dir = disk / "full"
        search = cli("tune", "--config", str(config), "--storage", str(disk), "--name", "full", tag="full")
        started.append(search)
        assert search.wait(RUN_TIMEOUT, "end on the full disk") == 2, search.output_tail()
        last = search.stderr.strip().splitlines()[-1]
        assert last.startswith(f"error: cannot write {disk}") and "no space left on device (ENOSPC)" in last, \
            search.output_tail()
        assert "free space, then resume with: orchestrator tune" in last and last.endswith("--resume"), last
        assert not (run_dir / "summary.json").exists()

        enlarged = _mount_tmpfs(disk, "96m", remount=True)
        assert enlarged.returncode == 0, enlarged.stderr
        resumed = cli(*shlex.split(last.split("resume with: orchestrator ", 1)[1]), tag="resume")
        started.append(resumed)
        assert resumed.wait(RUN_TIMEOUT, "finish once the disk was enlarged") == 0, resumed.output_tail()
        summary = json.loads((run_dir / "summary.json").read_text())
        # Every trial ran, once, to its end: the one the disk stopped, those it never started.
        assert sorted(r["config"]["optimizer.learning_rate"] for r in summary["results"]) == [0.001, 0.002, 0.003]
        for row in summary["results"]:
            assert row["status"] == "TERMINATED" and row["stop_reason"] == "max_epochs (3)", row
            assert [h["epoch"] for h in row["history"]] == [1, 2, 3], row
    finally:
        for command in started:  # nothing of the runs may hold the mount
            command.kill_group()
            command.wait_group_gone(30)
        if subprocess.run(["umount", str(disk)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(disk)], capture_output=True)


# ------------------------------------------------------------ 8. chaos during a search

CHAOS_SEARCH = {
    "seed": 5,
    "training": {"epochs": 4, "batch_size_per_worker": 32, "verbose": 0},
    "early_stopping": {"enabled": False},
    "checkpoint": {"keep_best": 1},
    "tensorboard": {"histogram_freq": 0},
    "scaling": {"max_failures": 3},  # per trial: Ray Train restarts its worker group up to 3 times
    "data": {"train_examples": 4000, "validation_examples": 1000, "test_examples": 1000},
    "search": {
        "samples": 1, "workers_per_trial": 1, "max_concurrent": 2,
        "fast_path": False,  # kills Ray Train workers: every trial runs under Ray Train
        "max_failures_per_trial": 1,  # Tune restarts a trial whose driver died, once
        "asha": {"enabled": False},
        "space": {"optimizer.learning_rate": {"grid": [0.004, 0.003, 0.002, 0.0015, 0.001, 0.0008, 0.0006, 0.0005]},
                  "lr_schedule": {"constant": {}}},
    },
}


def _title(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
    except OSError:
        return ""


def _trial_driver_of(pid: int, trials: list[str]) -> Optional[str]:
    """The trial whose Tune actor (``ray::ImplicitFunc``) ``pid`` is: Tune runs it in the trial's working dir."""
    try:
        cwd = os.readlink(f"/proc/{pid}/cwd")
    except OSError:
        return None
    return next((t for t in trials if f"run_trial_{t}_" in cwd), None)


def test_a_search_survives_worker_and_trial_driver_kills_with_each_trial_counted_once(cli, tmp_path, mnist_path):
    config = write_config(tmp_path, CHAOS_SEARCH, mnist_path, "chaos.yaml")
    storage, name = tmp_path / "results", "chaos"
    run_dir = storage / name
    epochs = CHAOS_SEARCH["training"]["epochs"]
    search = cli("tune", "--config", str(config), "--storage", str(storage), "--name", name, tag="chaos")
    rng = random.Random(99)
    kills: list[tuple[str, str, int, float]] = []  # (what, trial, epoch registered at the kill, when)
    per_trial: dict[str, int] = {}
    next_kill = time.monotonic() + rng.uniform(4, 8)
    deadline = time.monotonic() + RUN_TIMEOUT
    while search.proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
        workers = sum(1 for k in kills if k[0] == "worker")
        if time.monotonic() < next_kill or (workers >= 4 and any(k[0] == "trial driver" for k in kills)):
            continue
        finished = set(finished_trials(run_dir))
        # Running trials with a registered epoch and at least one to go; at most 2 kills each (max_failures 3).
        running = {t: e for t, e in trial_epochs(run_dir).items()
                   if t not in finished and 1 <= e <= epochs - 1 and per_trial.get(t, 0) < 2}
        if not running:
            continue
        members = search.members()
        victim = None
        if workers >= 2 and not any(k[0] == "trial driver" for k in kills):
            victim = next(((pid, "trial driver", t) for pid in members if _title(pid).startswith("ray::ImplicitFunc")
                           for t in [_trial_driver_of(pid, list(running))] if t), None)
        if victim is None:
            candidates = []
            for trial in running:
                roster = read_json_or_none(run_dir / "trials" / trial / "workers.json") or {}
                candidates += [(w["pid"], "worker", trial) for w in roster.get("workers", [])
                               if w["pid"] in members and _title(w["pid"]).startswith("ray::RayTrainWorker")]
            victim = rng.choice(candidates) if candidates else None
        if victim is None:
            continue
        pid, what, trial = victim
        epoch_now = reported_epoch(run_dir / "trials" / trial)
        os.kill(pid, signal.SIGKILL)
        kills.append((what, trial, epoch_now, time.time()))
        per_trial[trial] = per_trial.get(trial, 0) + 1
        next_kill = time.monotonic() + rng.uniform(4, 8)

    assert search.wait(RUN_TIMEOUT, "finish despite the kills") == 0, search.output_tail()
    worker_kills = [k for k in kills if k[0] == "worker"]
    assert len(worker_kills) >= 3 and len(kills) - len(worker_kills) == 1, kills

    summary = json.loads((run_dir / "summary.json").read_text())
    rows = {r["trial_id"]: r for r in summary["results"]}
    assert summary["trials"] == 8 and len(summary["results"]) == 8 and len(rows) == 8
    survived, redone = 0, 0
    for what, trial, epoch, when in kills:
        row = rows[trial]
        assert row["status"] == "TERMINATED" and row["stop_reason"] == f"max_epochs ({epochs})", row
        assert [h["epoch"] for h in row["history"]] == list(range(1, epochs + 1)), (what, trial, row)
        # The trial's own record, with when each kept epoch started.
        history = json.loads((Path(row["final_checkpoint"]) / "state.json").read_text())["history"]
        assert [h["epoch"] for h in history] == list(range(1, epochs + 1)), (what, trial, history)
        # What was registered before the kill is kept: those epochs ran before it, not again after.
        assert all(h["started_at"] < when for h in history if h["epoch"] <= epoch), (what, trial, epoch, history)
        redone += sum(1 for h in history if h["epoch"] == epoch + 1 and h["started_at"] > when)
        survived += 1
    for row in rows.values():
        assert row["status"] == "TERMINATED" and [h["epoch"] for h in row["history"]] == list(range(1, epochs + 1))
    print(f"chaos: {len(kills)} kills injected ({len(worker_kills)} Train workers, 1 trial driver), "
          f"{survived} survived, {redone} epoch(s) redone")


def test_storage_errors_are_recognised_in_the_shapes_they_reach_the_driver(tmp_path, monkeypatch):
    """ENOSPC/EROFS by errno, by the text Ray forwards from a worker, and by the disk's state when TF says neither."""
    import errno as errno_codes

    from orchestrator import storage_errors as se

    assert se.storage_cause(OSError(errno_codes.ENOSPC, "No space left on device")) == se.NO_SPACE
    assert se.storage_cause(RuntimeError("x")) is None
    wrapped = RuntimeError("Training failed due to worker errors:\nOSError: [Errno 28] Error writing bytes to file. "
                           "Detail: [errno 28] No space left on device")
    assert se.storage_cause(wrapped) == se.NO_SPACE
    assert se.storage_cause(RuntimeError("h5py: errno = 30, error message = 'Read-only file system'")) == se.READ_ONLY
    events = RuntimeError("ResourceExhaustedError: Could not initialize events writer.")
    assert se.storage_cause(events, tmp_path) is None  # this disk has room: not a storage problem

    class Full:
        f_flag, f_bavail, f_frsize = 0, 10, 4096

    monkeypatch.setattr(se.os, "statvfs", lambda path: Full)
    assert se.storage_cause(events, tmp_path) == se.NO_SPACE
    assert se.file_named(events, tmp_path) == f"{tmp_path}/tensorboard"
    assert se.file_named(OSError(28, "No space", str(tmp_path / "run" / "result.json")), tmp_path) == \
        str(tmp_path / "run" / "result.json")
