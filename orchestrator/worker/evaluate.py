"""The tutorial's before/after check, and the export of the best model.

Runs in one Ray task (no strategy): the test set is scored with the final
weights, then the best checkpoint is reloaded with ``load_weights`` and scored
again, and the best model is saved as a ``.keras`` file that plain
``tf.keras.models.load_model`` opens without this project, and as a SavedModel
for TF Serving.
"""

from __future__ import annotations

from pathlib import Path

import orchestrator.worker  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow)

import tensorflow as tf

from orchestrator.mnist import MnistSplits
from orchestrator.results import write_atomic
from orchestrator.spec import ExperimentSpec
from orchestrator.checkpoint_files import BEST_WEIGHTS, WEIGHTS
from orchestrator.worker.datasets import scale
from orchestrator.worker.export import export_saved_model, serving_dir
from orchestrator.worker.model import build_compiled_model


def _score(model: tf.keras.Model, splits: MnistSplits, batch: int) -> dict:
    loss, accuracy = model.evaluate(scale(splits.x_test), splits.y_test, batch_size=batch, verbose=0)
    return {"loss": float(loss), "accuracy": float(accuracy)}


def evaluate_and_export(spec: dict, final_dir: str, best_dir: str, splits: MnistSplits,
                        export_path: str | None) -> dict:
    """Score final weights, reload the best with ``load_weights``, score again, export it.

    Args:
        spec: the run's ExperimentSpec as a dict.
        final_dir: the latest checkpoint's directory (final weights).
        best_dir: the best checkpoint's directory.
        splits: MNIST, from the object store.
        export_path: where to save the best model (``.keras``; its SavedModel for serving goes
            beside it, see ``worker/export.py``); None to skip.
    """
    spec = ExperimentSpec.model_validate(spec)
    tf.keras.utils.set_random_seed(spec.seed)
    model = build_compiled_model(spec)
    batch = 1024
    model.load_weights(str(Path(final_dir) / WEIGHTS))
    final = _score(model, splits, batch)
    best_file = Path(best_dir) / BEST_WEIGHTS
    model.load_weights(str(best_file if best_file.exists() else Path(best_dir) / WEIGHTS))
    best = _score(model, splits, batch)
    out = {"test_examples": int(len(splits.y_test)), "final_weights": final, "best_checkpoint_reloaded": best}
    if export_path:
        # A model file is several writes: save under a temporary name, then rename.
        write_atomic(export_path, lambda tmp: _save(model, tmp))
        out["exported_model"] = str(export_path)
        out["saved_model"] = str(export_saved_model(model, serving_dir(export_path)))
    return out


def _save(model: tf.keras.Model, tmp: Path) -> None:
    target = tmp.with_suffix(".keras")
    model.save(str(target))
    target.replace(tmp)
