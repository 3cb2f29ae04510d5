"""Shared fixtures.

``mnist_path`` is the real MNIST file (never downloaded by the tests). Its
candidates are computed at import time, before any test monkeypatches HOME or
KERAS_HOME, so isolation fixtures cannot hide it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.errors import UserError

# The repo sits at /work/main; the shared copy is at /work/shared/data/mnist.npz.
SHARED_MNIST = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist.npz"
_KERAS_HOME = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
KERAS_CACHE_MNIST = Path(_KERAS_HOME) / "datasets" / "mnist.npz"
HOME_CACHE_MNIST = Path(os.path.expanduser("~")) / ".keras" / "datasets" / "mnist.npz"

_CANDIDATES = [SHARED_MNIST, KERAS_CACHE_MNIST, HOME_CACHE_MNIST]


@pytest.fixture(scope="session")
def mnist_path() -> Path:
    """The real mnist.npz: the shared copy, else the Keras cache; fails (not skips) if neither."""
    for candidate in _CANDIDATES:
        if candidate.is_file():
            return candidate
    pytest.fail(
        "real MNIST not found; looked at " + ", ".join(str(c) for c in _CANDIDATES)
        + ". Put Keras's mnist.npz at one of these paths (the tests never download it)."
    )


@pytest.fixture(scope="module")
def local_ray():
    """A local Ray (with its dashboard on 127.0.0.1) for one test module, shut down by its handle."""
    import ray

    from orchestrator.engine.runtime import connect

    assert not ray.is_initialized(), "another test module left Ray running"
    started = connect()
    yield ray
    if started:
        ray.shutdown()


def error_of(fn, *args, **kwargs) -> str:
    """The message of the UserError that ``fn(*args, **kwargs)`` raises; it must be one line."""
    with pytest.raises(UserError) as info:
        fn(*args, **kwargs)
    msg = str(info.value)
    assert "\n" not in msg, f"UserError spans lines: {msg!r}"
    return msg


def validation_loss_of(weights: Path, mnist_path: Path, validation_examples: int = 1000) -> float:
    """val_loss of saved weights on the first ``validation_examples`` of the mnist_mlp task's validation split.

    Reloaded in a fresh process with plain tf-keras and ``model.load_weights``,
    as the tutorial does, so nothing of the run's processes is reused.
    """
    code = f"""
import os; os.environ["TF_USE_LEGACY_KERAS"] = "1"
import numpy as np
from orchestrator.tasks import load
d = np.load({str(mnist_path)!r})
x = d["x_train"][50000:50000 + {validation_examples}].astype("float32") / 255.0  # MNIST holds out the last 10000
y = d["y_train"][50000:50000 + {validation_examples}]
task = load("mnist_mlp")
model = task.build_model(task.parse_params({{}}, "mnist_mlp"))
model.compile(loss="sparse_categorical_crossentropy")
model.load_weights({str(weights)!r})
print(model.evaluate(x, y, batch_size=1000, verbose=0))  # the loss: no metrics compiled
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def run_cli(argv: list[str], cwd: Path, timeout: float = 120, env: dict | None = None) -> subprocess.CompletedProcess:
    """``orchestrator ARGV`` in a fresh process, as a user runs it from ``cwd``."""
    return subprocess.run([sys.executable, "-m", "orchestrator.cli", *argv], capture_output=True, text=True,
                          cwd=cwd, timeout=timeout, env=env)


# A user's task, as a file in the user's working directory: MNIST from the `path` parameter, small splits.
USER_TASK = '''
import numpy as np
from orchestrator.tasks import Arrays, Task

def build_model(p):
    import tensorflow as tf
    return tf.keras.Sequential([
        tf.keras.layers.Flatten(input_shape=(28, 28)),
        tf.keras.layers.Dense(p.units, activation="relu"),
        tf.keras.layers.Dense(10, activation="softmax")])

def load_data(p):
    d = np.load(p.path)
    x, y = d["x_train"].astype("float32") / 255.0, d["y_train"]
    return Arrays(x[:2000], y[:2000], x[-500:], y[-500:], d["x_test"][:500].astype("float32") / 255.0,
                  d["y_test"][:500])

task = Task(build_model=build_model, load_data=load_data, params={"units": 32, "path": "mnist.npz"})
'''


# A quick one-worker run on a slice of MNIST, for tests of what a finished run leaves behind.
SMALL_SUBSET = {"train_examples": 2000, "validation_examples": 500, "test_examples": 500}


def small_run_config(seed: int) -> dict:
    """2 epochs, 1 worker, no histograms or graph, Ray keeping 1 best checkpoint; data: SMALL_SUBSET."""
    return {
        "seed": seed,
        "training": {"epochs": 2, "batch_size_per_worker": 64, "verbose": 0},
        "tensorboard": {"histogram_freq": 0, "write_graph": False},
        "checkpoint": {"keep_best": 1},
        "scaling": {"workers": 1},
    }


def search_config(space: dict, *, epochs: int, batch_size: int = 64, train_examples: int = 3000,
                  early_stopping: dict | None = None, tensorboard: dict | None = None,
                  extra: dict | None = None, **search) -> dict:
    """A small search for tests: seed 3, MNIST slices, one worker per trial, two trials at a time."""
    return {
        "seed": 3,
        "training": {"epochs": epochs, "batch_size_per_worker": batch_size, "verbose": 0},
        "early_stopping": early_stopping or {"enabled": False},
        "checkpoint": {"keep_best": 1},
        "tensorboard": tensorboard or {"histogram_freq": 0},
        "data": {"train_examples": train_examples, "validation_examples": 1000, "test_examples": 1000},
        **(extra or {}),
        "search": {"samples": 1, "workers_per_trial": 1, "max_concurrent": 2, **search, "space": space},
    }


def pbt_search_config(epochs: int, interval: int = 2, algorithm: str = "pbt") -> dict:
    """A PBT (or PB2) population of 2 (a good and a far too large LR), perturbed every ``interval`` epochs.

    Synchronous: on this small subset an epoch is shorter than the gap
    between the two members' starts, and a member that runs ahead finds no score
    of the other to compare with at its perturbation points."""
    pbt = {"perturbation_interval": interval, "quantile": 0.5, "synch": True}
    if algorithm == "pbt":
        pbt["resample_probability"] = 0.0
    return search_config({"optimizer.learning_rate": {"grid": [0.002, 0.3]}}, epochs=epochs,
                         tensorboard={"histogram_freq": 0, "write_graph": False},
                         extra={"lr_schedule": {"name": "constant"}}, algorithm=algorithm, pbt=pbt)


@pytest.fixture
def cli(tmp_path):
    """Start ``orchestrator`` commands; whatever is left of them is killed by pgid at teardown."""
    import shutil

    from commands import Cli

    started: list[Cli] = []

    def start(*args: str, tag: str = "run") -> Cli:
        command = Cli(list(args), tmp_path, f"{tag}{len(started)}")
        started.append(command)
        return command

    yield start
    for command in started:
        command.kill_group()
        command.wait_group_gone(30)
        shutil.rmtree(command.ray_tmp, ignore_errors=True)
