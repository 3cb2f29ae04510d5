"""Tasks: what is trained (a Keras model, its loss and metrics, its data, its parameters).

:class:`Task` is the interface, :class:`Arrays` the in-memory data path,
:func:`load` / :func:`reference` find a task by name. Built-ins live in
:mod:`orchestrator.tasks.mnist`; a user task is a file or a module of the user's.
Nothing here imports TensorFlow or Ray.
"""

from orchestrator.tasks.registry import BUILTIN, DEFAULT_TASK, Resolved, TaskRef, load, reference, resolve
from orchestrator.tasks.task import SPLITS, Arrays, Task

__all__ = ["Arrays", "BUILTIN", "DEFAULT_TASK", "Resolved", "SPLITS", "Task", "TaskRef", "load", "reference",
           "resolve"]
