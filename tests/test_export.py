"""Models ready to serve: the SavedModel beside best_model.keras, and ``--export-top K`` of a search.

Everything exported is loaded back in a fresh process that imports nothing of
this project (and, for the SavedModel, not tf-keras: TensorFlow alone) and scored on the same
test examples the run's own evaluation used.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import SMALL_SUBSET, small_run_config

SUBSET = SMALL_SUBSET
BASE = small_run_config(seed=9)


def _outside_the_project(code: str) -> subprocess.CompletedProcess:
    """Run ``code`` as a user would elsewhere: no PYTHONPATH, cwd /, no Keras selection."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "TF_USE_LEGACY_KERAS")}
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          cwd="/", env=env)


@pytest.fixture(scope="module")
def finished_run(local_ray, tmp_path_factory, mnist_path):
    from orchestrator.engine.train import run_training
    from orchestrator.spec import build_spec

    spec = build_spec({**BASE, "name": "serve-me", "storage": str(tmp_path_factory.mktemp("results")),
                       "task": {"path": str(mnist_path)}, "data": SUBSET})
    return run_training(spec)


@pytest.fixture(scope="module")
def top3_search(finished_run, local_ray, tmp_path_factory, mnist_path):
    from orchestrator.engine.tune import run_search
    from orchestrator.search_space import load_search

    storage = tmp_path_factory.mktemp("results")
    search = load_search({**BASE, "training": {**BASE["training"], "epochs": 1},
                          "task": {"path": str(mnist_path)}, "data": SUBSET,
                          "search": {"samples": 1, "max_concurrent": 2, "asha": {"enabled": False},
                                     "export_top": 3,
                                     "space": {"optimizer.learning_rate": {"grid": [0.003, 0.001, 0.0003, 0.0001]}}}})
    return run_search(search, name="top", storage=str(storage)), storage / "top"


def test_the_saved_model_serves_the_recorded_test_accuracy_without_this_project(finished_run, mnist_path):
    evaluation = finished_run["evaluation"]
    saved = Path(evaluation["saved_model"])
    run_dir = Path(finished_run["result_file"]).parent
    assert saved == run_dir / "saved_model" / "1" and (saved / "saved_model.pb").is_file()
    assert not [p for p in run_dir.iterdir() if p.name.startswith(".saved_model")], "temporary export left behind"
    code = f"""
import sys, numpy as np, tensorflow as tf
loaded = tf.saved_model.load({str(saved)!r})
serve = loaded.signatures["serving_default"]
(name, spec), = serve.structured_input_signature[1].items()
d = np.load({str(mnist_path)!r})
x, y = d["x_test"][:500].astype("float32") / 255.0, d["y_test"][:500]
(probabilities,) = serve(**{{name: tf.constant(x)}}).values()
print(sorted(m for m in sys.modules if m.split(".")[0] in ("orchestrator", "tf_keras")))
print(spec.shape.as_list(), spec.dtype.name)
print(float(np.mean(np.argmax(probabilities.numpy(), axis=1) == y)))
"""
    out = _outside_the_project(code)
    assert out.returncode == 0, out.stderr[-3000:]
    modules, shape, accuracy = out.stdout.strip().splitlines()[-3:]
    assert modules == "[]"
    assert shape == "[None, 28, 28] float32"  # the model's own input, taken from the model
    assert math.isclose(float(accuracy), evaluation["best_checkpoint_reloaded"]["accuracy"], abs_tol=1e-6)


def test_saved_model_cli_shows_the_serving_signature(finished_run):
    cli = Path(sys.executable).parent / "saved_model_cli"
    out = subprocess.run([str(cli), "show", "--dir", finished_run["evaluation"]["saved_model"],
                          "--tag_set", "serve", "--signature_def", "serving_default"],
                         capture_output=True, text=True, timeout=300,
                         env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert out.returncode == 0, out.stderr[-3000:]
    assert "shape: (-1, 28, 28)" in out.stdout and "shape: (-1, 10)" in out.stdout, out.stdout


def test_export_top_3_keeps_the_three_best_trials_with_matching_evaluations(top3_search, mnist_path):
    summary, run_dir = top3_search
    on_disk = json.loads((run_dir / "summary.json").read_text())
    top = on_disk["top_models"]
    assert [t["rank"] for t in top] == [1, 2, 3]
    best3 = sorted(on_disk["results"], key=lambda r: r["best_val_loss"])[:3]
    assert [t["trial_id"] for t in top] == [r["trial_id"] for r in best3]
    assert sorted(p.name for p in (run_dir / "top_models").iterdir()) == \
        [f"{t['rank']}-{t['trial_id']}" for t in top]
    for entry, row in zip(top, best3):
        assert entry["config"] == row["config"] and entry["best_val_loss"] == row["best_val_loss"]
        directory = Path(entry["dir"])
        assert json.loads((directory / "trial.json").read_text()) == entry
        assert Path(entry["model"]) == directory / "best_model.keras"
        assert Path(entry["saved_model"]) == directory / "saved_model" / "1"
    # The best of the three is the search's best trial, scored the same.
    assert top[0]["trial_id"] == on_disk["best_trial"]["trial_id"]
    assert top[0]["evaluation"]["best_checkpoint_reloaded"] == on_disk["evaluation"]["best_checkpoint_reloaded"]

    # Each kept model, loaded with plain tf-keras elsewhere, scores what summary.json says.
    code = f"""
import os, json; os.environ["TF_USE_LEGACY_KERAS"] = "1"
import numpy as np, tensorflow as tf
d = np.load({str(mnist_path)!r})
x, y = d["x_test"][:500] / 255.0, d["y_test"][:500]
print(json.dumps([tf.keras.models.load_model(p).evaluate(x, y, verbose=0)
                  for p in {[t["model"] for t in top]!r}]))
"""
    out = _outside_the_project(code)
    assert out.returncode == 0, out.stderr[-3000:]
    scores = json.loads(out.stdout.strip().splitlines()[-1])
    for (loss, accuracy), entry in zip(scores, top):
        recorded = entry["evaluation"]["best_checkpoint_reloaded"]
        assert math.isclose(accuracy, recorded["accuracy"], abs_tol=1e-6)
        assert math.isclose(loss, recorded["loss"], rel_tol=1e-5)


def test_export_top_models_read_back_from_python(top3_search):
    import orchestrator

    summary, run_dir = top3_search
    search = orchestrator.open_search(run_dir)
    assert [t["trial_id"] for t in search.top_models] == [t["trial_id"] for t in summary["top_models"]]
    third = search.top_models[2]["trial_id"]
    assert search.load_model(third).count_params() > 0
    with pytest.raises(KeyError, match="no exported model"):
        search.load_model("no-such-trial")


def test_export_top_zero_is_refused_before_anything_runs(tmp_path, mnist_path):
    import yaml

    config = {**BASE, "task": {"path": str(mnist_path)}, "data": SUBSET,
              "search": {"space": {"optimizer.learning_rate": {"grid": [0.001]}}}}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    out = subprocess.run([sys.executable, "-m", "orchestrator.cli", "tune", "--config", str(tmp_path / "c.yaml"),
                          "--storage", str(tmp_path / "r"), "--export-top", "0"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2, out.stderr
    assert out.stderr.count("\n") == 1 and "export_top" in out.stderr, out.stderr
    assert not (tmp_path / "r").exists() or not any((tmp_path / "r").iterdir())
