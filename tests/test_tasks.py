"""The task seam, without Ray: finding a task, its parameters, its arrays, and bad tasks as one line, exit 2."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import error_of, run_cli

from orchestrator.search_space import load_search
from orchestrator.spec import build_spec, load_spec, set_path
from orchestrator.tasks import Arrays, Task, TaskRef, load, reference, resolve

USER_TASK = '''
import numpy as np
from orchestrator.tasks import Arrays, Task

def build_model(p):
    import tensorflow as tf
    return tf.keras.Sequential([tf.keras.layers.Dense(p.units, activation="relu", input_shape=(4,)),
                                tf.keras.layers.Dense(3, activation="softmax")])

def load_data(p):
    x = np.random.default_rng(0).random((60, 4), dtype=np.float32)
    y = np.arange(60) % 3
    return Arrays(x[:40], y[:40], x[40:50], y[40:50], x[50:], y[50:])

task = Task(build_model=build_model, load_data=load_data, params={"units": 8, "rate": 0.5})
'''


@pytest.fixture
def user_task(tmp_path, monkeypatch) -> Path:
    """A task file in a temporary working directory, outside the package."""
    (tmp_path / "my_task.py").write_text(USER_TASK)
    monkeypatch.chdir(tmp_path)
    return tmp_path / "my_task.py"


def test_default_task_is_the_tutorial_mlp():
    spec = build_spec({})
    assert spec.task.name == "mnist_mlp"
    assert resolve(spec.task).params.hidden_units == [256, 64, 32]


def test_task_shorthand_and_parameters_in_yaml_and_overrides():
    spec = build_spec({"task": "mnist_cnn"})
    assert (spec.task.name, spec.task.params) == ("mnist_cnn", {})
    spec = load_spec(None, {"task.name": "mnist_cnn", "task.dropout": 0.3})
    assert resolve(spec.task).params.dropout == 0.3 and resolve(spec.task).params.filters == 32
    config = set_path({"task": "mnist_cnn"}, "task.filters", 16)
    assert config["task"] == {"name": "mnist_cnn", "filters": 16}


def test_builtin_by_module_path_and_user_file_relative_to_the_working_directory(user_task):
    assert load("orchestrator.tasks.mnist:cnn") is load("mnist_cnn")
    ref = reference("my_task.py:task")
    assert ref.path == str(user_task) and "def build_model" in ref.source
    params = resolve(build_spec({"task": {"name": "my_task.py:task", "units": 4}}).task).params
    assert (params.units, params.rate) == (4, 0.5)


def test_a_file_task_loads_on_a_node_without_the_file(user_task):
    """Workers on other nodes get the file's text from the driver."""
    ref = reference("my_task.py:task")
    elsewhere = TaskRef(name=ref.name, path="/nowhere/on/this/node/my_task.py", source=ref.source)
    task = load(elsewhere)
    assert isinstance(task, Task) and task.defaults() == {"units": 8, "rate": 0.5}


@pytest.mark.parametrize("name, expected", [
    ("missing.py:task", "file not found"),
    ("no_such_package.tasks:task", "cannot import no_such_package.tasks: ModuleNotFoundError"),
    ("my_task.py:nope", "has no attribute 'nope'"),
    ("my_task.py:np", "np is a module, not an orchestrator.tasks.Task"),
    ("mnist_resnet", "no such built-in task; built-ins: mnist_mlp, mnist_cnn"),
    ("my_task.py", "give a built-in"),
])
def test_bad_task_names(user_task, name, expected):
    assert expected in error_of(reference, name)


@pytest.mark.parametrize("params, expected", [
    ({"unit": 3}, "task.unit: unknown parameter of task my_task.py:task; valid: units, rate"),
    ({"units": "many"}, "task.units: Input should be a valid integer"),
    ({"units": 2.5}, "valid example: `units: 8`"),
])
def test_bad_task_parameters(user_task, params, expected):
    assert expected in error_of(resolve, build_spec({"task": {"name": "my_task.py:task", **params}}).task)


def test_a_search_over_task_parameters_is_checked_against_the_task(user_task):
    config = {"task": "my_task.py:task", "search": {"space": {"task.units": {"choice": [4, 16]}}}}
    search = load_search(config)
    assert search.trial_spec({"task.units": 16}).task.params == {"units": 16}
    bad = set_path(config, "search.space", {"task.units": {"choice": [4, "x"]}})
    assert "search.space.task.units -> task.units" in error_of(load_search, bad)


def _arrays(n=10, **overrides) -> Arrays:
    x, y = np.zeros((n, 4), np.float32), np.zeros(n, np.int64)
    parts = dict(x_train=x, y_train=y, x_val=x, y_val=y, x_test=x, y_test=y)
    parts.update(overrides)
    return Arrays(**parts)


@pytest.mark.parametrize("arrays, expected", [
    (_arrays(y_train=np.zeros(9, np.int64)), "the train split has 10 examples in x but 9 in y"),
    (_arrays(x_val=np.array([["a"] * 4] * 10)), "x of the validation split has dtype <U1, not numeric"),
    (_arrays(x_test=np.zeros((0, 4)), y_test=np.zeros(0)), "the test split is empty"),
    (_arrays(y_train=[0] * 10), "y of the train split is a list, not a numpy array"),
])
def test_bad_arrays(arrays, expected):
    assert expected in error_of(arrays.check, "t")


def test_data_caps_take_the_first_examples_and_refuse_more_than_there_are():
    arrays = _arrays(20, x_train=np.arange(80, dtype=np.float32).reshape(20, 4))
    limited = arrays.limit({"train": 5, "validation": None, "test": 3}, "t")
    assert limited.sizes() == {"train": 5, "validation": 20, "test": 3}
    assert (limited.x_train == arrays.x_train[:5]).all()
    assert "data.train_examples: 21 is more than the 20 train examples of task t" in \
        error_of(arrays.limit, {"train": 21}, "t")


def test_mnist_validation_is_the_end_of_the_training_split(mnist_path):
    from orchestrator.tasks.mnist import load as load_mnist

    arrays = load_mnist(str(mnist_path), holdout=1000)
    raw = np.load(mnist_path)
    assert arrays.sizes() == {"train": 59000, "validation": 1000, "test": 10000}
    assert (arrays.y_val == raw["y_train"][-1000:]).all() and arrays.x_train.dtype == np.uint8


# ------------------------------------------------------ the command line, bad tasks caught before Ray

BAD_TASK_FILE = {
    "import-error": "import no_such_module\n",
    "not-a-task": "task = 42\n",
    "mismatched-lengths": USER_TASK.replace("return Arrays(x[:40], y[:40]", "return Arrays(x[:40], y[:39]"),
    "non-numeric": USER_TASK.replace("y = np.arange(60) % 3", "y = np.array(['cat'] * 60)"),
    "loader-raises": USER_TASK.replace("def load_data(p):", "def load_data(p):\n    raise OSError('disk gone')"),
}

DRIVER_CASES = [
    ("file-missing", "missing.py:task", [], "file not found"),
    ("import-error", "bad.py:task", [], "importing"),
    ("attribute-missing", "bad.py:nothing", [], "has no attribute 'nothing'"),
    ("not-a-task", "bad.py:task", [], "task is a int, not an orchestrator.tasks.Task"),
    ("unknown-param", "good.py:task", ["--task-param", "unit=3"], "task.unit: unknown parameter"),
    ("wrong-type-param", "good.py:task", ["--task-param", "units=many"], "task.units: Input should be a valid integer"),
    ("mismatched-lengths", "bad.py:task", [], "the train split has 40 examples in x but 39 in y"),
    ("non-numeric", "bad.py:task", [], "y of the train split has dtype <U3, not numeric"),
    ("loader-raises", "bad.py:task", [], "load_data raised OSError: disk gone"),
]


def finished_run(storage: Path, name: str) -> dict:
    run = storage / name
    run.mkdir(parents=True)
    (run / "result.json").write_text('{"status": "finished", "keep": "me"}')
    (run / "best_model.keras").write_bytes(b"model bytes")
    return {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}


@pytest.mark.parametrize("case, task, flags, expected", DRIVER_CASES, ids=[c[0] for c in DRIVER_CASES])
def test_bad_task_is_one_line_exit_2_and_keeps_a_finished_run(case, task, flags, expected, tmp_path):
    (tmp_path / "good.py").write_text(USER_TASK)
    (tmp_path / "bad.py").write_text(BAD_TASK_FILE.get(case, USER_TASK))
    before = finished_run(tmp_path / "results", "done")
    out = run_cli(["train", "--task", task, *flags, "--storage", "results", "--name", "done", "--overwrite"],
                  cwd=tmp_path)
    assert out.returncode == 2, out.stderr[-2000:]
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: task") and expected in lines[0], out.stderr[-2000:]
    run = tmp_path / "results" / "done"
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before
