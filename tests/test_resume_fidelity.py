"""Resume fidelity: after a restart no completed epoch is trained again, and every epoch shows once.

The kills are deterministic: a test hook in the report callback
(``ORCHESTRATOR_TEST_KILL_AFTER_REPORT``) SIGKILLs rank 0 (or the whole
command) right after its ``ray.train.report`` of an epoch returned: the
checkpoint is uploaded, the report waits in the worker for Ray Train's
controller to collect it. That is the window in which Ray Train loses a
report; before the fix the group resumed from the epoch before.

TensorBoard is read back with TensorBoard's own loader (what ``--load_fast=false``
shows) and, file by file, as raw events (what every other reader sees).
"""

from __future__ import annotations

import json
import re
import time
from collections import Counter
from pathlib import Path

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
from tensorboard.compat.proto import event_pb2, summary_pb2
from tensorboard.summary.writer.event_file_writer import EventFileWriter

from orchestrator.checkpoint_files import complete_state, manifest, newest_complete_checkpoint
from orchestrator.worker.tensorboard_rewind import rewind
from commands import (ORPHAN_GRACE, RUN_TIMEOUT, SCHEDULE, TRAIN_CONFIG, Cli, assert_best_checkpoint_kept,
                      assert_continuous_history, write_config)

EPOCHS = 3
KILLED_AFTER = 2
CONFIG = {**TRAIN_CONFIG,
          "training": {**TRAIN_CONFIG["training"], "epochs": EPOCHS, "verbose": 2},
          "data": {"train_examples": 2000, "validation_examples": 500, "test_examples": 500}}


# ------------------------------------------------------------------ helpers

def epoch_lines(command: Cli) -> list[int]:
    """The epochs the chief trained, from its console lines ``Epoch N/E - ...`` (stdout, one per finished epoch)."""
    return [int(n) for n in re.findall(rf"\) ?(?:\x1b\[0m)? ?Epoch (\d+)/{EPOCHS}\b", command.stdout, re.M)]


def resumed_epochs(command: Cli) -> list[int]:
    """The epochs a restarted group said it resumed from (stdout; Ray may copy worker lines to stderr)."""
    return [int(n) for n in re.findall(r"resuming from the checkpoint of epoch (\d+)", command.stdout)]


def raw_events(run_dir: Path) -> list[event_pb2.Event]:
    events = []
    for path in sorted(p for p in run_dir.iterdir() if "tfevents" in p.name):
        events += list(EventFileLoader(str(path)).Load())
    return events


def assert_tensorboard_once_per_epoch(log_dir: Path, epochs: int) -> None:
    """Every run under ``log_dir``: each tag once per step, epoch tags at 0..epochs-1, at most one graph."""
    runs = sorted({p.parent for p in log_dir.rglob("*") if "tfevents" in p.name})
    assert {r.name for r in runs} >= {"train", "validation"}, runs
    for run in runs:
        shown = EventAccumulator(str(run))
        shown.Reload()
        for tag in shown.Tags()["tensors"]:
            steps = [e.step for e in shown.Tensors(tag)]
            assert len(steps) == len(set(steps)), f"{run.name}/{tag}: TensorBoard shows steps {steps}"
            if tag.startswith("epoch_") or tag.startswith("evaluation_"):
                assert len(steps) == epochs, f"{run.name}/{tag}: steps {steps}"
            if tag.startswith("epoch_"):
                assert sorted(steps) == list(range(epochs)), f"{run.name}/{tag}: steps {steps}"
        events = raw_events(run)
        per_key = Counter((v.tag, e.step) for e in events for v in e.summary.value)
        assert max(per_key.values()) == 1, [k for k, n in per_key.items() if n > 1]
        graphs = sum(e.HasField("graph_def") for e in events)
        assert graphs == (1 if run.name == "train" else 0), f"{run}: {graphs} graph events"
        assert sum(1 for (tag, _) in per_key if tag == "keras") <= 1, f"{run}: the Keras model graph twice"


def assert_one_run_trained_each_epoch_once(result: dict, *commands: Cli) -> None:
    trained = [n for command in commands for n in epoch_lines(command)]
    # No epoch trained twice. A killed command's last console lines may never reach its
    # terminal (its driver died before Ray forwarded them); the history holds every epoch.
    assert len(trained) == len(set(trained)) and EPOCHS in trained, f"epochs trained: {trained}"
    assert_continuous_history(result, EPOCHS)
    for epoch, row in enumerate(result["history"]):
        assert abs(row["learning_rate"] - SCHEDULE(epoch, 1e-3)) < 1e-9 * max(1.0, row["learning_rate"])


# ------------------------------------------------------------------ 1. the rewind itself

def _scalar_event(tag: str, step: int, value: float) -> event_pb2.Event:
    return event_pb2.Event(wall_time=time.time(), step=step, summary=summary_pb2.Summary(
        value=[summary_pb2.Summary.Value(tag=tag, simple_value=value)]))


def test_rewind_keeps_each_step_once_before_the_resume_point(tmp_path):
    run = tmp_path / "tb" / "validation"
    first = EventFileWriter(str(run), filename_suffix=".a")
    for step in range(3):   # the attempt that died after epoch 3's events; resumed at epoch index 2
        first.add_event(_scalar_event("epoch_loss", step, 1.0 + step))
        first.add_event(_scalar_event("evaluation_loss_vs_iterations", 16 * (step + 1), 1.0 + step))
    first.close()
    assert rewind(tmp_path / "tb", epoch=2, iterations=32) > 0
    second = EventFileWriter(str(run), filename_suffix=".b")   # the resumed attempt
    for step in range(2, 4):
        second.add_event(_scalar_event("epoch_loss", step, 10.0 + step))
        second.add_event(_scalar_event("evaluation_loss_vs_iterations", 16 * (step + 1), 10.0 + step))
    second.close()

    shown = EventAccumulator(str(run))
    shown.Reload()
    assert [(e.step, e.value) for e in shown.Scalars("epoch_loss")] == [(0, 1.0), (1, 2.0), (2, 12.0), (3, 13.0)]
    assert [(e.step, e.value) for e in shown.Scalars("evaluation_loss_vs_iterations")] == \
        [(16, 1.0), (32, 2.0), (48, 12.0), (64, 13.0)]
    assert rewind(tmp_path / "tb", epoch=4, iterations=64) == 0   # nothing past the point: left alone


def test_a_checkpoint_is_complete_only_when_every_listed_file_is_there(tmp_path):
    def checkpoint(name: str, epoch: int) -> Path:
        directory = tmp_path / name
        (directory / "train_state").mkdir(parents=True)
        (directory / "weights.h5").write_bytes(b"w" * 100)
        (directory / "train_state" / "ckpt.index").write_bytes(b"i" * 10)
        (directory / "state.json").write_text(json.dumps({"epoch": epoch, "files": manifest(directory)}))
        return directory

    older, newer = checkpoint("checkpoint_1", 1), checkpoint("checkpoint_2", 2)
    assert complete_state(newer)["epoch"] == 2
    assert newest_complete_checkpoint(tmp_path)[0] == newer
    (newer / "weights.h5").write_bytes(b"w" * 50)   # an upload cut short
    assert complete_state(newer) is None
    assert newest_complete_checkpoint(tmp_path)[0] == older


def test_an_epoch_trained_again_shows_once_in_tensorboard_with_one_graph(tmp_path):
    """Keras's own TensorBoard callbacks, no Ray: an attempt dies after epoch 3's events were written
    (before its report), the next resumes from epoch 2's checkpoint and trains epoch 3 again."""
    import numpy as np
    import tensorflow as tf

    from orchestrator.spec import build_spec
    from orchestrator.worker.callbacks.report import ReportToRayTrain, read_state, restore_train_state
    from orchestrator.worker.callbacks.tensorboard import chief_tensorboard
    from orchestrator.tasks import resolve
    from orchestrator.worker.model import build_compiled_model

    spec = build_spec({"training": {"steps_per_execution": 1}})
    rng = np.random.default_rng(0)
    x, y = rng.random((256, 28, 28), dtype=np.float32), rng.integers(0, 10, 256)
    log_dir, saved = tmp_path / "tb", {}

    def report(metrics, checkpoint):  # what Ray's upload does: a copy that outlives the attempt
        saved[metrics["epoch"]] = Path(checkpoint.path).rename(tmp_path / f"checkpoint_{metrics['epoch']}")
        Path(checkpoint.path).mkdir()  # the callback's temporary dir expects to delete it

    class DieAfterEvents(tf.keras.callbacks.Callback):
        def __init__(self, board):
            super().__init__()
            self.board = board

        def on_epoch_end(self, epoch, logs=None):
            if epoch == 2:
                for writer in self.board._writers.values():
                    writer.flush()  # epoch 3's events reached the disk, its report never happens
                raise RuntimeError("killed")

    def attempt(start_epoch: int, hparams: dict):
        task = resolve(spec.task)
        model = build_compiled_model(spec, task.task, task.params)
        history = []
        if start_epoch:
            restore_train_state(model, saved[start_epoch])
            history = read_state(saved[start_epoch])["history"]
            rewind(log_dir, start_epoch, int(model.optimizer.iterations.numpy()))
        boards = chief_tensorboard(str(log_dir), 1, start_epoch == 0, hparams=hparams, trial_id="t", history=history)
        extra = [DieAfterEvents(boards[0])] if start_epoch == 0 else []
        reporter = ReportToRayTrain(is_chief=True, max_epochs=4, best_weights_path=str(tmp_path / "none.h5"),
                                    extra_state=dict, history=history, report=report)
        model.fit(x, y, validation_data=(x[:64], y[:64]), batch_size=64, epochs=4, initial_epoch=start_epoch,
                  callbacks=[*boards, *extra, reporter], verbose=0)

    hparams = {"optimizer.learning_rate": 0.001}
    try:
        attempt(0, hparams)
    except RuntimeError as exc:
        assert str(exc) == "killed"
    assert sorted(saved) == [1, 2]
    attempt(2, hparams)
    assert_tensorboard_once_per_epoch(log_dir, 4)
    hparams_events = [v.tag for e in raw_events(log_dir) for v in e.summary.value if v.tag.startswith("_hparams_")]
    assert sorted(hparams_events) == ["_hparams_/session_end_info", "_hparams_/session_start_info"]


# ------------------------------------------------------------------ 2. worker killed

def test_a_worker_killed_right_after_its_report_resumes_from_that_epoch(cli, tmp_path, mnist_path, monkeypatch):
    config = write_config(tmp_path, CONFIG, mnist_path, "train.yaml")
    storage, name = tmp_path / "results", "report-then-kill"
    run_dir = storage / name
    marker = tmp_path / "killed.pid"
    monkeypatch.setenv("ORCHESTRATOR_TEST_KILL_AFTER_REPORT", f"0:{KILLED_AFTER}:exit:{marker}")
    run = cli("train", "--config", str(config), "--storage", str(storage), "--name", name, tag="train")
    assert run.wait(RUN_TIMEOUT, "finish after a worker was killed") == 0, run.output_tail()
    assert marker.exists(), "the hook never killed the worker"

    assert resumed_epochs(run) == [KILLED_AFTER], run.output_tail()
    result = json.loads((run_dir / "result.json").read_text())
    assert_one_run_trained_each_epoch_once(result, run)
    roster = json.loads((run_dir / "workers.json").read_text())
    assert len(roster["groups"]) == 2 and int(marker.read_text()) not in {w["pid"] for w in roster["workers"]}
    assert_best_checkpoint_kept(result)
    assert_tensorboard_once_per_epoch(run_dir / "tensorboard", EPOCHS)


# ------------------------------------------------------------------ 3. driver killed

def test_a_driver_killed_right_after_a_report_resumes_from_that_epoch(cli, tmp_path, mnist_path, monkeypatch):
    config = write_config(tmp_path, CONFIG, mnist_path, "train.yaml")
    storage, name = tmp_path / "results", "report-then-driver-kill"
    run_dir = storage / name
    marker = tmp_path / "killed.pid"
    args = ["train", "--config", str(config), "--storage", str(storage), "--name", name]
    monkeypatch.setenv("ORCHESTRATOR_TEST_KILL_AFTER_REPORT", f"0:{KILLED_AFTER}:killpg:{marker}")
    first = cli(*args, tag="train")
    first.wait(RUN_TIMEOUT, "be killed by the hook")
    assert marker.exists(), "the hook never killed the command\n" + first.output_tail()
    assert not first.wait_group_gone(ORPHAN_GRACE), "processes of the killed run still alive"
    assert not (run_dir / "result.json").exists()

    monkeypatch.delenv("ORCHESTRATOR_TEST_KILL_AFTER_REPORT")
    resumed = cli(*args, "--resume", tag="train-resume")
    assert resumed.wait(RUN_TIMEOUT, "finish the resumed run") == 0, resumed.output_tail()
    assert resumed_epochs(resumed) == [KILLED_AFTER], resumed.output_tail()
    result = json.loads((run_dir / "result.json").read_text())
    assert_one_run_trained_each_epoch_once(result, first, resumed)
    assert_best_checkpoint_kept(result)
    assert_tensorboard_once_per_epoch(run_dir / "tensorboard", EPOCHS)
