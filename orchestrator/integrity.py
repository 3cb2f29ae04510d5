"""Cheap checks that the files a command is about to read are whole (no Ray, no TensorFlow).

Result files are written atomically, so a torn one means damage from outside
(a disk that filled, a copy cut short, a hand edit). Each check raises
:class:`CorruptFile` naming the file and what is wrong with it; callers turn it
into one line for the user, or fall back to an older complete checkpoint.

Weights files are HDF5: checked with h5py (which does not import TensorFlow),
opening the file and walking its tree reads every object header, which a
truncated file fails.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

from orchestrator.checkpoint_files import BEST_WEIGHTS, STATE, TRAIN_STATE, WEIGHTS
from orchestrator.layout import RunLayout

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


class CorruptFile(Exception):
    def __init__(self, path: Path, problem: str):
        self.path, self.problem = (path if hasattr(path, "fs") else Path(path)), problem
        super().__init__(f"{path}: {problem}")


def read_json_file(path: Path) -> Any:
    try:
        return json.loads((path if hasattr(path, "fs") else Path(path)).read_text())  # fs: on object storage
    except FileNotFoundError:
        raise CorruptFile(path, "missing") from None
    except UnicodeDecodeError:
        raise CorruptFile(path, "not text") from None
    except ValueError as exc:
        raise CorruptFile(path, f"not valid JSON (cut short?): {exc}") from None
    except OSError as exc:
        raise CorruptFile(path, f"unreadable: {exc.strerror or exc}") from None


def check_h5(path: Path) -> None:
    path = Path(path)
    try:
        with open(path, "rb") as f:
            head = f.read(len(HDF5_SIGNATURE))
    except FileNotFoundError:
        raise CorruptFile(path, "missing") from None
    except OSError as exc:
        raise CorruptFile(path, f"unreadable: {exc.strerror or exc}") from None
    if head != HDF5_SIGNATURE:
        raise CorruptFile(path, "not an HDF5 file")
    import h5py

    try:
        with h5py.File(path, "r") as h5:
            h5.visititems(lambda name, obj: obj.shape if isinstance(obj, h5py.Dataset) else None)
    except Exception as exc:  # h5py raises OSError, KeyError, RuntimeError... for damaged files
        raise CorruptFile(path, f"truncated or damaged HDF5 ({type(exc).__name__})") from None


def check_state(path: Path) -> dict:
    """``state.json`` of a checkpoint: the types the worker's resume relies on."""
    state = read_json_file(path)
    if not isinstance(state, dict):
        raise CorruptFile(path, f"expected an object, got {type(state).__name__}")
    epoch = state.get("epoch")
    if not isinstance(epoch, int) or isinstance(epoch, bool) or epoch < 0:
        raise CorruptFile(path, f"'epoch' must be a whole number >= 0, got {epoch!r}")
    history = state.get("history")
    if not isinstance(history, list) or not all(isinstance(h, dict) for h in history):
        raise CorruptFile(path, f"'history' must be a list of per-epoch objects, got {type(history).__name__}")
    epochs = [h.get("epoch") for h in history]
    if epochs != list(range(1, epoch + 1)):
        raise CorruptFile(path, f"'history' holds epochs {epochs}, expected 1..{epoch}")
    for key in ("best_value",):
        if state.get(key) is not None and not isinstance(state[key], (int, float)):
            raise CorruptFile(path, f"{key!r} must be a number, got {state[key]!r}")
    if state.get("stop_reason") is not None and not isinstance(state["stop_reason"], str):
        raise CorruptFile(path, f"'stop_reason' must be text, got {state['stop_reason']!r}")
    if state.get("early_stopping") is not None and not isinstance(state["early_stopping"], dict):
        raise CorruptFile(path, f"'early_stopping' must be an object, got {state['early_stopping']!r}")
    return state


def check_checkpoint(directory: Path) -> dict:
    """Everything a resume loads from one checkpoint directory; returns its state."""
    directory = Path(directory)
    if not directory.is_dir():
        raise CorruptFile(directory, "missing")
    state = check_state(directory / STATE)
    check_h5(directory / WEIGHTS)
    if (directory / BEST_WEIGHTS).exists():
        check_h5(directory / BEST_WEIGHTS)
    train_state = directory / TRAIN_STATE
    if not train_state.is_dir() or not any(p.name.endswith(".index") for p in train_state.iterdir()):
        raise CorruptFile(train_state, "missing its TensorFlow checkpoint index")
    for data in train_state.glob("*.data-*"):
        if data.stat().st_size == 0:
            raise CorruptFile(data, "empty")
    return state


SNAPSHOT = "checkpoint_manager_snapshot.json"  # Ray Train's record of a run's checkpoints


def _epoch_of(entry: dict) -> int:
    try:
        return int((entry.get("metrics") or {}).get("epoch") or 0)
    except (TypeError, ValueError):
        return 0


def resume_point(run_dir: Path) -> Optional[str]:
    """Check the checkpoint a resume of ``run_dir`` would load; returns a note if it fell back.

    A damaged latest checkpoint is set aside (renamed ``corrupt-<name>``) and
    Ray Train's snapshot is pointed at the newest complete one still listed,
    so the resume redoes the epochs since then; with none left, the damaged
    file is raised as :class:`CorruptFile`.
    """
    from orchestrator.results import write_json_atomic

    run_dir = Path(run_dir)
    snapshot_path = run_dir / SNAPSHOT
    if not snapshot_path.exists():
        return None  # interrupted before the first checkpoint: a resume starts from epoch 1
    try:
        snapshot = read_json_file(snapshot_path)
    except CorruptFile as damage:
        # Ray Train rewrites its record in place: a full disk leaves it empty. The
        # checkpoints themselves say what they hold; rebuild the record from them.
        rebuilt = _snapshot_from_checkpoints(run_dir)
        if rebuilt is None:
            raise
        write_json_atomic(snapshot_path, rebuilt)
        latest = rebuilt["latest_checkpoint_result"]
        return (f"{damage.path}: {damage.problem}; rebuilt it from the complete checkpoints on disk, "
                f"resuming from {latest['checkpoint_dir_name']} (epoch {_epoch_of(latest)})")
    try:
        latest = snapshot["latest_checkpoint_result"]
        latest_name = latest["checkpoint_dir_name"] if latest else None
        results = list(snapshot.get("checkpoint_results") or [])
        names = [r["checkpoint_dir_name"] for r in results]
    except (KeyError, TypeError) as exc:
        raise CorruptFile(snapshot_path, f"not Ray Train's checkpoint record ({type(exc).__name__}: {exc})") from None
    if latest_name is None:
        return None
    try:
        check_checkpoint(run_dir / latest_name)
        return None
    except CorruptFile as damage:
        bad = damage
    for entry in sorted((r for r in results if r["checkpoint_dir_name"] != latest_name),
                        key=_epoch_of, reverse=True):
        try:
            check_checkpoint(run_dir / entry["checkpoint_dir_name"])
        except CorruptFile:
            continue
        keep = [i for i, n in enumerate(names) if n != latest_name]
        snapshot["latest_checkpoint_result"] = entry
        snapshot["checkpoint_results"] = [results[i] for i in keep]
        indices = snapshot.get("checkpoint_report_indices")
        if isinstance(indices, list) and len(indices) == len(results):
            snapshot["checkpoint_report_indices"] = [indices[i] for i in keep]
        if (run_dir / latest_name).exists():
            (run_dir / latest_name).rename(run_dir / f"corrupt-{latest_name}")
        write_json_atomic(snapshot_path, snapshot)
        return (f"{bad.path}: {bad.problem}; resuming from the previous complete checkpoint "
                f"{entry['checkpoint_dir_name']} (epoch {_epoch_of(entry)}), the damaged one is kept "
                f"as corrupt-{latest_name}")
    raise bad


def check_tune_state(run_dir: Path) -> None:
    """What ``Tuner.restore`` reads: ``tuner.pkl`` and the newest ``experiment_state-*.json``."""
    import pickle

    run_dir = Path(run_dir)
    tuner_pkl = RunLayout(run_dir).tuner_pkl
    if not tuner_pkl.is_file():
        raise CorruptFile(tuner_pkl, "missing (Tune's record of the search)")
    try:
        with open(tuner_pkl, "rb") as f:
            pickle.load(f)
    except Exception as exc:  # unpickling damaged bytes raises almost anything
        raise CorruptFile(tuner_pkl, f"unreadable ({type(exc).__name__})") from None
    states = sorted(run_dir.glob("experiment_state-*.json"))
    if not states:
        raise CorruptFile(run_dir / "experiment_state-<time>.json", "missing (Tune's record of the trials)")
    state = read_json_file(states[-1])
    if not isinstance(state, dict) or not isinstance(state.get("trial_data"), list):
        raise CorruptFile(states[-1], "holds no trial records ('trial_data')")


def _snapshot_from_checkpoints(run_dir: Path) -> Optional[dict]:
    """Ray Train's checkpoint record (format of Ray 2.60) for the complete checkpoints in ``run_dir``."""
    from importlib.metadata import version

    entries = []
    for directory in sorted(run_dir.glob("checkpoint_*")):
        try:
            state = check_checkpoint(directory)
        except CorruptFile:
            continue
        if not state["history"]:
            continue
        metrics = {**state["history"][-1], "stop_reason": state.get("stop_reason")}
        entries.append({"version": 0, "checkpoint_dir_name": directory.name, "metrics": metrics})
    # A checkpoint whose copy was cut short by the disk can pass the checks above
    # (whole weights.h5 and state.json, a TF data file cut mid-way): every
    # checkpoint of one run holds the same variables, so a smaller one is cut.
    sizes = {e["checkpoint_dir_name"]: sum(p.stat().st_size for p in
                                           (run_dir / e["checkpoint_dir_name"] / TRAIN_STATE).glob("*.data-*"))
             for e in entries}
    entries = [e for e in entries if sizes[e["checkpoint_dir_name"]] == max(sizes.values(), default=0)]
    if not entries:
        return None
    entries.sort(key=_epoch_of)
    return {
        "ray_version": version("ray"),
        "checkpoint_results": entries,
        "checkpoint_report_indices": [_epoch_of(e) for e in entries],
        "latest_checkpoint_result": entries[-1],
        "pending_training_results": [],
        "pending_validation_specs": [],
        "current_report_index": _epoch_of(entries[-1]) + 1,
        "validated_checkpoint_dir_names": [],
        "timed_out_validation_checkpoint_dir_names": [],
        "failed_validation_checkpoint_dir_names": [],
    }
