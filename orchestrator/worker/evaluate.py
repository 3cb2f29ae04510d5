"""The tutorial's before/after check on the task's test split, and the export of the best model.

Runs in one Ray task (no strategy): the test split is scored with the final
weights, then the best checkpoint is reloaded with ``load_weights`` and scored
again, and the best model is saved as a ``.keras`` file that plain
``tf.keras.models.load_model`` opens without this project (unless the task's
model has custom layers), and as a SavedModel for TF Serving.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import orchestrator.worker  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow)

import tensorflow as tf

from orchestrator.checkpoint_files import BEST_WEIGHTS, WEIGHTS
from orchestrator.results import write_atomic
from orchestrator.scratch import scratch
from orchestrator.spec import ExperimentSpec
from orchestrator.storage import RemotePath
from orchestrator.tasks import TaskRef, load
from orchestrator.worker.datasets import test_dataset
from orchestrator.layout import serving_dir
from orchestrator.worker.export import export_saved_model
from orchestrator.worker.model import build_compiled_model

EVAL_BATCH = 1024


def _score(model: tf.keras.Model, dataset) -> dict:
    values = model.evaluate(dataset, verbose=0, return_dict=True)
    return {k: float(v) for k, v in values.items()}


def evaluate_and_export(spec: ExperimentSpec, task_ref: TaskRef, final_dir: str, best_dir: str, arrays,
                        export_path: Optional[str]) -> dict:
    """Score final weights, reload the best with ``load_weights``, score again, export it.

    Args:
        spec: the run's spec.
        task_ref: the run's task.
        final_dir: the latest checkpoint's directory (final weights).
        best_dir: the best checkpoint's directory.
        arrays: the task's Arrays from the object store (None for an input-function task).
        export_path: where to save the best model (``.keras``; its SavedModel for serving goes
            beside it, see ``worker/export.py``); None to skip.
    """
    task = load(task_ref)
    params = task.parse_params(spec.task.params, spec.task.name)
    tf.keras.utils.set_random_seed(spec.seed)
    model = build_compiled_model(spec, task, params)
    dataset = test_dataset(task, params, arrays, EVAL_BATCH)
    model.load_weights(str(Path(final_dir) / WEIGHTS))
    final = _score(model, dataset)
    best_file = Path(best_dir) / BEST_WEIGHTS
    model.load_weights(str(best_file if best_file.exists() else Path(best_dir) / WEIGHTS))
    best = _score(model, dataset)
    examples = len(arrays.y_test) if arrays is not None else int(dataset.reduce(0, lambda n, b: n + tf.shape(b[1])[0]))
    out = {"test_examples": int(examples), "final_weights": final, "best_checkpoint_reloaded": best}
    if isinstance(export_path, RemotePath):
        out.update(_export_remote(model, export_path))
    elif export_path:
        # A model file is several writes: save under a temporary name, then rename.
        write_atomic(export_path, lambda tmp: _save(model, tmp))
        out["exported_model"] = str(export_path)
        out["saved_model"] = str(export_saved_model(model, serving_dir(export_path)))
    return out


def _export_remote(model: tf.keras.Model, export_path: RemotePath) -> dict:
    """Save both models locally, then upload: the ``.keras`` file as one object (whole or absent),
    the SavedModel with its ``saved_model.pb`` last (a reader finding it finds the variables)."""
    with scratch("export") as tmp:
        local = tmp / export_path.name
        write_atomic(local, lambda t: _save(model, t))
        saved = export_saved_model(model, serving_dir(local))
        export_path.upload(local)
        remote_saved = export_path.parent / str(saved.relative_to(tmp))
        remote_saved.rmtree()
        remote_saved.upload(saved, last=("saved_model.pb",))
    return {"exported_model": str(export_path), "saved_model": str(remote_saved)}


def _save(model: tf.keras.Model, tmp: Path) -> None:
    target = tmp.with_suffix(".keras")
    model.save(str(target))
    target.replace(tmp)
