"""Reliability under contention and faults: torn writes, two commands on one name, damaged
files, a full disk (a run and a search), and kills during a search.

Each test runs the real ``orchestrator`` command in its own session (see commands.py).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import select
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Optional

import pytest
from commands import (Cli, ORPHAN_GRACE, RUN_TIMEOUT, SEARCH_CONFIG, TRAIN_CONFIG, finished_trials,
                      process_alive, read_json_or_none, reported_epoch, resumed_epochs, trial_epochs,
                      wait_for, write_config)
from conftest import search_config

from orchestrator.layout import RunLayout


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
    # With the whole copy the search keeps (engine/tune_state.py), --resume would put it back.
    "experiment state cut in half, no whole copy kept": lambda d: (
        shutil.rmtree(RunLayout(d).tune_state_copies), truncate(max(d.glob("experiment_state-*.json"))))[1],
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


def test_a_cut_experiment_state_is_put_back_from_its_whole_copy_and_the_search_resumes(finished_search, tmp_path):
    config, made = finished_search
    run_dir = tmp_path / "results" / "cut"
    shutil.copytree(made, run_dir)
    (run_dir / "summary.json").unlink()  # interrupted: what --resume is for
    state = truncate(max(run_dir.glob("experiment_state-*.json")))
    out = subprocess.run([sys.executable, "-m", "orchestrator.cli", "tune", "--config", str(config),
                          "--storage", str(run_dir.parent), "--name", run_dir.name, "--resume"],
                         capture_output=True, text=True, timeout=RUN_TIMEOUT)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert f"Tune's {state.name} had been cut short" in out.stderr and "put back its last complete copy" in out.stderr
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["trials"] == len(json.loads((made / "summary.json").read_text())["results"])


# ------------------------------------------------------------ 7. full disk

def _mount_tmpfs(directory: Path, size: str, remount: bool = False) -> subprocess.CompletedProcess:
    options = f"remount,size={size}" if remount else f"size={size}"
    return subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(directory)],
                          capture_output=True, text=True)


@contextlib.contextmanager
def small_disk(tmp_path: Path, size: str):
    """A tmpfs of ``size`` at ``tmp_path/disk``; yields it and a list for the commands started on it.

    Unmounted at the end, after every such command's processes are gone (they may hold it).
    """
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = _mount_tmpfs(disk, size)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (the test needs root): {mounted.stderr.strip()}")
    started: list[Cli] = []
    try:
        yield disk, started
    finally:
        for command in started:
            command.kill_group()
            command.wait_group_gone(30)
        if subprocess.run(["umount", str(disk)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(disk)], capture_output=True)


def resume_once_enlarged(cli, disk: Path, last: str, started: list[Cli]) -> Cli:
    """Enlarge the disk, run the command the one-line error hinted at, and wait for it to finish."""
    enlarged = _mount_tmpfs(disk, "96m", remount=True)
    assert enlarged.returncode == 0, enlarged.stderr
    resumed = cli(*shlex.split(last.split("resume with: orchestrator ", 1)[1]), tag="resume")
    started.append(resumed)
    assert resumed.wait(RUN_TIMEOUT, "finish once the disk was enlarged") == 0, resumed.output_tail()
    return resumed


def full_disk_line(command: Cli, disk: Path, verb: str) -> str:
    """The command's last line: the full disk named in one line, with the command to resume once freed."""
    last = command.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: cannot write {disk}") and "no space left on device (ENOSPC)" in last, \
        command.output_tail()
    assert f"resume with: orchestrator {verb}" in last and last.endswith("--resume"), last
    return last


def test_a_full_disk_ends_in_one_line_without_retries_and_resumes_once_enlarged(cli, tmp_path, mnist_path):
    # Room for one checkpoint (~6 MB: weights.h5, best.weights.h5 with the optimizer, train_state), not two.
    with small_disk(tmp_path, "10m") as (disk, started):
        config = write_config(tmp_path, {**SMALL_TRAIN, "checkpoint": {"keep_best": 1}}, mnist_path, "train.yaml")
        run_dir = disk / "full"
        run = cli("train", "--config", str(config), "--storage", str(disk), "--name", "full", tag="full")
        started.append(run)
        assert run.wait(RUN_TIMEOUT, "end on the full disk") == 2, run.output_tail()
        last = full_disk_line(run, disk, "train")
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

        resumed = resume_once_enlarged(cli, disk, last, started)
        # From one checkpoint that the disk left whole (one whose copy was cut may look whole but for
        # the size of its TF data file: --resume skips it), not from scratch.
        result = json.loads((run_dir / "result.json").read_text())
        resumed_from = result["resumed_from_epochs"]
        assert len(resumed_from) == 1 and set(resumed_from) <= set(complete), (complete, resumed.output_tail())
        assert [h["epoch"] for h in result["history"]] == [1, 2, 3]
        assert Path(result["evaluation"]["exported_model"]).is_file()


FULL_DISK_SEARCH = search_config({"optimizer.learning_rate": {"grid": [0.002, 0.001, 0.003]}},
                                 epochs=3, train_examples=2000, asha={"enabled": False})


def test_a_search_on_a_full_disk_stops_in_one_line_and_resumes_once_enlarged(cli, tmp_path, mnist_path):
    # Room for a few checkpoints and events of the first two trials, not for three trials.
    with small_disk(tmp_path, "12m") as (disk, started):
        config = write_config(tmp_path, FULL_DISK_SEARCH, mnist_path, "search.yaml")
        run_dir = disk / "full"
        search = cli("tune", "--config", str(config), "--storage", str(disk), "--name", "full", tag="full")
        started.append(search)
        assert search.wait(RUN_TIMEOUT, "end on the full disk") == 2, search.output_tail()
        last = full_disk_line(search, disk, "tune")
        assert not (run_dir / "summary.json").exists()

        resume_once_enlarged(cli, disk, last, started)
        summary = json.loads((run_dir / "summary.json").read_text())
        # Every trial ran, once, to its end: the one the disk stopped, those it never started.
        assert sorted(r["config"]["optimizer.learning_rate"] for r in summary["results"]) == [0.001, 0.002, 0.003]
        for row in summary["results"]:
            assert row["status"] == "TERMINATED" and row["stop_reason"] == "max_epochs (3)", row
            assert [h["epoch"] for h in row["history"]] == [1, 2, 3], row


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
