"""The experiment spec: tutorial defaults, YAML + overrides, one-line errors for bad configs."""

from __future__ import annotations

import pytest
from conftest import error_of
import yaml

from orchestrator.schedules import HoldThenExpDecay, Step
from orchestrator.spec import build_spec, load_spec, read_yaml


def write_yaml(tmp_path, data, name="config.yaml"):
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return path




# ----------------------------------------------------------------- defaults

def test_defaults_are_the_tutorials():
    spec = load_spec()
    assert spec.task.name == "mnist_mlp" and spec.task.params == {}
    assert spec.optimizer.name == "adam"
    assert spec.optimizer.learning_rate == 1e-3
    assert isinstance(spec.lr_schedule, HoldThenExpDecay)
    assert spec.lr_schedule.hold_epochs == 5
    assert spec.lr_schedule.rate == 0.1
    assert spec.early_stopping.enabled is True
    assert spec.early_stopping.monitor == "val_loss"
    assert spec.early_stopping.patience == 3
    assert spec.checkpoint.monitor == "val_loss"
    assert spec.checkpoint.mode == "min"
    assert spec.tensorboard.histogram_freq == 1


def test_empty_yaml_file_gives_defaults(tmp_path):
    path = write_yaml(tmp_path, "")
    assert load_spec(path) == load_spec()


def test_global_batch_size_is_per_worker_times_replicas():
    spec = build_spec({"training": {"batch_size_per_worker": 64}})
    assert spec.global_batch_size(4) == 256


# ----------------------------------------------------------------- YAML + overrides

def test_yaml_values_are_used(tmp_path):
    path = write_yaml(tmp_path, {
        "name": "mnist-mlp",
        "optimizer": {"name": "sgd", "learning_rate": 0.05, "momentum": 0.9},
        "training": {"epochs": 8, "batch_size_per_worker": 64},
        "lr_schedule": {"name": "step", "drop": 0.5, "every": 3},
        "scaling": {"workers": 3},
    })
    spec = load_spec(path)
    assert spec.name == "mnist-mlp"
    assert (spec.optimizer.name, spec.optimizer.learning_rate, spec.optimizer.momentum) == ("sgd", 0.05, 0.9)
    assert (spec.training.epochs, spec.training.batch_size_per_worker) == (8, 64)
    assert spec.lr_schedule == Step(drop=0.5, every=3)
    assert spec.scaling.workers == 3
    # Untouched sections keep their defaults.
    assert spec.early_stopping.patience == 3


def test_overrides_win_over_yaml_and_none_overrides_are_ignored(tmp_path):
    path = write_yaml(tmp_path, {
        "training": {"epochs": 20, "batch_size_per_worker": 64},
        "scaling": {"workers": 3},
    })
    spec = load_spec(path, {
        "training.epochs": 5,            # overrides the YAML
        "scaling.workers": None,         # a flag not given: YAML value stays
        "optimizer.learning_rate": 0.01,  # a section the YAML does not have
        "task.path": "some/mnist.npz",
    })
    assert spec.training.epochs == 5
    assert spec.training.batch_size_per_worker == 64
    assert spec.scaling.workers == 3
    assert spec.optimizer.learning_rate == 0.01
    assert spec.task.params == {"path": "some/mnist.npz"}


def test_overrides_without_a_file():
    spec = load_spec(None, {"training.epochs": 2, "early_stopping.patience": None})
    assert spec.training.epochs == 2
    assert spec.early_stopping.patience == 3


def test_bad_override_is_reported_like_a_bad_yaml_value():
    msg = error_of(load_spec, None, {"training.epochs": 0})
    assert msg.startswith("training.epochs:")
    assert "valid example" in msg


def test_override_below_a_scalar_is_a_user_error(tmp_path):
    path = write_yaml(tmp_path, {"training": 5})
    msg = error_of(load_spec, path, {"training.epochs": 3})
    assert "training.epochs" in msg
    assert "mapping" in msg


def test_search_section_is_left_to_the_search_validator(tmp_path):
    path = write_yaml(tmp_path, {"training": {"epochs": 4},
                                 "search": {"space": {"optimizer.learning_rate": [0.1, 0.01]}}})
    assert load_spec(path).training.epochs == 4


# ----------------------------------------------------------------- bad configs

BAD_CONFIGS = [
    # id, config, field path the message must start with, substrings it must contain
    pytest.param({"training": {"epochs": 0}}, "training.epochs", ["valid example", "20"], id="epochs-0"),
    pytest.param({"early_stopping": {"patience": 0}}, "early_stopping.patience", ["valid example"],
                 id="patience-0"),
    pytest.param({"scaling": {"workers": 0}}, "scaling.workers", ["valid example"], id="workers-0"),
    pytest.param({"training": {"batch_size_per_worker": 0}}, "training.batch_size_per_worker",
                 ["valid example"], id="batch-size-0"),
    pytest.param({"optimizer": {"learning_rate": 0}}, "optimizer.learning_rate", ["valid example"],
                 id="learning-rate-0"),
    pytest.param({"optimizer": {"learning_rate": -1}}, "optimizer.learning_rate", ["valid example", "-1"],
                 id="learning-rate-negative"),
    pytest.param({"trainin": {"epochs": 3}}, "trainin",
                 ["unknown key", "training", "optimizer", "lr_schedule", "scaling", "data"],
                 id="unknown-top-level-key"),
    pytest.param({"training": {"epoch": 3}}, "training.epoch", ["unknown key", "epochs", "batch_size_per_worker"],
                 id="unknown-nested-key"),
    pytest.param({"lr_schedule": {"name": "linear"}}, "lr_schedule",
                 ["linear", "constant", "hold_then_exp_decay", "step", "cosine"], id="unknown-schedule"),
    pytest.param({"lr_schedule": {"name": "step", "hold_epochs": 3}}, "lr_schedule.hold_epochs",
                 ["unknown key", "drop", "every"], id="parameter-of-other-schedule"),
    pytest.param({"scaling": {"workers": "two"}}, "scaling.workers", ["'two'", "valid example"],
                 id="wrong-type"),
    pytest.param({"optimizer": {"name": "rmsprop"}}, "optimizer.name", ["rmsprop", "adam", "sgd"],
                 id="bad-optimizer"),
    pytest.param({"name": "team/run"}, "name", ["/", "run1"], id="name-with-slash"),
    pytest.param({"data": {"validation_examples": 0}}, "data.validation_examples",
                 ["greater than or equal to 1", "valid example"], id="validation-examples-0"),
    pytest.param({"lr_schedule": {"name": "hold_then_exp_decay", "rate": 0}}, "lr_schedule.rate",
                 ["valid example"], id="schedule-rate-0"),
    pytest.param({"task": {"name": ""}}, "task.name", ["at least 1 character", "valid example"],
                 id="task-name-empty"),
]


@pytest.mark.parametrize("config, path, needles", BAD_CONFIGS)
def test_bad_config_is_one_line_user_error_naming_the_field(tmp_path, config, path, needles):
    # Through the whole user path: a YAML file read by load_spec.
    msg = error_of(load_spec, write_yaml(tmp_path, config))
    assert msg.startswith(f"{path}:"), f"message does not start with the field path {path!r}: {msg!r}"
    for needle in needles:
        assert needle in msg, f"{needle!r} missing from {msg!r}"


def test_malformed_yaml_names_the_line(tmp_path):
    path = write_yaml(tmp_path, "training:\n  epochs: 5\n  batch_size_per_worker: 64: 3\n")
    msg = error_of(load_spec, path)
    assert "malformed YAML" in msg
    assert "line 3" in msg
    assert str(path) in msg


def test_yaml_top_level_list_is_rejected(tmp_path):
    path = write_yaml(tmp_path, "- training\n- epochs\n")
    msg = error_of(load_spec, path)
    assert str(path) in msg
    assert "mapping" in msg


def test_missing_config_file(tmp_path):
    path = tmp_path / "nope.yaml"
    msg = error_of(load_spec, path)
    assert "not found" in msg
    assert str(path) in msg


def test_read_yaml_uses_safe_loader_and_never_executes_tags(tmp_path):
    marker = tmp_path / "pwned"
    path = write_yaml(tmp_path, f'!!python/object/apply:os.system ["touch {marker}"]\n')
    error_of(read_yaml, path)
    assert not marker.exists(), "YAML tag executed a shell command"
