"""The driver launches runs without TensorFlow; the workers get the TF_CONFIG MWMS reads."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap


def test_building_a_run_or_a_trial_imports_no_tensorflow(tmp_path):
    # A fresh interpreter: this test process may have imported TensorFlow already.
    script = textwrap.dedent(f"""
        import sys
        import orchestrator.cli, orchestrator.engine.tune, orchestrator.engine.pbt, orchestrator.engine.stop_at
        from orchestrator.engine.train import load_data, make_trainer
        from orchestrator.spec import ExperimentSpec
        spec = ExperimentSpec.model_validate({{"task": "mnist_cnn", "data": {{"train_examples": 100}}}})
        task, arrays, _ = load_data(spec)  # the task found, its parameters checked, its arrays loaded
        make_trainer(spec, task.ref, None, storage_path={str(tmp_path)!r}, name="run",
                     tensorboard_dir={str(tmp_path / "tb")!r})
        print(sorted(m for m in ("tensorflow", "keras", "tf_keras") if m in sys.modules))
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_tf_config_names_every_worker_and_this_ones_index(monkeypatch):
    from orchestrator.engine.tf_backend import set_tf_config

    monkeypatch.delenv("TF_CONFIG", raising=False)
    addresses = ["10.0.0.5:41231", "10.0.0.6:39817"]
    set_tf_config(addresses, 1)
    assert json.loads(os.environ["TF_CONFIG"]) == {
        "cluster": {"worker": addresses}, "task": {"type": "worker", "index": 1}}


def test_what_tuner_fit_imports_to_count_callbacks_is_imported_ahead():
    """A search imports these while a local Ray starts; tuner.fit then finds them loaded (none left to import)."""
    script = textwrap.dedent("""
        import importlib, sys
        import ray.tune
        from orchestrator.engine.tune import TUNE_FIT_IMPORTS
        for module in TUNE_FIT_IMPORTS:
            importlib.import_module(module)
        before = set(sys.modules)
        from ray.air._internal.usage import _count_callbacks  # what tuner.fit calls with the search's callbacks
        _count_callbacks([])
        print(sorted(m for m in set(sys.modules) - before
                     if m.split(".")[0] in ("mlflow", "wandb", "comet_ml", "aim") or ".integrations." in m
                     or m.startswith("ray.tune.logger")))
        print("mlflow" in before)
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    left, mlflow_ahead = out.stdout.strip().splitlines()[-2:]
    assert left == "[]", f"tuner.fit still imports {left[:300]}: add them to TUNE_FIT_IMPORTS"
    assert mlflow_ahead == "True"
