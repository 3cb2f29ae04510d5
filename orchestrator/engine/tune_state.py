"""Tune's record of a search, kept restorable when the storage fills up.

Tune rewrites its experiment state (``experiment_state-<time>.json``, and its
search algorithm's ``*-state-<time>.json``) in place, copying it from the
driver's staging directory. On a storage that fills up, the last rewrite is cut
short and ``Tuner.restore`` cannot read it. :class:`KeepCompleteTuneState`
keeps a copy of each of these files whenever Tune has written it whole (to a
temporary name, then renamed: a copy is whole or absent); ``--resume`` puts
the copy back in place of a file that was cut (:func:`restore_cut_state`) and
says so. The trials lose nothing by the older record: each resumes from its
own newest complete checkpoint, and the summary reads their history from there.

    $ orchestrator tune --config s.yaml --storage /mnt/small --name s1
    error: cannot write /mnt/small/s1: no space left on device (ENOSPC); ...; free space, then resume with: ...
    $ orchestrator tune --config s.yaml --storage /mnt/small --name s1 --resume
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Optional

from ray.tune import Callback

from orchestrator.layout import RunLayout
from orchestrator.results import write_atomic

_PATTERNS = ("experiment_state-*.json", "*-state-*.json", "*-state-*.pkl")


def _state_files(run_dir: Path) -> list[Path]:
    return sorted({p for pattern in _PATTERNS for p in run_dir.glob(pattern) if p.is_file()})


def _whole(data: bytes, name: str) -> bool:
    try:
        json.loads(data) if name.endswith(".json") else pickle.loads(data)
        return True
    except Exception:  # a cut pickle or JSON raises almost anything
        return False


class KeepCompleteTuneState(Callback):
    """A Tune callback in the driver: a whole copy of each of Tune's state files, renewed as Tune rewrites them.

    Args:
        run_dir: the search's directory on a local (or mounted) filesystem.
    """

    def __init__(self, run_dir: str):
        self.run_dir = run_dir
        self._copied: dict[str, tuple[int, int]] = {}

    def on_step_end(self, iteration, trials, **info):
        self.copy_whole_files()

    def on_experiment_end(self, trials, **info):
        self.copy_whole_files()

    def copy_whole_files(self) -> None:
        run_dir = Path(self.run_dir)
        for path in _state_files(run_dir):
            try:
                stat = path.stat()
                if self._copied.get(path.name) == (stat.st_mtime_ns, stat.st_size):
                    continue
                data = path.read_bytes()
                if not _whole(data, path.name):
                    continue  # being written, or cut: the copy stays as it was
                write_atomic(RunLayout(run_dir).tune_state_copy(path.name), lambda tmp: tmp.write_bytes(data))
                self._copied[path.name] = (stat.st_mtime_ns, stat.st_size)
            except OSError:
                continue  # a full disk cannot take the copy either: the previous one is kept


def restore_cut_state(run_dir: Path) -> Optional[str]:
    """Put back the whole copy of each of Tune's state files that was cut; what was done, for the user, or None."""
    restored = []
    for path in _state_files(run_dir):
        copy = RunLayout(run_dir).tune_state_copy(path.name)
        if _whole(path.read_bytes(), path.name) or not copy.is_file():
            continue
        data = copy.read_bytes()
        if _whole(data, path.name):
            write_atomic(path, lambda tmp: tmp.write_bytes(data))
            restored.append(path.name)
    if not restored:
        return None
    return (f"Tune's {', '.join(restored)} had been cut short (a full disk?): put back its last complete "
            "copy; every trial resumes from its own newest complete checkpoint")
