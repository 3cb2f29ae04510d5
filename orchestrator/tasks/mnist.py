"""The built-in MNIST tasks: the tutorial's MLP (the default) and a small convnet.

    orchestrator train                                 # mnist_mlp, the tutorial
    orchestrator train --task mnist_cnn --workers 2    # >= 99% test accuracy
    orchestrator train --task-param hidden_units=[512,128] --data ~/mnist.npz

Where the file is looked for, in order::

    --data PATH / data.path            # an explicit mnist.npz
    $KERAS_HOME/datasets/mnist.npz     # Keras's own cache (KERAS_HOME defaults to ~/.keras)
    keras.datasets.mnist.load_data()   # downloads into that cache (needs internet)

The driver loads the arrays once per run and puts them into Ray's object store;
workers never open the file, so worker nodes need no copy of it. Pixels stay
uint8 here (4x smaller to ship); workers scale them to [0, 1]. Labels are never
touched. Only the download fallback imports TensorFlow; the models import it
when they are built, inside a worker.

The validation set is the last ``holdout`` (10000) images of MNIST's 60k
training split, the test set MNIST's own 10k test split; ``data.*_examples``
then takes the first N of each split.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path
from typing import Annotated, Optional

import numpy as np
from pydantic import Field

from orchestrator.errors import UserError
from orchestrator.process import use_tf_keras
from orchestrator.tasks.task import Arrays, Task

EXPECTED = {
    "x_train": ((60000, 28, 28), np.uint8),
    "y_train": ((60000,), np.uint8),
    "x_test": ((10000, 28, 28), np.uint8),
    "y_test": ((10000,), np.uint8),
}
_PLACE_IT = ("pass --data PATH/mnist.npz, or put the file at "
             "$KERAS_HOME/datasets/mnist.npz (default ~/.keras/datasets/mnist.npz)")


def keras_cache_path() -> Path:
    """Where Keras caches ``mnist.npz`` (honours ``KERAS_HOME``)."""
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    return Path(home) / "datasets" / "mnist.npz"


def read_npz(path: str | Path) -> dict[str, np.ndarray]:
    """Read and check an MNIST ``.npz`` in Keras's layout; UserError naming what is wrong."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"data file not found: {path}; {_PLACE_IT}")
    try:
        loaded = np.load(path, allow_pickle=False)
        if not isinstance(loaded, np.lib.npyio.NpzFile):
            raise UserError(f"data file {path} is a single array, not an .npz archive with "
                            "x_train, y_train, x_test, y_test")
        with loaded as npz:
            arrays = {key: npz[key] for key in npz.files if key in EXPECTED}
            missing = sorted(set(EXPECTED) - set(npz.files))
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        raise UserError(f"data file {path} is not a readable .npz (truncated or corrupt?): {exc}") from None
    if missing:
        raise UserError(f"data file {path} lacks keys {missing}; expected x_train, y_train, x_test, y_test "
                        "as in Keras's mnist.npz")
    for key, (shape, dtype) in EXPECTED.items():
        arr = arrays[key]
        if arr.shape[1:] != shape[1:] or arr.ndim != len(shape) or arr.shape[0] == 0:
            raise UserError(f"data file {path}: {key} has shape {arr.shape}, expected {shape}")
        if arr.dtype != dtype:
            raise UserError(f"data file {path}: {key} has dtype {arr.dtype}, expected {np.dtype(dtype).name}")
    for key in ("y_train", "y_test"):
        if arrays[key].max() > 9:
            raise UserError(f"data file {path}: {key} has labels outside 0..9 (max {int(arrays[key].max())})")
    for x, y in (("x_train", "y_train"), ("x_test", "y_test")):
        if len(arrays[x]) != len(arrays[y]):
            raise UserError(f"data file {path}: {x} has {len(arrays[x])} rows but {y} has {len(arrays[y])}")
    return arrays


# What keras.datasets.mnist.load_data() downloads, and its published sha256.
_ORIGIN = "https://storage.googleapis.com/tensorflow/tf-keras-datasets/mnist.npz"
_SHA256 = "731c5ac602752760c8e48fbffcf8c3b850d9dc2a2aedcf2cc48468fc17b673d1"


def _download() -> dict[str, np.ndarray]:
    """Keras's own downloader, the last resort (imports TensorFlow).

    It downloads into a fresh temporary directory, not the cache itself: Keras
    deletes a cached file whose hash differs when a re-download fails, and a
    user's own copy of MNIST must never be lost that way. A good download is
    then moved to :func:`keras_cache_path`, where the next run finds it.
    """
    import shutil
    import tempfile

    use_tf_keras()
    with tempfile.TemporaryDirectory(prefix="orchestrator-mnist-") as tmp:
        try:
            import tf_keras

            fetched = tf_keras.utils.get_file("mnist.npz", origin=_ORIGIN, file_hash=_SHA256,
                                              cache_dir=tmp, cache_subdir="")
        except Exception as exc:  # no network, no TF, a proxy page instead of the file...
            raise UserError(f"MNIST not found and could not be downloaded ({type(exc).__name__}); "
                            f"{_PLACE_IT}") from None
        arrays = read_npz(fetched)
        target = keras_cache_path()
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(fetched, target.with_suffix(".part"))
            os.replace(target.with_suffix(".part"), target)
    return arrays


def load_arrays(path: Optional[str | Path] = None) -> tuple[dict[str, np.ndarray], str]:
    """The four MNIST arrays and where they came from (explicit path, cache, or download)."""
    if path:
        return read_npz(path), str(Path(path).resolve())
    cached = keras_cache_path()
    if cached.is_file():
        return read_npz(cached), str(cached)
    return _download(), "keras.datasets.mnist.load_data()"


def load(path: Optional[str] = None, holdout: int = 10000) -> Arrays:
    """MNIST as train / validation / test arrays: the last ``holdout`` training images validate."""
    return split(load_arrays(path)[0], holdout)


def split(arrays: dict[str, np.ndarray], holdout: int = 10000) -> Arrays:
    """Keras's four MNIST arrays -> train / validation (the last ``holdout`` of train) / test."""
    x, y = arrays["x_train"], arrays["y_train"]
    if not 1 <= holdout < len(y):
        raise UserError(f"task.holdout: {holdout} must leave training examples out of MNIST's {len(y)} "
                        "(valid example: `holdout: 10000`)")
    cut = len(y) - holdout
    return Arrays(x[:cut], y[:cut], x[cut:], y[cut:], arrays["x_test"], arrays["y_test"])


def _load(p) -> Arrays:
    return load(p.path, p.holdout)


def _scale(x):
    """uint8 pixels 0..255 -> float32 in [0, 1], one batch at a time inside tf.data."""
    import tensorflow as tf

    return tf.cast(x, tf.float32) / 255.0


def _build_mlp(p):
    import tensorflow as tf

    layers = [tf.keras.layers.Flatten(input_shape=(28, 28), name="flatten")]
    layers += [tf.keras.layers.Dense(units, activation="relu", name=f"dense_{i}")
               for i, units in enumerate(p.hidden_units)]
    layers.append(tf.keras.layers.Dense(10, activation="softmax", name="output"))
    return tf.keras.Sequential(layers, name="mnist_mlp")


def _build_cnn(p):
    import tensorflow as tf

    layers = tf.keras.layers
    return tf.keras.Sequential([
        layers.Reshape((28, 28, 1), input_shape=(28, 28), name="channels"),
        layers.Conv2D(p.filters, 3, activation="relu", name="conv_0"),
        layers.MaxPooling2D(2, name="pool_0"),
        layers.Conv2D(p.filters * 2, 3, activation="relu", name="conv_1"),
        layers.MaxPooling2D(2, name="pool_1"),
        layers.Flatten(name="flatten"),
        layers.Dropout(p.dropout, name="dropout"),
        layers.Dense(10, activation="softmax", name="output"),
    ], name="mnist_cnn")


_DATA_PARAMS = {"path": (Optional[str], None), "holdout": (Annotated[int, Field(ge=1)], 10000)}
_UNITS = Annotated[int, Field(ge=1)]

mlp = Task(
    build_model=_build_mlp, load_data=_load, preprocess=_scale,
    params={"hidden_units": (Annotated[list[_UNITS], Field(min_length=1)], [256, 64, 32]), **_DATA_PARAMS},
    description="the tf.keras tutorial's MLP on MNIST: Flatten 28x28 -> Dense 256 -> 64 -> 32 -> 10 softmax")

cnn = Task(
    build_model=_build_cnn, load_data=_load, preprocess=_scale,
    params={"filters": (_UNITS, 32), "dropout": (Annotated[float, Field(ge=0, lt=1)], 0.5), **_DATA_PARAMS},
    description="a small convnet on MNIST: Conv 32 -> pool -> Conv 64 -> pool -> dropout -> Dense 10 softmax")
