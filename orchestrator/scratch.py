"""Scratch directories in a node's temp dir that do not outlive their process, even a killed one.

Ray kills a worker rather than asking it to stop: when Tune stops a trial (ASHA,
``stop_at``, a PBT pause on the Ray Train path) or Ray Train tears down a worker
group, the worker's ``finally`` blocks and ``tempfile.TemporaryDirectory``
clean-ups never run. A plain ``mkdtemp`` would leave the best weights and the
checkpoint being reported of every such trial behind, and a long search fills
the node's disk with them. So each directory's name carries its process id
(and its pid namespace, as containers may share a temp dir), and the first one
a process makes removes those whose process is gone::

    $ ls /tmp | grep orchestrator-
    orchestrator-best-4026531836.31299-k2j4x0qa   # the live worker 31299's best weights
    orchestrator-ckpt-4026531836.31299-8d1s9w_e   # ... and the checkpoint it is reporting

Only this module's names (``orchestrator-<kind>-<namespace>.<pid>-...``) of the
sweeping process's own pid namespace are ever removed.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Iterator, Optional

_NAME = re.compile(r"^orchestrator-[a-z]+-(\d+)\.(\d+)-")
_swept_by: Optional[int] = None  # the process that swept (a forked child has another pid and sweeps again)


def _pid_namespace() -> int:
    try:
        return int(re.sub(r"\D", "", os.readlink("/proc/self/ns/pid")) or 0)
    except OSError:  # no /proc (macOS): one namespace
        return 0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def sweep(root: str | None = None) -> list[Path]:
    """Remove the scratch directories of processes that are gone; returns what was removed.

    Args:
        root: the temp dir to sweep (default: ``tempfile.gettempdir()``).
    """
    removed, namespace = [], _pid_namespace()
    root_path = Path(root or tempfile.gettempdir())
    with os.scandir(root_path) as entries:
        for entry in entries:
            match = _NAME.match(entry.name)
            if not match or int(match.group(1)) != namespace:
                continue
            pid = int(match.group(2))
            if pid != os.getpid() and entry.is_dir(follow_symlinks=False) and not _alive(pid):
                shutil.rmtree(entry.path, ignore_errors=True)
                removed.append(root_path / entry.name)
    return removed


def scratch_dir(kind: str) -> Path:
    """A new directory ``<tempdir>/orchestrator-<kind>-<namespace>.<pid>-XXXXXXXX``; the caller removes it.

    Args:
        kind: a lowercase word saying what it holds (``best``, ``ckpt``, ``tb``).
    """
    if not re.fullmatch(r"[a-z]+", kind):
        raise ValueError(f"scratch kind must be lowercase letters, got {kind!r}")
    global _swept_by
    if _swept_by != os.getpid():
        _swept_by = os.getpid()
        sweep()
    return Path(tempfile.mkdtemp(prefix=f"orchestrator-{kind}-{_pid_namespace()}.{os.getpid()}-"))


@contextlib.contextmanager
def scratch(kind: str) -> Iterator[Path]:
    """:func:`scratch_dir` as a context manager that removes it on the way out."""
    path = scratch_dir(kind)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
