"""Recognise a full or read-only storage in whatever error it surfaced as (no Ray, no TensorFlow).

A full disk reaches the driver in many shapes: an ``OSError`` from a result
file the driver writes, a pyarrow ``IOError`` from a worker persisting a
checkpoint, h5py's "file write failed ... errno = 28", TensorFlow's
``ResourceExhaustedError: Could not initialize events writer`` (no errno at
all), each wrapped in Ray's worker-group and task errors. Retrying cannot free
a disk, so Ray Train's retries are cut short (:class:`StopOnStorageFailure`)
and the user gets one line naming the path, the cause and how to resume.
"""

from __future__ import annotations

import errno
import os
import re
from pathlib import Path
from typing import Optional

NO_SPACE = "no space left on device"
READ_ONLY = "read-only file system"
_ERRNO_CAUSE = {errno.ENOSPC: NO_SPACE, errno.EDQUOT: "disk quota exceeded", errno.EROFS: READ_ONLY}
_TEXT_CAUSE = [
    (re.compile(r"no space left on device|errno\s*[=:]?\s*28\b|\[errno 28\]|enospc", re.I), NO_SPACE),
    (re.compile(r"disk quota exceeded|\[errno 122\]|edquot", re.I), "disk quota exceeded"),
    (re.compile(r"read-only file system|errno\s*[=:]?\s*30\b|\[errno 30\]|erofs", re.I), READ_ONLY),
]
# After an error, a filesystem with less than this free is taken for the cause even
# when the error itself does not say (TensorFlow's events writer does not).
NEARLY_FULL_BYTES = 4 * 1024 * 1024


def _chain(exc: BaseException):
    seen = set()
    stack = [exc]
    while stack:
        e = stack.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        stack += [e.__cause__, e.__context__]
        stack += list(getattr(e, "worker_failures", {}).values())  # Ray Train's WorkerGroupError
        stack.append(getattr(e, "controller_failure", None))      # Ray Train's ControllerError
        stack.append(getattr(e, "cause", None) if isinstance(getattr(e, "cause", None), BaseException) else None)


def filesystem_state(path: Optional[str | Path]) -> Optional[str]:
    """NO_SPACE or READ_ONLY if the local filesystem holding ``path`` is full or read-only now (None for a URI)."""
    if not path or not isinstance(path, (str, os.PathLike)) or "://" in str(path):
        return None
    probe = Path(path)
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        stats = os.statvfs(probe)
    except OSError:
        return None
    if stats.f_flag & os.ST_RDONLY:
        return READ_ONLY
    if stats.f_bavail * stats.f_frsize < NEARLY_FULL_BYTES:
        return NO_SPACE
    return None


def raise_if_full_or_read_only(path: Optional[str | Path]) -> None:
    """An ``OSError`` (ENOSPC / EROFS) naming ``path`` if its filesystem is full or read-only now."""
    cause = filesystem_state(path)
    if cause is not None:
        code = {NO_SPACE: errno.ENOSPC, READ_ONLY: errno.EROFS}[cause]
        raise OSError(code, cause, str(path))


def storage_cause(exc: BaseException, path: Optional[str | Path] = None) -> Optional[str]:
    """Why ``exc`` happened if storage is the cause (e.g. ``"no space left on device"``), else None."""
    text = []
    for e in _chain(exc):
        if isinstance(e, OSError) and e.errno in _ERRNO_CAUSE:
            return _ERRNO_CAUSE[e.errno]
        text.append(str(e))
    joined = "\n".join(text)
    for pattern, cause in _TEXT_CAUSE:
        if pattern.search(joined):
            return cause
    if "ResourceExhaustedError" in joined or "Could not initialize events writer" in joined \
            or "Input/output error" in joined or isinstance(exc, OSError):
        return filesystem_state(path)
    return filesystem_state(path) if path is not None and re.search(r"write|save|persist|upload|copy", joined, re.I) \
        else None


def file_named(exc: BaseException, under: str | Path) -> Optional[str]:
    """The first path under ``under`` that the error mentions (the file that did not fit), or what was written."""
    root = re.escape(str(under).rstrip("/"))
    texts = []
    for e in _chain(exc):
        filename = getattr(e, "filename", None)
        if isinstance(filename, str) and filename.startswith(str(under)):
            return filename
        match = re.search(rf"({root}/[^\s'\",:)]+)", str(e))
        if match:
            return match.group(1)
        texts.append(str(e))
    joined = "\n".join(texts)
    if "copy_files" in joined or "persist" in joined:  # Ray Train copying a reported checkpoint
        return f"{under} (persisting a checkpoint)"
    if "events writer" in joined:
        return f"{under}/tensorboard"
    return None


def make_failure_policy(failure_config, storage_path: str):
    """Ray Train's default failure policy, except that a full or read-only storage is never retried."""
    from ray.train.v2._internal.execution.failure_handling import DefaultFailurePolicy
    from ray.train.v2._internal.execution.failure_handling.failure_policy import FailureDecision

    class StopOnStorageFailure(DefaultFailurePolicy):
        def make_decision(self, training_failed_error):
            cause = storage_cause(training_failed_error, storage_path)
            if cause:
                self._log_decision(FailureDecision.RAISE, training_failed_error, 1, 0)
                return FailureDecision.RAISE
            return super().make_decision(training_failed_error)

    return StopOnStorageFailure(failure_config)


def trainer_class(base: type, storage_path: str) -> type:
    """``base`` (Ray Train's DataParallelTrainer) with :func:`make_failure_policy` in place of the default."""

    class StorageAwareTrainer(base):
        def _initialize_and_run_controller(self, **controller_init_kwargs):
            controller_init_kwargs["failure_policy"] = make_failure_policy(self.run_config.failure_config,
                                                                           storage_path)
            return super()._initialize_and_run_controller(**controller_init_kwargs)

    return StorageAwareTrainer
