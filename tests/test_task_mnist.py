"""The MNIST tasks' loader: finding, checking and splitting MNIST, on small synthetic .npz files (no download)."""

from __future__ import annotations

import urllib.error

import numpy as np
import pytest
from conftest import error_of

from orchestrator.spec import build_spec
from orchestrator.tasks import resolve
from orchestrator.tasks.mnist import keras_cache_path, load_arrays, read_npz, split

N_TRAIN, N_TEST = 100, 20


def fake_arrays(n_train: int = N_TRAIN, n_test: int = N_TEST, label_offset: int = 0) -> dict[str, np.ndarray]:
    """Keras's layout with small N; row i of x is filled with i % 256 so rows are identifiable."""
    def images(n):
        return (np.arange(n, dtype=np.int64)[:, None, None] % 256 * np.ones((1, 28, 28), np.int64)).astype(np.uint8)

    def labels(n):
        return ((np.arange(n) + label_offset) % 10).astype(np.uint8)

    return {"x_train": images(n_train), "y_train": labels(n_train),
            "x_test": images(n_test), "y_test": labels(n_test)}


def write_npz(path, arrays):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        np.savez(f, **arrays)
    return path




@pytest.fixture(autouse=True)
def isolated_home(tmp_path, monkeypatch):
    """No test may read or write the real Keras cache: HOME and KERAS_HOME point at empty dirs."""
    home = tmp_path / "home"
    keras_home = tmp_path / "keras_home"
    # ~/.keras must exist: tf_keras falls back to /tmp/.keras when it is not writable.
    (home / ".keras").mkdir(parents=True)
    keras_home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("KERAS_HOME", str(keras_home))
    monkeypatch.setenv("TF_USE_LEGACY_KERAS", "1")  # restored after _download sets it
    return home, keras_home


@pytest.fixture
def valid_npz(tmp_path):
    return write_npz(tmp_path / "mnist.npz", fake_arrays())


# ----------------------------------------------------------------- where the file comes from

def test_keras_cache_path_honours_keras_home(isolated_home):
    _, keras_home = isolated_home
    assert keras_cache_path() == keras_home / "datasets" / "mnist.npz"


def test_keras_cache_path_defaults_to_home_dot_keras(isolated_home, monkeypatch):
    home, _ = isolated_home
    monkeypatch.delenv("KERAS_HOME")
    assert keras_cache_path() == home / ".keras" / "datasets" / "mnist.npz"


def test_explicit_path_wins_over_keras_cache(tmp_path):
    write_npz(keras_cache_path(), fake_arrays(label_offset=0))
    explicit = write_npz(tmp_path / "mine" / "mnist.npz", fake_arrays(label_offset=3))
    arrays, source = load_arrays(explicit)
    assert source == str(explicit.resolve())
    assert arrays["y_train"][0] == 3


def test_keras_cache_is_used_when_no_path_given():
    cached = write_npz(keras_cache_path(), fake_arrays(label_offset=7))
    arrays, source = load_arrays(None)
    assert source == str(cached)
    assert arrays["y_train"][0] == 7
    assert arrays["x_train"].shape == (N_TRAIN, 28, 28)


def test_missing_explicit_file_is_an_error_even_with_a_cache(tmp_path):
    write_npz(keras_cache_path(), fake_arrays())
    missing = tmp_path / "typo" / "mnist.npz"
    msg = error_of(load_arrays, missing)
    assert str(missing) in msg
    assert "--data" in msg
    assert "datasets/mnist.npz" in msg


def _no_network(*args, **kwargs):
    raise urllib.error.URLError("simulated: no network")


def test_no_file_and_no_network_points_at_data_flag(monkeypatch):
    # The real tf_keras downloader runs; only the network call fails.
    from tf_keras.src.utils import data_utils
    monkeypatch.setattr(data_utils, "urlretrieve", _no_network)
    msg = error_of(load_arrays, None)
    assert "--data" in msg
    assert "could not be downloaded" in msg


def test_failed_download_does_not_delete_a_file_in_home_keras_cache(isolated_home, monkeypatch):
    # KERAS_HOME points elsewhere, and ~/.keras/datasets/mnist.npz holds a copy that is not
    # byte-identical to Keras's download (like this repo's shared/data/mnist.npz). A failed
    # download must leave the user's file alone.
    home, _ = isolated_home
    theirs = write_npz(home / ".keras" / "datasets" / "mnist.npz", fake_arrays())
    from tf_keras.src.utils import data_utils
    monkeypatch.setattr(data_utils, "urlretrieve", _no_network)
    error_of(load_arrays, None)
    assert theirs.is_file(), "load_arrays(None) deleted ~/.keras/datasets/mnist.npz after a failed download"


# ----------------------------------------------------------------- checking the file

def test_valid_fake_file_reads_back_unchanged(valid_npz):
    arrays = read_npz(valid_npz)
    expected = fake_arrays()
    assert set(arrays) == set(expected)
    for key in expected:
        assert arrays[key].dtype == np.uint8
        np.testing.assert_array_equal(arrays[key], expected[key])


def test_wrong_keys(tmp_path):
    arrays = fake_arrays()
    arrays["images"] = arrays.pop("x_train")
    path = write_npz(tmp_path / "m.npz", arrays)
    msg = error_of(read_npz, path)
    assert "x_train" in msg
    assert str(path) in msg


@pytest.mark.parametrize("key, bad", [
    ("x_train", np.zeros((N_TRAIN, 28, 27), np.uint8)),
    ("x_test", np.zeros((N_TEST, 784), np.uint8)),
    ("y_train", np.zeros((N_TRAIN, 1), np.uint8)),
    ("x_train", np.zeros((0, 28, 28), np.uint8)),
])
def test_wrong_shape(tmp_path, key, bad):
    arrays = fake_arrays()
    arrays[key] = bad
    path = write_npz(tmp_path / "m.npz", arrays)
    msg = error_of(read_npz, path)
    assert key in msg
    assert "shape" in msg


def test_rows_of_images_and_labels_must_match(tmp_path):
    arrays = fake_arrays()
    arrays["y_train"] = arrays["y_train"][:-1]
    msg = error_of(read_npz, write_npz(tmp_path / "m.npz", arrays))
    assert "x_train" in msg and "y_train" in msg


@pytest.mark.parametrize("key", ["x_train", "y_test"])
def test_wrong_dtype(tmp_path, key):
    arrays = fake_arrays()
    arrays[key] = arrays[key].astype(np.float32)
    msg = error_of(read_npz, write_npz(tmp_path / "m.npz", arrays))
    assert key in msg
    assert "float32" in msg and "uint8" in msg


@pytest.mark.parametrize("key, value", [("y_train", 10), ("y_test", 255)])
def test_labels_outside_0_to_9(tmp_path, key, value):
    arrays = fake_arrays()
    arrays[key][3] = value
    msg = error_of(read_npz, write_npz(tmp_path / "m.npz", arrays))
    assert key in msg
    assert "0..9" in msg


@pytest.mark.parametrize("keep", [0.5, 0.05])
def test_truncated_file(valid_npz, keep):
    data = valid_npz.read_bytes()
    valid_npz.write_bytes(data[: int(len(data) * keep)])
    msg = error_of(read_npz, valid_npz)
    assert str(valid_npz) in msg
    assert "truncated or corrupt" in msg


def test_file_that_is_not_npz_at_all(tmp_path):
    path = tmp_path / "mnist.npz"
    path.write_text("<html>proxy login page</html>")
    msg = error_of(read_npz, path)
    assert str(path) in msg


def test_npy_file_instead_of_npz(tmp_path):
    path = tmp_path / "x_train.npy"
    np.save(path, fake_arrays()["x_train"])
    msg = error_of(read_npz, path)
    assert str(path) in msg


# ----------------------------------------------------------------- splitting

def test_split_holds_out_last_validation_examples_of_train():
    arrays = fake_arrays()
    s = split(arrays, holdout=10)
    assert s.sizes() == {"train": 90, "validation": 10, "test": N_TEST}
    np.testing.assert_array_equal(s.x_train, arrays["x_train"][:90])
    np.testing.assert_array_equal(s.y_train, arrays["y_train"][:90])
    np.testing.assert_array_equal(s.x_val, arrays["x_train"][90:])
    np.testing.assert_array_equal(s.y_val, arrays["y_train"][90:])
    np.testing.assert_array_equal(s.x_test, arrays["x_test"])
    np.testing.assert_array_equal(s.y_test, arrays["y_test"])


def test_split_never_changes_labels_or_pixel_dtype():
    arrays = fake_arrays()
    before = {k: v.copy() for k, v in arrays.items()}
    s = split(arrays, holdout=10)
    for name in ("x_train", "x_val", "x_test", "y_train", "y_val", "y_test"):
        assert getattr(s, name).dtype == np.uint8, name
    np.testing.assert_array_equal(np.concatenate([s.y_train, s.y_val]), before["y_train"])
    np.testing.assert_array_equal(np.concatenate([s.x_train, s.x_val]), before["x_train"])
    for key in arrays:  # the input arrays are left as they were
        np.testing.assert_array_equal(arrays[key], before[key])


@pytest.mark.parametrize("validation_examples", [N_TRAIN, N_TRAIN + 1])
def test_validation_too_large(validation_examples):
    msg = error_of(split, fake_arrays(), holdout=validation_examples)
    assert "task.holdout" in msg
    assert str(N_TRAIN) in msg


def test_validation_leaving_one_training_example_is_allowed():
    assert split(fake_arrays(), holdout=N_TRAIN - 1).sizes()["train"] == 1


def test_the_task_loads_its_path_and_the_data_caps_take_the_front_of_each_split(valid_npz):
    spec = build_spec({"task": {"name": "mnist_mlp", "path": str(valid_npz), "holdout": 20},
                       "data": {"train_examples": 50, "test_examples": 10}})
    task = resolve(spec.task)
    arrays = task.task.arrays(task.params, spec.data.caps(), spec.task.name)
    assert arrays.sizes() == {"train": 50, "validation": 20, "test": 10}
    np.testing.assert_array_equal(arrays.y_val, fake_arrays()["y_train"][80:])  # still the end of train


# ----------------------------------------------------------------- the real file

def test_real_mnist_file(mnist_path):
    arrays = read_npz(mnist_path)
    assert arrays["x_train"].shape == (60000, 28, 28)
    assert arrays["y_train"].shape == (60000,)
    assert arrays["x_test"].shape == (10000, 28, 28)
    assert arrays["y_test"].shape == (10000,)
    for key, arr in arrays.items():
        assert arr.dtype == np.uint8, key
    for key in ("y_train", "y_test"):
        assert set(np.unique(arrays[key]).tolist()) == set(range(10)), key
    assert arrays["y_train"][:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
    assert arrays["x_train"].max() > 0  # not an all-black placeholder

    s = split(arrays)
    assert s.sizes() == {"train": 50000, "validation": 10000, "test": 10000}
