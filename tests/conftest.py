"""Shared fixtures.

``mnist_path`` is the real MNIST file (never downloaded by the tests). Its
candidates are computed at import time, before any test monkeypatches HOME or
KERAS_HOME, so isolation fixtures cannot hide it.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

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
