"""Two-worker training on an MNIST subset, checked the way a user would check it.

Two runs share one local Ray: a normal one (LR held 2 epochs, then decayed) and
one built to plateau so EarlyStopping must fire at a known epoch.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import validation_loss_of

from orchestrator.schedules import HoldThenExpDecay
from orchestrator.spec import build_spec

SUBSET = {"train_examples": 6000, "validation_examples": 1000, "test_examples": 1000}


@pytest.fixture(scope="module")
def normal_run(local_ray, tmp_path_factory, mnist_path):
    from orchestrator.engine.train import run_training

    spec = build_spec({
        "name": "normal", "storage": str(tmp_path_factory.mktemp("results")), "seed": 7,
        "training": {"epochs": 4, "batch_size_per_worker": 64, "verbose": 0},
        "lr_schedule": {"name": "hold_then_exp_decay", "hold_epochs": 2, "rate": 0.5},
        "early_stopping": {"patience": 10},
        "checkpoint": {"keep_best": 1},
        "scaling": {"workers": 2},
        "task": {"path": str(mnist_path)}, "data": SUBSET,
    })
    return spec, run_training(spec)


@pytest.fixture(scope="module")
def plateau_run(local_ray, tmp_path_factory, mnist_path):
    """SGD at LR 1e-9 cannot improve val_loss by min_delta: patience 2 stops after epoch 3."""
    from orchestrator.engine.train import run_training

    spec = build_spec({
        "name": "plateau", "storage": str(tmp_path_factory.mktemp("results")),
        "optimizer": {"name": "sgd", "learning_rate": 1e-9},
        "training": {"epochs": 10, "batch_size_per_worker": 64, "verbose": 0},
        "lr_schedule": {"name": "constant"},
        "early_stopping": {"patience": 2, "min_delta": 0.05},
        "scaling": {"workers": 2},
        "task": {"path": str(mnist_path)}, "data": SUBSET,
    })
    return spec, run_training(spec)


def test_two_workers_really_train_together(normal_run):
    _, result = normal_run
    ranks = sorted(w["world_rank"] for w in result["workers"])
    assert ranks == [0, 1]
    assert len({w["pid"] for w in result["workers"]}) == 2
    assert result["replicas"] == 2
    assert all(h["epoch"] == i + 1 for i, h in enumerate(result["history"]))


def test_result_file_is_complete(normal_run):
    spec, result = normal_run
    on_disk = json.loads(Path(result["result_file"]).read_text())
    assert on_disk["spec"]["training"]["epochs"] == 4
    assert on_disk["epochs_run"] == 4 and on_disk["stop_reason"] == "max_epochs"
    for row in on_disk["history"]:
        assert {"loss", "accuracy", "val_loss", "val_accuracy", "learning_rate"} <= set(row)
    assert on_disk["samples_per_second"] > 0 and on_disk["wall_seconds"] > 0
    assert on_disk["data"]["train"] == 6000


def test_learning_rate_history_follows_the_schedule(normal_run):
    _, result = normal_run
    schedule = HoldThenExpDecay(hold_epochs=2, rate=0.5)
    for epoch, row in enumerate(result["history"]):
        assert math.isclose(row["learning_rate"], schedule(epoch, 1e-3), rel_tol=1e-6), epoch


def test_best_checkpoint_is_the_min_val_loss_epoch_and_reloads_to_it(normal_run, mnist_path):
    _, result = normal_run
    history = result["history"]
    best = min(history, key=lambda h: h["val_loss"])
    assert result["best"]["epoch"] == best["epoch"]
    assert math.isclose(result["best"]["val_loss"], best["val_loss"])
    checkpoint = Path(result["best"]["checkpoint"])
    assert (checkpoint / "weights.h5").is_file() and (checkpoint / "state.json").is_file()
    # Reloaded in a fresh process with plain tf-keras, the recorded val_loss comes back.
    reloaded = validation_loss_of(checkpoint / "weights.h5", mnist_path)
    assert math.isclose(reloaded, best["val_loss"], rel_tol=1e-4)


def test_ray_keeps_only_the_best_and_latest_checkpoints(normal_run):
    _, result = normal_run
    run_dir = Path(result["result_file"]).parent
    kept = sorted(p.name for p in run_dir.glob("checkpoint_*") if p.is_dir())
    assert 1 <= len(kept) <= 2  # keep_best=1, plus the latest if it is not the best
    assert Path(result["final_checkpoint"]).name in kept
    assert Path(result["best"]["checkpoint"]).name in kept
    # One writer: only the chief's checkpoints, nothing of the other worker's.
    expected = {"best_model.keras", "saved_model", "checkpoint_manager_snapshot.json", "result.json", "tensorboard",
                "workers.json", *kept}
    assert {p.name for p in run_dir.iterdir() if not p.name.startswith(".")} == expected  # .*: Ray's markers
    for name in kept:
        assert {p.name for p in (run_dir / name).iterdir()} == {"weights.h5", "best.weights.h5", "train_state",
                                                                "state.json"}
    assert not list(run_dir.rglob("*workertemp*"))


def test_before_after_evaluation_and_export_load_with_plain_keras(normal_run, mnist_path):
    _, result = normal_run
    evaluation = result["evaluation"]
    assert evaluation["test_examples"] == 1000
    assert 0.8 < evaluation["best_checkpoint_reloaded"]["accuracy"] <= 1.0
    export = Path(evaluation["exported_model"])
    assert export.is_file()
    # No import of this project: only tf-keras, as a user would.
    code = f"""
import os; os.environ["TF_USE_LEGACY_KERAS"] = "1"
import numpy as np, tensorflow as tf
d = np.load({str(mnist_path)!r})
model = tf.keras.models.load_model({str(export)!r})
print(model.evaluate(d["x_test"][:1000] / 255.0, d["y_test"][:1000], verbose=0)[1])
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd="/", env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    accuracy = float(out.stdout.strip().splitlines()[-1])
    assert math.isclose(accuracy, evaluation["best_checkpoint_reloaded"]["accuracy"], abs_tol=1e-6)


def _event_files(root: Path) -> list[Path]:
    return sorted(root.rglob("events.out.tfevents.*"))


def test_tensorboard_has_one_writer_with_scalars_histograms_and_graph(normal_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.util import tensor_util

    _, result = normal_run
    root = Path(result["tensorboard_dir"])
    assert sorted(p.name for p in root.iterdir()) == ["train", "validation"]
    files = _event_files(root)
    assert files, "no event files"
    chief_pid = next(w["pid"] for w in result["workers"] if w["world_rank"] == 0)
    # Event file names end in .<host>.<pid>.<n>.v2: every one was written by the chief.
    assert {int(f.name.split(".")[-3]) for f in files} == {chief_pid}
    assert not list(root.rglob("workertemp*"))

    train = EventAccumulator(str(root / "train"), size_guidance={"tensors": 0}).Reload()
    validation = EventAccumulator(str(root / "validation"), size_guidance={"tensors": 0}).Reload()
    train_tags = set(train.Tags()["tensors"])
    assert {"epoch_loss", "epoch_accuracy", "epoch_learning_rate"} <= train_tags
    assert {"epoch_loss", "epoch_accuracy"} <= set(validation.Tags()["tensors"])
    assert [e.step for e in validation.Tensors("epoch_loss")] == [0, 1, 2, 3]
    recorded = [float(tensor_util.make_ndarray(e.tensor_proto)) for e in validation.Tensors("epoch_loss")]
    assert all(math.isclose(a, h["val_loss"], rel_tol=1e-5) for a, h in zip(recorded, result["history"]))
    histograms = [t for t in train_tags if "kernel" in t]
    assert histograms, f"no weight histograms among {sorted(train_tags)}"
    assert len(train.Tensors(histograms[0])) == 4  # histogram_freq=1
    assert train.Tags()["graph"], "no op graph of the train function"
    assert "keras" in train_tags, "no conceptual (Keras model) graph"


def test_early_stopping_fires_at_the_expected_epoch(plateau_run):
    _, result = plateau_run
    assert result["stop_reason"] == "early_stopping"
    # epoch 1 improves on inf, epochs 2 and 3 miss min_delta: patience 2 is used up.
    assert result["epochs_run"] == 3 and result["stopped_epoch"] == 3
    assert len(result["history"]) == 3


def test_seeded_runs_are_reproducible(local_ray, tmp_path, mnist_path):
    from orchestrator.engine.train import run_training

    histories = []
    for name in ("seeded-a", "seeded-b"):
        spec = build_spec({
            "name": name, "storage": str(tmp_path), "seed": 11,
            "training": {"epochs": 2, "batch_size_per_worker": 64, "verbose": 0},
            "tensorboard": {"histogram_freq": 0},
            "scaling": {"workers": 2},
            "task": {"path": str(mnist_path)},
            "data": {"train_examples": 2000, "validation_examples": 500, "test_examples": 500},
        })
        histories.append([(h["loss"], h["val_loss"], h["val_accuracy"]) for h in run_training(spec)["history"]])
    assert histories[0] == histories[1]


def test_local_ray_dashboard_listens_on_loopback_only(local_ray):
    from ray._private.worker import get_dashboard_url

    assert get_dashboard_url().split(":")[0] == "127.0.0.1"
