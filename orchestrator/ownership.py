"""One live command per run or search directory (pure Python: no Ray, no TensorFlow).

    $ orchestrator train --name run1 &  orchestrator train --name run1
    error: run 'run1' is in use by pid 4242 on host node-a since 2026-11-27 10:15:02 UTC
    (.owner.json in results/run1); wait for it to end, or stop it first

Two files in the run directory:

``.owner.lock``
    An empty file the owner holds an exclusive ``flock`` on for its whole life.
    The kernel drops the lock when the process dies, SIGKILL included, so a
    killed driver never blocks ``--resume`` on the same machine. On NFSv4/EFS
    Linux maps ``flock`` to NFS byte-range locks, which other clients see; a
    dead client's lock ends with its lease.
``.owner.json``
    Who owns it: host, pid, the pid's start time (``/proc/<pid>/stat`` field
    22, which differs once the pid is reused), the boot id, since when, and a
    heartbeat the owner refreshes every :data:`HEARTBEAT_S` seconds.

Taking a directory: lock ``.owner.lock`` (a live holder refuses at once), then
judge the record left there, if any. An owner on this host is dead when its pid
is gone, or runs a different start time, or the boot id differs (rebooted). An
owner on another host cannot be probed: it is taken for alive while its
heartbeat is younger than :data:`STALE_AFTER_S` seconds (the lock, where the
storage shares locks between clients, already refuses it while it lives; the
heartbeat covers storage mounted with local-only locks). Where the storage has
no ``flock`` at all (``ENOLCK``), the record is created with ``O_CREAT|O_EXCL``
(a hard link, atomic on NFS too) and the same rules decide whether a record
left behind is stale.

The loser of a race exits 2 with one line naming the owner and has created
nothing but the (shared, empty) lock file. Ownership ends when the command
ends, on errors and Ctrl-C too (the CLI releases it; atexit as a backstop).
"""

from __future__ import annotations

import atexit
import errno
import fcntl
import json
import os
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from orchestrator.errors import UserError

LOCK_FILE = ".owner.lock"
OWNER_FILE = ".owner.json"
OWNERSHIP_FILES = (LOCK_FILE, OWNER_FILE)


def is_ownership_file(name: str) -> bool:
    """The lock, the record, and the temporary names they pass through (left if a process dies mid-write)."""
    return name.startswith(".owner.")
# A driver refreshes its heartbeat this often; an owner on another host whose
# heartbeat is older than STALE_AFTER_S is taken for dead (several missed beats,
# so a slow NFS server or a paused VM is not mistaken for a death).
HEARTBEAT_S = float(os.environ.get("ORCHESTRATOR_OWNER_HEARTBEAT_S", "10"))
STALE_AFTER_S = float(os.environ.get("ORCHESTRATOR_OWNER_STALE_S", "60"))
# How long a command that finds the name locked waits for the owner's record, to name it.
RECORD_WAIT_S = 3.0


def boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def process_start(pid: int) -> Optional[str]:
    """The start time of ``pid`` in clock ticks since boot (``None``: no such live process)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()  # comm may hold spaces and parentheses
    if fields[0] in ("Z", "X"):
        return None
    return fields[19]  # field 22 of stat; fields here start at field 3


def me() -> dict:
    pid = os.getpid()
    now = time.time()
    return {"host": socket.gethostname(), "pid": pid, "pid_start": process_start(pid),
            "boot_id": boot_id(), "since": now, "heartbeat": now}


def is_me(record: dict) -> bool:
    mine = me()
    return all(record.get(k) == mine[k] for k in ("host", "pid", "pid_start", "boot_id"))


def stale_reason(record: dict, now: Optional[float] = None) -> Optional[str]:
    """Why the owner named by ``record`` is dead (``None``: it may be alive)."""
    now = time.time() if now is None else now
    if record.get("host") == socket.gethostname():
        if record.get("boot_id") != boot_id():
            return "this host rebooted since"
        start = process_start(int(record.get("pid", -1)))
        if start is None:
            return f"pid {record.get('pid')} is gone"
        if start != record.get("pid_start"):
            return f"pid {record.get('pid')} is now another process"
        return None
    try:
        age = now - float(record["heartbeat"])
    except (KeyError, TypeError, ValueError):
        return "its record has no heartbeat"
    if age > STALE_AFTER_S:
        return f"no heartbeat for {age:.0f} s (dead after {STALE_AFTER_S:.0f} s)"
    return None


def describe(record: dict) -> str:
    since = record.get("since")
    when = (time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(float(since)))
            if isinstance(since, (int, float)) else "an unknown time")
    return f"pid {record.get('pid')} on host {record.get('host')} since {when}"


def _read(path: Path) -> Optional[dict]:
    try:
        record = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}  # torn or unreadable: judged like a record with nothing in it
    return record if isinstance(record, dict) else {}


def _write_record(path: Path, record: dict) -> None:
    """Replace the record atomically (temporary file + rename; on object storage one PUT)."""
    if _is_remote(path):
        path.write_text(json.dumps(record))
        return
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(json.dumps(record))
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@dataclass
class Ownership:
    """This process's hold on one directory; :meth:`release` ends it."""

    directory: Path
    what: str
    record: dict
    lock_fd: Optional[int]
    _stop: threading.Event = field(default_factory=threading.Event)

    def start_heartbeat(self) -> None:
        thread = threading.Thread(target=self._beat, name=f"owner-heartbeat:{self.directory.name}", daemon=True)
        thread.start()

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            self.record["heartbeat"] = time.time()
            try:
                _write_record(self.directory / OWNER_FILE, self.record)
            except OSError:
                pass  # a full or vanished disk: the run's own writes report it

    def release(self) -> None:
        self._stop.set()
        try:
            if is_me(_read(self.directory / OWNER_FILE) or {}):
                (self.directory / OWNER_FILE).unlink()
        except OSError:
            pass
        if self.lock_fd is not None:
            os.close(self.lock_fd)  # drops the flock; the empty lock file stays (unlinking it races)
            self.lock_fd = None
        _held.pop(self.directory, None)


_held: dict[Path, Ownership] = {}


def _refuse(what: str, name: str, directory: Path, record: Optional[dict]) -> UserError:
    owner = describe(record) if record else "another process (its record is not written yet)"
    return UserError(f"{what} {name!r} is in use by {owner} ({OWNER_FILE} in {directory}); "
                     "wait for it to end, or stop it first")


def acquire(directory: Path, what: str = "run") -> Ownership:
    """Own ``directory`` (created if missing) for the life of this process, or raise UserError.

    Re-entrant within one process: a second call for the same directory returns the same hold.
    """
    directory = directory if _is_remote(directory) else Path(directory)
    if directory in _held:
        return _held[directory]
    if _is_remote(directory):
        return _acquire_remote(directory, what)
    directory.mkdir(parents=True, exist_ok=True)
    lock_fd: Optional[int] = os.open(directory / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(lock_fd)
        lock_fd = None
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            # The owner writes its record just after taking the lock: give it a moment,
            # so that the refusal can name it (pid, host, since when).
            record, deadline = _read(directory / OWNER_FILE), time.monotonic() + RECORD_WAIT_S
            while not record and time.monotonic() < deadline:
                time.sleep(0.05)
                record = _read(directory / OWNER_FILE)
            raise _refuse(what, directory.name, directory, record) from None
        if exc.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
            raise
    try:
        record = _take_record(directory, what)
    except BaseException:
        if lock_fd is not None:
            os.close(lock_fd)
        raise
    hold = Ownership(directory, what, record, lock_fd)
    _held[directory] = hold
    hold.start_heartbeat()
    return hold


def _is_remote(path) -> bool:
    from orchestrator.storage import RemotePath

    return isinstance(path, RemotePath)


# On object storage, how long a taker waits before reading its record back (see _acquire_remote).
SETTLE_S = float(os.environ.get("ORCHESTRATOR_OWNER_SETTLE_S", "1"))


def _acquire_remote(directory, what: str) -> "Ownership":
    """Own a directory on object storage, which has neither locks nor create-if-absent (in pyarrow).

    The record alone decides, by the same rules as a record left on a filesystem
    without ``flock``: a live owner (same host: its pid runs; another host: a
    heartbeat younger than :data:`STALE_AFTER_S`) refuses. A taker writes its
    record (one PUT, whole or absent) with a random token, waits
    :data:`SETTLE_S` and reads it back: of two takers racing within that
    window, the one whose record was overwritten loses (stores with
    read-after-write consistency, as S3 and GCS, see the last write).
    """
    import uuid

    path = directory / OWNER_FILE
    existing = _read(path)
    if existing and stale_reason(existing) is None and not is_me(existing):
        raise _refuse(what, directory.name, directory, existing)
    mine = {**me(), "token": uuid.uuid4().hex}
    _write_record(path, mine)
    time.sleep(SETTLE_S)
    back = _read(path)
    if not back or back.get("token") != mine["token"]:
        raise _refuse(what, directory.name, directory, back)
    hold = Ownership(directory, what, mine, None)
    _held[directory] = hold
    hold.start_heartbeat()
    return hold


def _take_record(directory: Path, what: str) -> dict:
    """Write our record, taking over a stale one; raise UserError if a live owner holds it."""
    path = directory / OWNER_FILE
    mine = me()
    for _ in range(5):
        tmp = directory / f"{OWNER_FILE}.{os.getpid()}.new"
        tmp.write_text(json.dumps(mine))
        try:
            os.link(tmp, path)  # atomic create-if-absent, also on NFS: the record appears whole
            return mine
        except FileExistsError:
            pass
        finally:
            tmp.unlink(missing_ok=True)
        existing = _read(path)
        if existing is None:
            continue  # released meanwhile: try again
        if existing and stale_reason(existing) is None and not is_me(existing):
            raise _refuse(what, directory.name, directory, existing)
        if not existing:
            try:  # a torn record: stale only once it is old enough not to be mid-write
                if time.time() - path.stat().st_mtime < 5:
                    raise _refuse(what, directory.name, directory, None)
            except FileNotFoundError:
                continue
        # Stale: move it aside under a name of our own (rename is atomic) and retry the link.
        aside = directory / f"{OWNER_FILE}.stale.{os.getpid()}"
        try:
            os.rename(path, aside)
        except FileNotFoundError:
            continue
        moved = _read(aside)
        aside.unlink(missing_ok=True)
        if moved and moved != existing and stale_reason(moved) is None:
            # Another taker won between our read and our rename: put its record back, and lose.
            _write_record(path, moved)
            raise _refuse(what, directory.name, directory, moved)
    raise _refuse(what, directory.name, directory, _read(path))


def release(directory: Path) -> None:
    hold = _held.get(directory if _is_remote(directory) else Path(directory))
    if hold is not None:
        hold.release()


def release_all() -> None:
    for hold in list(_held.values()):
        hold.release()


atexit.register(release_all)
