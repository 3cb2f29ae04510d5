"""Bad input, table-driven, through the real ``orchestrator`` command.

Every case must end with exactly one line on stderr that names the field or
path and what is valid, exit status 2, no traceback, and nothing existing
overwritten. Almost all fail before Ray starts; the resource cases start a
local Ray and must still fail fast.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
from conftest import run_cli

GOOD_TUNE = """
training: {epochs: 2}
search:
  samples: 1
  space:
    optimizer.learning_rate: {loguniform: [0.0003, 0.01]}
"""


PBT_TUNE = """
training: {epochs: 4}
search:
  algorithm: pbt
  samples: 4
  space:
    optimizer.learning_rate: {loguniform: [0.0003, 0.01]}
"""


def _npz(path: Path, **overrides) -> Path:
    arrays = {
        "x_train": np.zeros((100, 28, 28), np.uint8), "y_train": np.arange(100, dtype=np.uint8) % 10,
        "x_test": np.zeros((20, 28, 28), np.uint8), "y_test": np.arange(20, dtype=np.uint8) % 10,
    }
    arrays.update(overrides)
    np.savez(path, **{k: v for k, v in arrays.items() if v is not None})
    return path


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def _finished_run(storage: Path, name: str) -> Path:
    run = storage / name
    run.mkdir(parents=True)
    (run / "result.json").write_text('{"status": "finished", "keep": "me"}')
    return run


def _interrupted_run_with_corrupt_checkpoint(storage: Path, name: str) -> Path:
    run = storage / name
    checkpoint = run / "checkpoint_2026-01-01_00-00-00.000000"
    (checkpoint / "train_state").mkdir(parents=True)
    (checkpoint / "weights.h5").write_bytes(b"")
    (checkpoint / "state.json").write_text('{"epoch": 3, "hist')  # torn
    (run / "checkpoint_manager_snapshot.json").write_text(json.dumps(
        {"latest_checkpoint_result": {"checkpoint_dir_name": checkpoint.name}}))
    return run


def _train(config: str, *flags: str) -> Callable[[Path], list[str]]:
    """argv of ``train --config <config written to the test's directory> flags...``."""
    return lambda t: ["train", "--config", str(_write(t / "c.yaml", config)), *flags]


def _tune(config: str, *flags: str) -> Callable[[Path], list[str]]:
    return lambda t: ["tune", "--config", str(_write(t / "c.yaml", config)), *flags]


# (id, argv builder, expected fragment of the one-line message)
CASES = [
    ("malformed-yaml", _train("training: {epochs: 2\n"),
     "malformed YAML"),
    ("unknown-key", _train("trainin: {epochs: 2}\n"),
     "trainin: unknown key; valid keys:"),
    ("wrong-type", _train("scaling: {workers: two}\n"),
     "scaling.workers"),
    ("epochs-zero", lambda t: ["train", "--epochs", "0"], "training.epochs"),
    ("patience-zero", _train("early_stopping: {patience: 0}\n"),
     "early_stopping.patience"),
    ("workers-zero", lambda t: ["train", "--workers", "0"], "scaling.workers"),
    ("batch-zero", lambda t: ["train", "--batch-size", "0"], "training.batch_size_per_worker"),
    ("lr-negative", _train("optimizer: {learning_rate: -0.1}\n"),
     "optimizer.learning_rate"),
    ("unknown-schedule", _train("lr_schedule: {name: warmup}\n"),
     "unknown schedule 'warmup'; valid: constant, hold_then_exp_decay, step, cosine"),
    ("schedule-parameter-of-another-family",
     _train("lr_schedule: {name: step, rate: 0.1}\n"),
     "lr_schedule.rate: unknown key"),
    ("empty-search-space", _tune("search: {space: {}}\n"),
     "search.space"),
    ("unknown-schedule-in-space",
     _tune("search: {space: {lr_schedule: {linear: {}}}}\n"),
     "search.space.lr_schedule.linear: unknown schedule"),
    ("data-missing", lambda t: ["train", "--data", str(t / "nowhere.npz")], "nowhere.npz"),
    ("data-wrong-keys", lambda t: ["train", "--data", str(_npz(t / "d.npz", y_test=None))], "lacks keys ['y_test']"),
    ("data-wrong-shape", lambda t: ["train", "--data", str(_npz(t / "d.npz", x_train=np.zeros((100, 32, 32), np.uint8)))],
     "x_train has shape (100, 32, 32)"),
    ("data-wrong-dtype", lambda t: ["train", "--data", str(_npz(t / "d.npz", x_test=np.zeros((20, 28, 28), np.float32)))],
     "x_test has dtype float32"),
    ("data-labels-out-of-range",
     lambda t: ["train", "--data", str(_npz(t / "d.npz", y_train=np.full(100, 11, np.uint8)))], "outside 0..9"),
    ("data-truncated", lambda t: ["train", "--data", str(_write(t / "d.npz", "PK\x03\x04 not really"))],
     "not a readable .npz"),
    ("storage-not-writable", lambda t: ["train", "--storage", str(_write(t / "a-file", "") / "results")],
     "is not writable"),
    ("storage-unknown-scheme", lambda t: ["train", "--storage", "nosuchfs://bucket/results"],
     "Unrecognized filesystem type"),
    ("resume-missing", lambda t: ["train", "--storage", str(t), "--name", "ghost", "--resume"],
     "nothing to resume: no run named 'ghost'"),
    ("tune-resume-missing", lambda t: ["tune", "--config", str(_write(t / "c.yaml", GOOD_TUNE)), "--storage", str(t),
                                       "--name", "ghost", "--resume"], "nothing to resume: no search named 'ghost'"),
    ("finished-run-name", lambda t: ["train", "--storage", str(t), "--name", _finished_run(t, "done").name],
     "already finished"),
    ("corrupt-checkpoint-on-resume",
     lambda t: ["train", "--storage", str(t), "--name", _interrupted_run_with_corrupt_checkpoint(t, "torn").name,
                "--resume"], "latest checkpoint"),
    ("name-with-slash", lambda t: ["train", "--name", "a/b"], "name: must be letters"),
    ("tune-without-config", lambda t: ["tune"], "tune needs --config"),
    ("piecewise-non-increasing-epochs",
     _train("lr_schedule: {name: piecewise, breakpoints: [[0, 0.01], [5, 0.001], [3, 0.0001]]}\n"),
     "lr_schedule.breakpoints: epochs must increase, got 3 after 5"),
    ("piecewise-negative-lr",
     _train("lr_schedule: {name: piecewise, lrs: [0.01, -0.001]}\n"),
     "lr_schedule.lrs: every learning rate must be > 0, got -0.001"),
    ("pbt-on-object-storage",
     lambda t: ["tune", "--config", str(_write(t / "c.yaml", PBT_TUNE)), "--storage", "s3://bucket/results"],
     "search.algorithm: pbt keeps its members' lineage with local file I/O"),
    ("pbt-population-of-one",
     _tune(PBT_TUNE, "--samples", "1"),
     "search.samples: PBT needs a population of at least 2, got 1"),
    ("pbt-interval-zero",
     _tune(PBT_TUNE + "  pbt: {perturbation_interval: 0}\n"),
     "search.pbt.perturbation_interval: Input should be greater than or equal to 1"),
    ("pbt-interval-longer-than-training",
     _tune(PBT_TUNE + "  pbt: {perturbation_interval: 6}\n"),
     "search.pbt.perturbation_interval: 6 epochs leaves no perturbation within training.epochs (4)"),
    ("pbt-mutates-a-parameter-not-searched",
     _tune(PBT_TUNE + "  pbt: {mutate: [optimizer.momentum]}\n"),
     "search.pbt.mutate: 'optimizer.momentum' is not a searched parameter of search.space"),
    ("pbt-with-asha",
     _tune(PBT_TUNE + "  asha: {grace_period: 2}\n"),
     "search.asha: PBT cannot be combined with ASHA"),
    ("pbt-section-without-pbt",
     _tune(GOOD_TUNE + "  pbt: {perturbation_interval: 1}\n"),
     "search.pbt: only used with `algorithm: pbt` or `pb2`"),
    ("pb2-with-perturbation-factors",
     _tune(PBT_TUNE + "  pbt: {perturbation_factors: [1.2, 0.5]}\n", "--algorithm", "pb2"),
     "search.pbt.perturbation_factors: not used by pb2"),
    ("pb2-mutates-a-choice",
     _tune(PBT_TUNE.replace("algorithm: pbt", "algorithm: pb2")
           + "    optimizer.name: {choice: [adam, sgd]}\n"),
     "search.pbt.mutate: pb2 explores numbers within bounds; 'optimizer.name' is a choice"),
    ("stop-at-unknown-metric",
     _tune(GOOD_TUNE, "--stop-at", "val_f1=0.9"),
     "search.stop_at: 'val_f1' is not a metric trials report"),
    ("stop-at-accuracy-above-one",
     _tune(GOOD_TUNE, "--stop-at", "val_accuracy=98"),
     "an accuracy target is in (0, 1], got val_accuracy: 98.0"),
    ("stop-at-not-a-pair",
     _tune(GOOD_TUNE, "--stop-at", "val_accuracy"),
     "--stop-at 'val_accuracy': give METRIC=VALUE"),
]


@pytest.mark.parametrize("case, argv, expected", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_exit_2(case, argv, expected, tmp_path):
    args = argv(tmp_path)
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    out = run_cli(args, cwd=tmp_path)
    assert out.returncode == 2, (out.returncode, out.stderr[-2000:])
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), out.stderr[-2000:]
    assert expected in lines[0], lines[0]
    assert "Traceback" not in out.stderr
    after = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    assert {p: b for p, b in after.items() if p in before} == before, "an existing file was changed"


def test_at_least_fifteen_bad_input_cases():
    assert len(CASES) >= 15


@pytest.mark.parametrize("flags, expected", [
    (["--workers", "8"], r"needs 8 worker(s) of {CPU: 1, GPU: 0} but the cluster can place only"),
    (["--workers", "1", "--gpus-per-worker", "1"], r"needs 1 worker(s) of {CPU: 1, GPU: 1} but the cluster can place only 0"),
])
def test_more_than_the_cluster_has_fails_fast(flags, expected, tmp_path, mnist_path):
    out = run_cli(["train", "--data", str(mnist_path), "--storage", str(tmp_path), "--name", "big", *flags],
                  cwd=tmp_path)
    assert out.returncode == 2, out.stderr[-2000:]
    error_lines = [l for l in out.stderr.splitlines() if l.startswith("error: ")]
    assert len(error_lines) == 1 and expected in error_lines[0], out.stderr[-2000:]
    assert "Traceback" not in out.stderr
    # Refused before Ray Train started (no pending forever, no retries of a group
    # that cannot be placed): Train marks the run's storage when a run starts.
    assert not (tmp_path / "big" / ".validate_storage_marker").exists()
    assert not (tmp_path / "big" / "result.json").exists()
