"""``orchestrator.open_run`` / ``open_search``: results read from Python as a notebook would.

An interrupted run (Ctrl-C through the CLI, in its own Ray), a finished run and
a finished 2-trial search, each read back and checked against the files the run wrote.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from conftest import SMALL_SUBSET, small_run_config
import yaml

SUBSET = SMALL_SUBSET
BASE = small_run_config(seed=5)


def _reported_epoch(run_dir: Path) -> int:
    try:
        snapshot = json.loads((run_dir / "checkpoint_manager_snapshot.json").read_text())
    except (OSError, ValueError):
        return 0
    return int(((snapshot.get("latest_checkpoint_result") or {}).get("metrics") or {}).get("epoch") or 0)


@pytest.fixture(scope="module")
def interrupted_run(tmp_path_factory, mnist_path):
    """``orchestrator train`` stopped by SIGINT to its process group once epoch 2 is checkpointed.

    Runs before the module's in-process Ray starts, in its own Ray temp dir.
    """
    tmp = tmp_path_factory.mktemp("interrupted")
    config = {**BASE, "training": {**BASE["training"], "epochs": 40},
              "task": {"path": str(mnist_path)}, "data": SUBSET}
    (tmp / "c.yaml").write_text(yaml.safe_dump(config))
    run_dir = tmp / "results" / "stopped"
    ray_tmp = tempfile.mkdtemp(prefix="api-ray-", dir="/tmp")
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update(RAY_TMPDIR=ray_tmp, PYTHONUNBUFFERED="1")
    with open(tmp / "out", "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "orchestrator.cli", "train", "--config", str(tmp / "c.yaml"),
                                 "--storage", str(tmp / "results"), "--name", "stopped"],
                                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, env=env)
    try:
        deadline = time.monotonic() + 300
        while _reported_epoch(run_dir) < 2:
            assert proc.poll() is None, (tmp / "out").read_text()[-3000:]
            assert time.monotonic() < deadline, "no epoch 2 within 300 s\n" + (tmp / "out").read_text()[-3000:]
            time.sleep(0.25)
        os.killpg(proc.pid, signal.SIGINT)
        assert proc.wait(timeout=120) == 130, (tmp / "out").read_text()[-3000:]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
        shutil.rmtree(ray_tmp, ignore_errors=True)
    return run_dir


@pytest.fixture(scope="module")
def finished_run(interrupted_run, local_ray, tmp_path_factory, mnist_path):
    from orchestrator.engine.train import run_training
    from orchestrator.spec import build_spec

    spec = build_spec({**BASE, "name": "done", "storage": str(tmp_path_factory.mktemp("results")),
                       "task": {"path": str(mnist_path)}, "data": SUBSET})
    result = run_training(spec)
    return Path(result["result_file"]).parent


@pytest.fixture(scope="module")
def finished_search(finished_run, local_ray, tmp_path_factory, mnist_path):
    from orchestrator.engine.tune import run_search
    from orchestrator.search_space import load_search

    storage = tmp_path_factory.mktemp("results")
    search = load_search({**BASE, "task": {"path": str(mnist_path)}, "data": SUBSET,
                          "search": {"samples": 1, "max_concurrent": 2, "asha": {"enabled": False},
                                     "space": {"optimizer.learning_rate": {"grid": [0.003, 0.0003]}}}})
    run_search(search, name="s", storage=str(storage))
    return storage / "s"


def test_importing_the_package_loads_neither_ray_tensorflow_nor_pandas():
    code = ("import sys, orchestrator; orchestrator.open_run; "
            "print(sorted(m for m in ('ray', 'tensorflow', 'tf_keras', 'pandas') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "[]"


def test_an_interrupted_run_reads_from_its_latest_checkpoint(interrupted_run):
    import orchestrator

    run = orchestrator.open_run(interrupted_run)
    assert run.status == "interrupted" and run.evaluation is None and run.stop_reason is None
    assert not (interrupted_run / "result.json").exists()
    # What the latest checkpoint recorded, nothing more: Ray's snapshot names that checkpoint.
    snapshot = json.loads((interrupted_run / "checkpoint_manager_snapshot.json").read_text())
    latest = interrupted_run / snapshot["latest_checkpoint_result"]["checkpoint_dir_name"]
    state = json.loads((latest / "state.json").read_text())
    assert run.latest_checkpoint == latest
    assert 2 <= len(run.history) == state["epoch"] < 40
    assert list(run.history["epoch"]) == list(range(1, state["epoch"] + 1))
    assert list(run.history["val_loss"]) == [h["val_loss"] for h in state["history"]]
    assert run.best["val_loss"] == min(h["val_loss"] for h in state["history"])
    with pytest.raises(FileNotFoundError, match="did not finish"):
        run.load_best_model()


def test_a_finished_run_reads_back_as_result_json_says(finished_run, mnist_path):
    import orchestrator

    result = json.loads((finished_run / "result.json").read_text())
    assert result["format_version"] == 1
    run = orchestrator.open_run(str(finished_run))
    assert run.status == "finished" and run.name == "done"
    assert run.history.shape[0] == 2 == result["epochs_run"]
    assert {"epoch", "loss", "accuracy", "val_loss", "val_accuracy", "learning_rate"} <= set(run.history.columns)
    assert list(run.history["val_accuracy"]) == [h["val_accuracy"] for h in result["history"]]
    assert run.best == result["best"] and run.evaluation == result["evaluation"]
    assert run.spec["seed"] == 5 and run.stop_reason == "max_epochs"

    # load_best_model sets up tf-keras itself: a fresh interpreter with nothing set scores it.
    code = f"""
import numpy as np, orchestrator
model = orchestrator.open_run({str(finished_run)!r}).load_best_model()
d = np.load({str(mnist_path)!r})
print(model.evaluate(d["x_test"][:500] / 255.0, d["y_test"][:500], verbose=0)[1])
"""
    env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    accuracy = float(out.stdout.strip().splitlines()[-1])
    assert math.isclose(accuracy, result["evaluation"]["best_checkpoint_reloaded"]["accuracy"], abs_tol=1e-6)


def test_a_search_reads_back_as_summary_json_says(finished_search):
    import orchestrator

    summary = json.loads((finished_search / "summary.json").read_text())
    assert summary["format_version"] == 1
    search = orchestrator.open_search(finished_search)
    assert search.status == "finished"
    trials = search.trials
    assert len(trials) == 2 and set(trials["trial_id"]) == {r["trial_id"] for r in summary["results"]}
    assert sorted(trials["optimizer.learning_rate"]) == [0.0003, 0.003]
    by_id = trials.set_index("trial_id")
    for row in summary["results"]:
        assert by_id.loc[row["trial_id"], "best_val_loss"] == row["best_val_loss"]
        assert by_id.loc[row["trial_id"], "epochs_run"] == row["epochs_run"] == 2
    assert search.best_trial == summary["best_trial"]
    assert search.best_trial["best_val_loss"] == trials["best_val_loss"].min()
    assert len(search.history) == 4 and set(search.history["trial_id"]) == set(trials["trial_id"])
    assert search.evaluation == summary["evaluation"]
    model = search.load_best_model()
    assert model.count_params() > 0


def test_a_search_without_its_summary_reads_from_the_trials_checkpoints(finished_search, tmp_path):
    """A driver killed after the trials, before the summary, leaves this: open_search rebuilds the table."""
    import orchestrator

    summary = json.loads((finished_search / "summary.json").read_text())
    copy = tmp_path / "s"
    shutil.copytree(finished_search, copy, symlinks=True)
    for name in ("summary.json", "summary.csv", "curves.png", "best_model.keras"):
        (copy / name).unlink()
    search = orchestrator.open_search(copy)
    assert search.status == "interrupted" and search.evaluation is None
    trials = search.trials.set_index("trial_id")
    assert set(trials.index) == {r["trial_id"] for r in summary["results"]}
    for row in summary["results"]:
        assert trials.loc[row["trial_id"], "epochs_run"] == row["epochs_run"]
        assert trials.loc[row["trial_id"], "best_val_loss"] == row["best_val_loss"]
        assert trials.loc[row["trial_id"], "optimizer.learning_rate"] == row["config"]["optimizer.learning_rate"]
    assert search.best_trial["trial_id"] == summary["best_trial"]["trial_id"]
    with pytest.raises(FileNotFoundError, match="did not finish"):
        search.load_best_model()
