"""Killed and interrupted, then resumed: a killed worker, a killed driver (a search, a PBT
population), Ctrl-C on a run and on a search. Nothing finished is trained again.

Each test runs the real ``orchestrator`` command in its own session (see commands.py).
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest
from commands import (Cli, ORPHAN_GRACE, RUN_TIMEOUT, SEARCH_CONFIG, STOP_TIMEOUT, TRAIN_CONFIG,
                      assert_best_checkpoint_kept, assert_continuous_history, checkpoint_listing,
                      finished_trials, one_finished_one_running, process_alive, read_json_or_none,
                      reported_epoch, resume_command, resumed_epochs, trial_epochs, tune_results, wait_for,
                      write_config)
from conftest import pbt_search_config


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
                                                                                     fast_path, monkeypatch):
    # Tune's rows lag its trials by seconds, and an epoch takes about 0.4 s here: 8 epochs keep the
    # moment of the kill (a trial done, another with epochs to go) seconds long on both paths.
    training = {**SEARCH_CONFIG["training"], "epochs": 8}
    if fast_path:
        # Tune snapshots the search's state to storage every 10 s or more by default, longer than
        # a fast-path trial here: the storage could show no finished trial before the search ends.
        monkeypatch.setenv("TUNE_GLOBAL_CHECKPOINT_S", "2")
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
    # What the kill cut off is what storage holds unfinished now: a trial seen early can still have
    # trained its last epochs before the kill landed (its final checkpoint, unknown to Tune's rows).
    cut_off = trial_epochs(run_dir)
    running = [trial for trial in running if cut_off[trial] < epochs]
    assert running, f"every trial seen running had finished by the kill: {cut_off}"

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


# One perturbation point (epoch 3): a second copy could write over the record of the first.
PBT_EPOCHS = 6


def recorded_copies(run_dir: Path) -> list[dict]:
    """Copies recorded in the members' Tune checkpoints so far (each member's lineage.json)."""
    copies = []
    for lineage in run_dir.glob("run_pbt_trial_*/checkpoint_*/lineage.json"):
        try:
            copies += [c for c in json.loads(lineage.read_text())["copies"] if c not in copies]
        except (OSError, ValueError):
            pass
    return copies


# Members of one worker train in their reused Tune actors (the fast path); members of
# several workers, or with --no-fast-path, are Ray Train runs: one stop for each.
# PB2 runs the same members under another scheduler (resumed with its records anew).
@pytest.mark.parametrize("stop, path, algorithm", [("driver killed", "fast path", "pbt"),
                                                   ("Ctrl-C", "Ray Train", "pbt"),
                                                   ("driver killed", "fast path", "pb2")])
def test_a_pbt_search_stopped_mid_way_resumes_its_population_and_lineage(cli, tmp_path, mnist_path, stop, path,
                                                                          algorithm):
    config = write_config(tmp_path, pbt_search_config(epochs=PBT_EPOCHS, interval=3, algorithm=algorithm), mnist_path,
                          "pbt.yaml")
    storage, name = tmp_path / "results", "pbt-stopped"
    run_dir = storage / name
    args = ["tune", "--config", str(config), "--storage", str(storage), "--name", name,
            *(["--no-fast-path"] if path == "Ray Train" else [])]
    search = cli(*args, tag="pbt")
    # Stopped once a member has copied another and trained on from it.
    copies = wait_for(lambda: recorded_copies(run_dir), RUN_TIMEOUT, "a PBT copy", search, interval=0.1)
    if stop == "Ctrl-C":
        started = time.monotonic()
        os.killpg(search.pgid, signal.SIGINT)
        _assert_stopped_cleanly(search, started)
        again = resume_command(search.stderr)
    else:
        os.killpg(search.pgid, signal.SIGKILL)
        assert not search.wait_group_gone(ORPHAN_GRACE), "processes of the killed search still alive"
        again = [*args, "--resume"]
    assert not (run_dir / "summary.json").exists(), "the search had finished before it was stopped"

    resumed = cli(*again, tag="pbt-resume")
    assert resumed.wait(RUN_TIMEOUT, "finish the resumed PBT search") == 0, resumed.output_tail()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["trials"] == 2 and len({r["trial_id"] for r in summary["results"]}) == 2
    epochs = PBT_EPOCHS
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
