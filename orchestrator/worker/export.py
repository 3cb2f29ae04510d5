"""A model ready to serve: a TensorFlow SavedModel that TF Serving loads as is.

Beside ``best_model.keras`` the best model is exported with tf-keras's own
``Model.export`` (a SavedModel with one ``serving_default`` signature over the
model's inputs: their shape and dtype come from the model, so any task's model
exports the same way). TF Serving wants versioned directories, so the layout is::

    <run>/saved_model/1/saved_model.pb, variables/     # serve with --model_base_path=<run>/saved_model

Loading it needs TensorFlow only: no tf-keras, no Keras 3, no code of this project.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import orchestrator.worker  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow)

import tensorflow as tf


def export_saved_model(model: tf.keras.Model, path: str | Path) -> Path:
    """Export ``model`` for serving at ``path``, atomically: a reader sees no half-written SavedModel.

    Args:
        model: a built tf-keras model with known inputs (``model.inputs``), e.g. Sequential or functional.
        path: the SavedModel directory to create (replaced if it exists).
    """
    path = Path(path)
    if not getattr(model, "inputs", None):
        raise ValueError(f"model {model.name!r} has no known inputs; build it with an Input or input_shape "
                         "so its serving signature can be derived")
    path.parent.mkdir(parents=True, exist_ok=True)
    # The temporary directory sits beside the target: the rename stays on one filesystem.
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        _quietly(model.export, str(tmp / "export"))  # Model.export refuses an existing non-empty directory
        old = None
        if path.exists():
            old = tmp / "old"
            os.replace(path, old)
        os.replace(tmp / "export", path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return path


def _quietly(export, path: str) -> None:
    """Keras prints every endpoint's signature after an export (dozens of lines on the console);
    with interactive logging off it goes to absl's INFO log instead, shown with --verbose."""
    was_on = tf.keras.utils.is_interactive_logging_enabled()
    tf.keras.utils.disable_interactive_logging()
    try:
        export(path)
    finally:
        if was_on:
            tf.keras.utils.enable_interactive_logging()
