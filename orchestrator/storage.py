"""Where results go: a local directory, or any filesystem Ray Train accepts (``s3://``, ``gs://``, ...).

    $ orchestrator train --storage s3://my-bucket/orchestrator --name run1
    $ orchestrator show run1 --storage s3://my-bucket/orchestrator

This module owns the question. :func:`location` turns ``--storage`` into
either a :class:`pathlib.Path` (a local or NFS/EFS path, as before) or a
:class:`RemotePath` on a pyarrow filesystem built by
``pyarrow.fs.FileSystem.from_uri`` — what Ray Train's ``RunConfig`` does with
such a ``storage_path``, so the orchestrator's own files and Ray's checkpoints
land side by side. ``RemotePath`` offers the small part of ``pathlib`` the
result code uses (``/``, ``name``, ``parent``, ``exists``, ``iterdir``,
``glob``, ``read_text``, ``unlink``, ...), so one code path serves both.

Credentials and endpoints come from the filesystem's standard places (for S3:
``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``, ``AWS_PROFILE``, an instance
role; ``AWS_ENDPOINT_URL`` or ``?endpoint_override=`` for S3-compatible
stores); nothing secret is written into the run's files, which record the
URI as given (minus any query string).

Writes are atomic on object storage by the store's own rule: an object
appears whole once its upload (single or multipart) completes, never half.
A directory (a SavedModel) is uploaded with its marker file last.
"""

from __future__ import annotations

import fnmatch
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional, Union
from urllib.parse import urlsplit

from orchestrator.errors import UserError
from orchestrator.scratch import scratch_dir


def is_uri(storage: Union[str, os.PathLike]) -> bool:
    """A filesystem URI (``s3://...``), not a local path (``file://`` counts as local)."""
    text = str(storage)
    return "://" in text and not text.startswith("file://")


@dataclass(frozen=True)
class _Stat:
    st_size: int
    st_mtime: float


class RemotePath:
    """A path on a pyarrow filesystem, with the part of ``pathlib.Path`` the result code needs.

    Args:
        fs: the pyarrow filesystem (picklable: it travels to workers and Ray tasks).
        path: the path on ``fs`` (``bucket/prefix/...`` for S3, no scheme).
        scheme: the URI scheme (``s3``), to show the path as a URI.
    """

    __slots__ = ("fs", "path", "scheme")

    def __init__(self, fs, path: str, scheme: str):
        self.fs, self.path, self.scheme = fs, path.rstrip("/"), scheme

    # -- names ---------------------------------------------------------------
    def __truediv__(self, other: str) -> "RemotePath":
        return RemotePath(self.fs, f"{self.path}/{str(other).strip('/')}", self.scheme)

    def __str__(self) -> str:
        return f"{self.scheme}://{self.path}"

    def __repr__(self) -> str:
        return f"RemotePath({str(self)!r})"

    def __eq__(self, other) -> bool:
        return isinstance(other, RemotePath) and (self.scheme, self.path) == (other.scheme, other.path)

    def __hash__(self) -> int:
        return hash((self.scheme, self.path))

    def __lt__(self, other: "RemotePath") -> bool:
        return self.path < other.path

    @property
    def name(self) -> str:
        return self.path.rsplit("/", 1)[-1]

    @property
    def parent(self) -> "RemotePath":
        return RemotePath(self.fs, self.path.rsplit("/", 1)[0] if "/" in self.path else self.path, self.scheme)

    def with_name(self, name: str) -> "RemotePath":
        return self.parent / name

    def relative_to(self, other: "RemotePath") -> str:
        return self.path[len(other.path):].lstrip("/")

    # -- queries -------------------------------------------------------------
    def _info(self):
        return self.fs.get_file_info(self.path)

    def exists(self) -> bool:
        from pyarrow.fs import FileType

        return self._info().type != FileType.NotFound

    def is_file(self) -> bool:
        from pyarrow.fs import FileType

        return self._info().type == FileType.File

    def is_dir(self) -> bool:
        from pyarrow.fs import FileType

        return self._info().type == FileType.Directory

    def is_symlink(self) -> bool:
        return False

    def stat(self) -> _Stat:
        info = self._info()
        if info.size is None:
            raise FileNotFoundError(str(self))
        mtime = info.mtime.timestamp() if info.mtime is not None else time.time()
        return _Stat(info.size, mtime)

    def iterdir(self) -> Iterator["RemotePath"]:
        from pyarrow.fs import FileSelector

        for info in self.fs.get_file_info(FileSelector(self.path, allow_not_found=True)):
            yield RemotePath(self.fs, info.path, self.scheme)

    def walk_files(self) -> list:
        """Every file under this directory: pyarrow ``FileInfo`` objects."""
        from pyarrow.fs import FileSelector, FileType

        return [i for i in self.fs.get_file_info(FileSelector(self.path, recursive=True, allow_not_found=True))
                if i.type == FileType.File]

    def glob(self, pattern: str) -> Iterator["RemotePath"]:
        """``fnmatch`` patterns, one per path segment (``checkpoint_*/state.json``)."""
        level = [self]
        for part in pattern.split("/"):
            level = [c for d in level for c in d.iterdir() if fnmatch.fnmatchcase(c.name, part)]
        yield from sorted(level)

    def rglob(self, pattern: str) -> Iterator["RemotePath"]:
        for info in self.walk_files():
            if fnmatch.fnmatchcase(info.base_name, pattern):
                yield RemotePath(self.fs, info.path, self.scheme)

    # -- reading and writing ---------------------------------------------------
    def read_bytes(self) -> bytes:
        from pyarrow.fs import FileType

        if self._info().type != FileType.File:
            raise FileNotFoundError(2, "No such file", str(self))
        with self.fs.open_input_stream(self.path) as f:
            return f.read()

    def read_text(self, encoding: str = "utf-8") -> str:
        return self.read_bytes().decode(encoding)

    def write_bytes(self, data: bytes) -> None:
        """One object, whole or not at all (the store's rule for a completed upload)."""
        with self.fs.open_output_stream(self.path) as f:
            f.write(data)

    def write_text(self, text: str, encoding: str = "utf-8") -> None:
        self.write_bytes(text.encode(encoding))

    def mkdir(self, parents: bool = True, exist_ok: bool = True) -> None:
        self.fs.create_dir(self.path, recursive=True)

    def unlink(self, missing_ok: bool = False) -> None:
        try:
            self.fs.delete_file(self.path)
        except FileNotFoundError:
            if not missing_ok:
                raise

    def rmtree(self) -> None:
        try:
            self.fs.delete_dir(self.path)
        except FileNotFoundError:
            pass

    def move_to(self, target: "RemotePath") -> None:
        """A file or a whole directory, file by file (object stores have no rename)."""
        if self.is_file():
            self.fs.move(self.path, target.path)
            return
        for info in self.walk_files():
            rel = info.path[len(self.path):].lstrip("/")
            self.fs.move(info.path, (target / rel).path)
        self.rmtree()

    def upload(self, local: Union[str, Path], last: tuple = ()) -> None:
        """Copy a local file or directory here; in a directory, files named in ``last`` go last."""
        from pyarrow.fs import LocalFileSystem, copy_files

        local = Path(local)
        if local.is_file():
            copy_files(str(local), self.path, source_filesystem=LocalFileSystem(), destination_filesystem=self.fs)
            return
        files = sorted((p for p in local.rglob("*") if p.is_file()), key=lambda p: (p.name in last, str(p)))
        for p in files:
            (self / str(p.relative_to(local))).upload(p)

    def download(self, local: Union[str, Path], skip=lambda rel: False, prune: bool = False) -> Path:
        """Copy this file or directory to ``local``; ``skip(relative_path)`` leaves files out.

        ``prune``: also delete local files that are no longer here (a synced copy)."""
        from pyarrow.fs import LocalFileSystem, copy_files

        local = Path(local)
        if self.is_file():
            local.parent.mkdir(parents=True, exist_ok=True)
            copy_files(self.path, str(local), source_filesystem=self.fs, destination_filesystem=LocalFileSystem())
            return local
        present = set()
        for info in self.walk_files():
            rel = info.path[len(self.path):].lstrip("/")
            if skip(rel):
                continue
            present.add(rel)
            target = local / rel
            if target.is_file() and target.stat().st_size == info.size \
                    and info.mtime is not None and target.stat().st_mtime >= info.mtime.timestamp():
                continue  # already here, and not older
            target.parent.mkdir(parents=True, exist_ok=True)
            copy_files(info.path, str(target), source_filesystem=self.fs, destination_filesystem=LocalFileSystem())
        if prune and local.is_dir():
            for stale in [p for p in local.rglob("*") if p.is_file() and str(p.relative_to(local)) not in present]:
                stale.unlink()
        return local


AnyPath = Union[Path, RemotePath]


def location(storage: Union[str, os.PathLike, RemotePath]) -> AnyPath:
    """``--storage`` (or any path under it) as a local ``Path`` or a :class:`RemotePath`.

    Nothing is checked here (see :func:`check`); an unknown scheme is a UserError.
    """
    if isinstance(storage, RemotePath):
        return storage
    if isinstance(storage, Path):
        return storage.expanduser().resolve()
    text = str(storage)
    if text.startswith("file://"):
        return Path(text[len("file://"):]).expanduser().resolve()
    if not is_uri(text):
        return Path(text).expanduser().resolve()
    import pyarrow.fs

    try:
        fs, path = pyarrow.fs.FileSystem.from_uri(text)
    except Exception as exc:  # ArrowInvalid (unknown scheme, bad URI), ImportError of a filesystem, ...
        raise UserError(f"storage {redact(text)!r}: {_first_line(exc)} (valid examples: "
                        "`--storage s3://my-bucket/orchestrator`, `--storage /mnt/efs/orchestrator`)") from None
    if isinstance(fs, pyarrow.fs.LocalFileSystem):
        return Path(path).resolve()
    return RemotePath(fs, path, urlsplit(text).scheme)


def redact(uri: str) -> str:
    """A URI without its query string (which may hold keys) and user info."""
    parts = urlsplit(uri)
    host = parts.hostname or ""
    return f"{parts.scheme}://{host}{parts.path}" if parts.scheme else uri


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _credential_problem(scheme: str) -> Optional[str]:
    """For S3: none of the standard credential sources gives a key (botocore's chain, when installed)."""
    if scheme not in ("s3", "s3a"):
        return None
    try:
        import botocore.session
    except ImportError:
        return None  # pyarrow's own error says it then
    if botocore.session.Session().get_credentials() is None:
        return ("no AWS credentials found (set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE, "
                "or give the machine an instance role)")
    return None


def _explain(exc: BaseException, root: RemotePath) -> str:
    text = str(exc)
    low = text.lower()
    if "no_such_bucket" in low or "nosuchbucket" in low or "bucket does not exist" in low:
        return f"bucket {root.path.split('/')[0]!r} does not exist"
    if "access_denied" in low or "accessdenied" in low or "forbidden" in low or "403" in low:
        return "access denied (no permission to write there with these credentials)"
    if "curl" in low or "connect" in low or "resolve" in low or "network" in low or "timeout" in low:
        endpoint = os.environ.get("AWS_ENDPOINT_URL") or "the store's endpoint"
        return f"cannot reach {endpoint}: {_first_line(exc)}"
    return _first_line(exc)


def check(storage: Union[str, os.PathLike]) -> AnyPath:
    """The storage root, created and proven writable (a probe object written and deleted).

    Raises UserError in one line for an unknown scheme, an unreachable endpoint,
    a missing bucket, missing credentials or no write permission.
    """
    root = location(storage)
    if isinstance(root, Path):
        try:
            root.mkdir(parents=True, exist_ok=True)
            probe = root / f".write-test-{time.time_ns()}"
            probe.write_text("")
            probe.unlink()
        except OSError as exc:
            raise UserError(f"storage path {root} is not writable: {exc.strerror or exc}") from None
        return root
    problem = _credential_problem(root.scheme)
    if problem is None:
        probe = root / f".write-test-{time.time_ns()}"
        try:
            bucket = root.path.split("/")[0]
            from pyarrow.fs import FileType

            if root.fs.get_file_info(bucket).type == FileType.NotFound:
                problem = f"bucket {bucket!r} does not exist"
            else:
                probe.write_bytes(b"")
                probe.unlink(missing_ok=True)
        except Exception as exc:  # pyarrow raises OSError / ArrowException with the store's message
            problem = _explain(exc, root)
    if problem:
        raise UserError(f"storage {str(root)!r}: {problem}")
    return root


def cache_dir(remote: RemotePath) -> Path:
    """A local copy's place for ``remote`` (``$ORCHESTRATOR_CACHE``, default ``~/.cache/orchestrator``)."""
    base = Path(os.environ.get("ORCHESTRATOR_CACHE", Path.home() / ".cache" / "orchestrator"))
    return base / remote.scheme / remote.path


# What a reader of results needs locally: everything but Ray's checkpoints' weights.
def _heavy(rel: str) -> bool:
    parts = rel.split("/")
    in_checkpoint = any(p.startswith("checkpoint_") for p in parts[:-1])
    return in_checkpoint and parts[-1] != "state.json"


def local_copy(path: Union[str, os.PathLike, RemotePath], *, models: bool = True) -> Path:
    """A local directory with ``path``'s files: itself when local, else a synced copy in :func:`cache_dir`.

    Checkpoint weights stay remote (their ``state.json`` comes); ``models=False``
    also leaves the exported models (``*.keras``, ``saved_model/``) and event files out.
    """
    where = location(path)
    if isinstance(where, Path):
        return where

    def skip(rel: str) -> bool:
        if _heavy(rel):
            return True
        return not models and (rel.endswith(".keras") or "saved_model/" in rel or "tfevents" in rel)

    target = cache_dir(where)
    bucket = where.path.split("/")[0]
    try:
        from pyarrow.fs import FileType

        if where.fs.get_file_info(bucket).type == FileType.NotFound:
            problem = f"bucket {bucket!r} does not exist"
        else:
            return where.download(target, skip, prune=True)
    except Exception as exc:
        problem = _explain(exc, where)
    raise UserError(f"storage {str(where)!r}: {problem}")


class LocalMirror:
    """A local directory written locally and copied to a remote one (TensorBoard's events).

    TensorFlow's event writer cannot write ``s3://``: the chief writes into
    :attr:`local` and :meth:`sync` uploads every file that changed since the
    last sync and deletes remote files that are gone locally (a rewind merges
    files). For a local target, :attr:`local` is the target and sync does nothing.

    Args:
        target: the directory on storage.
    """

    def __init__(self, target: Union[str, AnyPath]):
        self.target = location(target)
        self.remote = isinstance(self.target, RemotePath)
        self._sent: dict[str, tuple] = {}
        if self.remote:
            self.local = scratch_dir("tb")
            self.target.download(self.local)  # a resumed run continues its events
            self._sent = {str(p.relative_to(self.local)): (p.stat().st_size, p.stat().st_mtime)
                          for p in self.local.rglob("*") if p.is_file()}
        else:
            self.local = Path(self.target)

    def sync(self) -> None:
        if not self.remote:
            return
        now = {str(p.relative_to(self.local)): (p.stat().st_size, p.stat().st_mtime)
               for p in self.local.rglob("*") if p.is_file() and not p.name.startswith(".")}
        for rel, sig in sorted(now.items()):
            if self._sent.get(rel) != sig:
                (self.target / rel).upload(self.local / rel)
        for rel in set(self._sent) - set(now):
            (self.target / rel).unlink(missing_ok=True)
        self._sent = now

    def close(self) -> None:
        self.sync()
        if self.remote:
            shutil.rmtree(self.local, ignore_errors=True)
