"""What a reported checkpoint directory holds (names shared by workers and driver, no TF here)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

WEIGHTS = "weights.h5"            # this epoch's weights, for model.load_weights
BEST_WEIGHTS = "best.weights.h5"  # best weights so far (ModelCheckpoint's file)
TRAIN_STATE = "train_state"       # TF checkpoint of model + optimizer, for resuming
STATE = "state.json"              # epoch, history, early-stopping and best-so-far state
FILES = "files"                   # state.json's manifest: {relative path: size} of every other file
REPORT = "report"                 # state.json's copy of the metrics reported to Ray with it


def manifest(directory: str | Path) -> dict[str, int]:
    """{relative path: size} of every file under ``directory`` but state.json, for :func:`complete_state`."""
    directory = Path(directory)
    return {str(p.relative_to(directory)): p.stat().st_size
            for p in sorted(directory.rglob("*")) if p.is_file() and p.name != STATE}


def complete_state(directory: str | Path) -> Optional[dict]:
    """The checkpoint's state.json if every file its manifest lists is there at its full size, else None.

    Ray uploads a checkpoint's files in no guaranteed order, so a state.json on
    storage alone does not prove the upload finished; the manifest does. A
    checkpoint written before manifests existed counts as incomplete here.
    """
    directory = _as_path(directory)
    try:
        state = json.loads((directory / STATE).read_text())
        files = state[FILES]
        int(state["epoch"])
        for name, size in files.items():
            if (directory / name).stat().st_size != size:
                return None
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    return state


def _as_path(directory):
    """A ``storage.RemotePath`` (object storage) as is; anything else as a local ``Path``."""
    return directory if hasattr(directory, "fs") else Path(directory)


def newest_complete_checkpoint(run_dir) -> Optional[tuple[Path, dict]]:
    """(directory, state) of the run's complete checkpoint of the highest epoch, or None.

    Looks at every ``checkpoint_*`` directory on storage, registered by Ray
    Train or not: a report whose upload finished but that Train's controller
    never collected (the worker or driver died first) leaves such a checkpoint.
    Ties go to the newest directory name (Train names them by time).
    """
    best = None
    for directory in sorted(_as_path(run_dir).glob("checkpoint_*")):
        state = complete_state(directory)
        if state is not None and (best is None or int(state["epoch"]) >= int(best[1]["epoch"])):
            best = (directory, state)
    return best
