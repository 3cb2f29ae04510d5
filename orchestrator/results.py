"""Atomic result files: a reader (or a kill) sees the old file or the new one, never half.

Every output a user reads (``result.json``, ``summary.json``, ``summary.csv``,
exported models) is written to a temporary name in the same directory, flushed
to disk, and renamed over the target: ``os.replace`` is atomic on POSIX.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterable

# The layout of result.json and summary.json (fields documented in the README).
# Raised when a field is renamed, removed or changes meaning; adding a field keeps it.
FORMAT_VERSION = 1


def _jsonable(value: Any) -> Any:
    """NaN and inf are not JSON: write them as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def write_atomic(path, write: Callable[[Path], None]):
    """Call ``write(tmp_path)``, then rename ``tmp_path`` over ``path``.

    On object storage (``path`` a ``storage.RemotePath``) the temporary file is
    local and is uploaded as one object, which appears whole or not at all.
    """
    from orchestrator.storage import RemotePath

    if isinstance(path, RemotePath):
        with tempfile.TemporaryDirectory(prefix="orchestrator-upload-") as tmp:
            local = Path(tmp) / path.name
            write(local)
            path.upload(local)
        return path
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_text_atomic(path, text: str):
    return write_atomic(path, lambda tmp: tmp.write_text(text))


def write_json_atomic(path, data: Any):
    return write_text_atomic(path, json.dumps(_jsonable(data), indent=2, sort_keys=False) + "\n")


def write_csv_atomic(path, rows: Iterable[dict], columns: list[str]):
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if v is None else v) for k, v in row.items()})
    return write_text_atomic(path, buffer.getvalue())


def read_json(path) -> Any:
    from orchestrator.storage import RemotePath

    return json.loads((path if isinstance(path, RemotePath) else Path(path)).read_text())
