"""Finding a task by the name a user gives: a built-in, ``package.module:attr`` or ``path/file.py:attr``.

    orchestrator train                               # the default: mnist_mlp
    orchestrator train --task mnist_cnn              # another built-in
    orchestrator train --task mypkg.tasks:fashion    # importable on every node (installed, or in --working-dir)
    orchestrator train --task my_task.py:task        # a file, relative to the working directory

The driver turns the name into a :class:`TaskRef`, which is what travels to
the workers: for a file it carries the file's text, so a worker on a node
without the file (no shared filesystem, no ``--working-dir``) still loads the
same task. Pure Python: importing a built-in task imports no TensorFlow.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from orchestrator.errors import UserError
from orchestrator.process import use_tf_keras
from orchestrator.tasks.task import Task

BUILTIN = {
    "mnist_mlp": "orchestrator.tasks.mnist:mlp",
    "mnist_cnn": "orchestrator.tasks.mnist:cnn",
}
DEFAULT_TASK = "mnist_mlp"


@dataclass(frozen=True)
class TaskRef:
    """A task as the workers receive it: the user's name, and a file task's absolute path and text."""

    name: str
    path: Optional[str] = None
    source: Optional[str] = None


def _is_file(name: str) -> bool:
    target = name.rsplit(":", 1)[0]
    return target.endswith(".py") or "/" in target or os.sep in target


def reference(name: str) -> TaskRef:
    """Resolve ``name`` on the driver (files relative to the working directory); UserError if it is unusable."""
    if _is_file(name):
        file, attr = _split(name)
        path = Path(file).expanduser().resolve()
        if not path.is_file():
            raise UserError(f"task {name}: file not found: {path}")
        ref = TaskRef(name=name, path=str(path), source=path.read_text())
    else:
        ref = TaskRef(name=name)
    load(ref)  # import it now, so a bad task fails before anything starts
    return ref


def _split(name: str) -> tuple[str, str]:
    target, sep, attr = name.rpartition(":")
    if not sep or not target or not attr:
        example = "my_task.py:task" if _is_file(name) else "mypkg.tasks:task"
        raise UserError(f"task {name!r}: give a built-in ({', '.join(BUILTIN)}) or `module:attribute` "
                        f"(valid example: `{example}`)")
    return target, attr


_LOADED: dict[TaskRef, Task] = {}


def load(ref: TaskRef | str) -> Task:
    """The :class:`Task` a reference names (cached per process); UserError naming what is wrong."""
    if isinstance(ref, str):
        ref = TaskRef(name=ref)
    if ref in _LOADED:
        return _LOADED[ref]
    # A task module may import TensorFlow at its top: it must get tf-keras (Keras 3
    # fails under MultiWorkerMirroredStrategy), whichever process imports it first.
    use_tf_keras()
    name = BUILTIN.get(ref.name, ref.name)
    if ":" not in name and not _is_file(name):
        raise UserError(f"task {ref.name!r}: no such built-in task; built-ins: {', '.join(BUILTIN)}; "
                        "or give `package.module:attr` or `path/file.py:attr`")
    target, attr = _split(name)
    module = _import_file(ref, target) if ref.path or _is_file(name) else _import_module(ref.name, target)
    if not hasattr(module, attr):
        raise UserError(f"task {ref.name}: {target} has no attribute {attr!r}")
    task = getattr(module, attr)
    if not isinstance(task, Task):
        raise UserError(f"task {ref.name}: {attr} is a {type(task).__name__}, not an orchestrator.tasks.Task")
    _LOADED[ref] = task
    return task


def _import_module(name: str, module: str):
    try:
        return importlib.import_module(module)
    except Exception as exc:  # the user's module may raise anything while importing
        raise UserError(f"task {name}: cannot import {module}: {type(exc).__name__}: {exc}") from None


def _import_file(ref: TaskRef, target: str):
    path = Path(ref.path or Path(target).resolve())
    if not path.is_file():
        if ref.source is None:
            raise UserError(f"task {ref.name}: file not found: {path}")
        # A node without the file: load the text the driver read.
        copy = Path(tempfile.gettempdir()) / "orchestrator-tasks" / hashlib.sha1(ref.source.encode()).hexdigest()
        copy.mkdir(parents=True, exist_ok=True)
        path = copy / Path(target).name
        if not path.exists():
            path.write_text(ref.source)
    module_name = f"orchestrator_user_task_{path.stem}_{hashlib.sha1(str(path).encode()).hexdigest()[:8]}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    # Siblings of the task file (its helpers) import as they would in a script.
    if str(path.parent) not in sys.path:
        sys.path.insert(0, str(path.parent))
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[module_name]
        raise UserError(f"task {ref.name}: importing {path} failed: {type(exc).__name__}: {exc}") from None
    return module


@dataclass(frozen=True)
class Resolved:
    """A spec's task, found and its parameters validated (on the driver, before anything starts)."""

    ref: TaskRef
    task: Task
    params: object


def resolve(task_spec) -> Resolved:
    """``spec.task`` -> the task and its validated parameters; one-line UserError otherwise."""
    ref = reference(task_spec.name)
    task = load(ref)
    return Resolved(ref, task, task.parse_params(task_spec.params, task_spec.name))
