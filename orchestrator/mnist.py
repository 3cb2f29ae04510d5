"""MNIST for the driver: find it, read it with numpy, check it, split it.

Where the file is looked for, in order::

    --data PATH / data.path            # an explicit mnist.npz
    $KERAS_HOME/datasets/mnist.npz     # Keras's own cache (KERAS_HOME defaults to ~/.keras)
    keras.datasets.mnist.load_data()   # downloads into that cache (needs internet)

The driver loads the arrays once per run and puts them into Ray's object store;
workers never open the file, so worker nodes need no copy of it. Pixels stay
uint8 here (4x smaller to ship); workers scale them to [0, 1]. Labels are never
touched. Only the download fallback imports TensorFlow.
"""

from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from orchestrator.errors import UserError

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


@dataclass(frozen=True)
class MnistSplits:
    """Train / validation / test arrays; x is uint8 (N, 28, 28), y is uint8 labels 0..9."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.y_train), "validation": len(self.y_val), "test": len(self.y_test)}


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

    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
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


def split(arrays: dict[str, np.ndarray], validation_examples: int = 10000,
          train_examples: Optional[int] = None, test_examples: Optional[int] = None) -> MnistSplits:
    """Hold out the last ``validation_examples`` of the training split; optionally subset."""
    x, y = arrays["x_train"], arrays["y_train"]
    if validation_examples >= len(y):
        raise UserError(f"data.validation_examples={validation_examples} leaves no training examples "
                        f"out of {len(y)}")
    cut = len(y) - validation_examples
    x_train, y_train = x[:cut], y[:cut]
    if train_examples is not None:
        x_train, y_train = x_train[:train_examples], y_train[:train_examples]
    x_test, y_test = arrays["x_test"], arrays["y_test"]
    if test_examples is not None:
        x_test, y_test = x_test[:test_examples], y_test[:test_examples]
    return MnistSplits(x_train, y_train, x[cut:], y[cut:], x_test, y_test)


def load_splits(data_spec) -> tuple[MnistSplits, str]:
    """Load and split MNIST as a :class:`~orchestrator.spec.DataSpec` says."""
    arrays, source = load_arrays(data_spec.path)
    return split(arrays, data_spec.validation_examples, data_spec.train_examples,
                 data_spec.test_examples), source
