"""Where every result of a run and of a search lies: one object, :class:`RunLayout`.

No other module joins the names of result files; each asks the layout of its
run or search directory (``<storage>/<name>``) for the path it needs. The root
is a :class:`pathlib.Path` (a local, NFS or EFS directory) or a
:class:`orchestrator.storage.RemotePath` (object storage); every path the
layout gives is of the root's type, so one code path serves both. Nothing here
touches the filesystem, imports Ray or TensorFlow.

A training run (``orchestrator train --name run1``)::

    <storage>/run1/
        result.json                        the run's record, written when it finishes (engine/train.py)
        best_model.keras                   the best checkpoint's model (worker/evaluate.py)
        saved_model/1/                     the same model for TF Serving (worker/export.py)
        tensorboard/                       TensorBoard events: Keras's train/, validation/ (worker/callbacks/)
        workers.json                       which node and device ran each worker (engine/roster.py)
        task_error.txt                     the workers' verdict that the task cannot train, until read
        .owner.lock, .owner.json           the live command that owns the name (ownership.py)
        checkpoint_<time>/                 Ray Train's checkpoints: state.json, weights, ... (checkpoint_files.py)
        checkpoint_manager_snapshot.json   Ray Train's record of them

A search (``orchestrator tune --name search1``)::

    <storage>/search1/
        summary.json, summary.csv          the search's record and its trials' table, when it finishes
        curves.png                         each trial's validation curve
        best_model.keras, saved_model/1/   the best trial's model
        best_schedule.yaml                 the best trial's learning-rate schedule, as a config to reuse
        top_models/<rank>-<trial_id>/      the k best trials' models: best_model.keras, saved_model/1/, trial.json
        tensorboard/<trial label>/         one TensorBoard run per trial (HParams at the top)
        stop_at.json                       the trial that reached search.stop_at, and when
        trial_clock.jsonl                  when Tune started each trial, on the driver's clock
        trials/<trial_id>/                 each trial's Ray Train run, laid out as a run above
                                           (a PBT member: one run per start, <trial_id>, <trial_id>.1, ...)
        tuner.pkl, experiment_state-*.json, *-state-*.json|pkl
                                           Tune's own state, for --resume
        .tune_state_complete/              a whole copy of each of Tune's state files (engine/tune_state.py)
        .owner.lock, .owner.json           as for a run

Ray's own file names (``checkpoint_*``, ``checkpoint_manager_snapshot.json``,
``experiment_state-*.json``, ``tuner.pkl``'s neighbours) are Ray's layout: they
stay named where that layout is read (integrity.py, api.py, engine/tune_state.py);
the files inside a checkpoint are named in checkpoint_files.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Union

from orchestrator.storage import RemotePath

Root = Union[Path, RemotePath]

# A run's files (and a search's, which has the same model exports).
RESULT_FILE = "result.json"
EXPORT_FILE = "best_model.keras"
SAVED_MODEL_DIR = "saved_model"
SERVING_VERSION = "1"
TENSORBOARD_DIR = "tensorboard"
ROSTER_FILE = "workers.json"
TASK_ERROR_FILE = "task_error.txt"
# A search's files.
SUMMARY_JSON = "summary.json"
SUMMARY_CSV = "summary.csv"
CURVES_PNG = "curves.png"
BEST_SCHEDULE = "best_schedule.yaml"
TRIALS_DIR = "trials"
TOP_MODELS_DIR = "top_models"
TOP_MODEL_FILE = "trial.json"
STOP_AT_FILE = "stop_at.json"
CLOCK_FILE = "trial_clock.jsonl"
TUNE_STATE_COPIES_DIR = ".tune_state_complete"
TUNER_PKL = "tuner.pkl"  # Tune's; its presence marks a search directory


def _under_root(name: str, doc: str = "") -> property:
    """A read-only attribute: ``root / name``."""
    return property(lambda self: self.root / name, doc=doc or f"``<root>/{name}``")


@dataclass(frozen=True)
class RunLayout:
    """The paths under one run or search directory, of the root's type.

    Args:
        root: ``<storage>/<name>``, a ``Path`` or a ``RemotePath``.
    """

    root: Root

    @classmethod
    def at(cls, storage: Root, name: str) -> "RunLayout":
        """The layout of run or search ``name`` under the storage root ``storage``."""
        return cls(storage / name)

    # -- a run ---------------------------------------------------------------
    result = _under_root(RESULT_FILE)
    export = _under_root(EXPORT_FILE, "The best model as a Keras file.")

    @property
    def saved_model(self) -> Root:
        """The TF Serving model of :attr:`export`: ``saved_model/1`` beside it."""
        return serving_dir(self.export)

    tensorboard = _under_root(TENSORBOARD_DIR)

    def tensorboard_run(self, label: str) -> Root:
        """One trial's (a PBT member's) TensorBoard run in a search."""
        return self.tensorboard / label

    roster = _under_root(ROSTER_FILE)
    task_error = _under_root(TASK_ERROR_FILE)

    def checkpoint(self, dir_name: str) -> Root:
        """One of Ray Train's checkpoint directories, by the name Ray gave it."""
        return self.root / dir_name

    def staging(self, dir_name: str) -> Root:
        """Where a checkpoint directory is assembled before it is renamed to :meth:`checkpoint`."""
        return self.root / f".staging-{dir_name}"

    def finished(self, what: str) -> Root:
        """The file whose presence says a ``"run"`` (result.json) or ``"search"`` (summary.json) finished."""
        return self.summary_json if what == "search" else self.result

    # -- a search ------------------------------------------------------------
    summary_json = _under_root(SUMMARY_JSON)
    summary_csv = _under_root(SUMMARY_CSV)
    curves = _under_root(CURVES_PNG)
    best_schedule = _under_root(BEST_SCHEDULE)
    trials = _under_root(TRIALS_DIR)

    def trial(self, trial_id: str) -> "RunLayout":
        """One trial's Ray Train run (a PBT member's segment), laid out as a run."""
        return RunLayout(self.trials / trial_id)

    top_models = _under_root(TOP_MODELS_DIR)

    def top_model(self, rank: int, trial_id: str) -> "RunLayout":
        """The ``rank``-th best trial's exports: its ``export``, ``saved_model`` and ``top_model_entry``."""
        return RunLayout(self.top_models / f"{rank}-{trial_id}")

    top_model_entry = _under_root(TOP_MODEL_FILE, "In a :meth:`top_model` directory: the trial's entry.")
    stop_at = _under_root(STOP_AT_FILE)
    trial_clock = _under_root(CLOCK_FILE)
    tune_state_copies = _under_root(TUNE_STATE_COPIES_DIR)

    def tune_state_copy(self, file_name: str) -> Root:
        """The whole copy of one of Tune's state files."""
        return self.tune_state_copies / file_name

    tuner_pkl = _under_root(TUNER_PKL)


def serving_dir(keras_path: Union[str, Root]) -> Root:
    """Where the SavedModel of the model saved at ``keras_path`` goes: ``<dir>/saved_model/1``."""
    path = Path(keras_path) if isinstance(keras_path, str) else keras_path
    return path.parent / SAVED_MODEL_DIR / SERVING_VERSION
