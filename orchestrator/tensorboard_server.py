"""A live TensorBoard server over a run's or search's central root, for as long as it is needed.

    orchestrator train --tensorboard               # served while training, stopped at the end
    orchestrator tensorboard my-search             # a finished run or search, until Ctrl-C

The server is TensorBoard's own (``python -m tensorboard.main``), in a child
process on 127.0.0.1 (on a cluster, reach it through an SSH tunnel), in its
own process group so that a Ctrl-C in the terminal reaches only the
orchestrator, which then stops it by its process group id: at the end, on
Ctrl-C and on errors alike. It runs in a separate process, so the driver
still never imports TensorFlow.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Iterator, Optional

from orchestrator.errors import UserError

DEFAULT_PORT = 6006
HOST = "127.0.0.1"
START_TIMEOUT_S = 120  # TensorBoard imports TensorFlow at start: slow on a busy node


def _port_is_free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind((HOST, port))
        except OSError:
            return False
    return True


def choose_port(port: Optional[int] = None) -> int:
    """``port`` if given (refused when taken), else TensorBoard's 6006 when free, else any free port."""
    if port is not None:
        if not _port_is_free(port):
            raise UserError(f"tensorboard.port: port {port} on {HOST} is in use; pick another "
                            "(valid example: `--tensorboard-port 6007`) or leave it out for a free one")
        return port
    if _port_is_free(DEFAULT_PORT):
        return DEFAULT_PORT
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return probe.getsockname()[1]


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/data/logdir", timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def stop(process: subprocess.Popen, timeout: float = 10) -> None:
    """Stop the server by its process group id (it leads its own group): SIGTERM, then SIGKILL."""
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout)


@contextlib.contextmanager
def serve(logdir: str | Path, port: Optional[int] = None) -> Iterator[str]:
    """Run TensorBoard over ``logdir`` while the block runs; yields its URL."""
    # Not created here: a run's directory is made (and its name checked) by the run itself;
    # TensorBoard picks the directory up once it appears.
    logdir = Path(logdir)
    port = choose_port(port)
    url = f"http://{HOST}:{port}"
    log = tempfile.TemporaryFile()
    process = subprocess.Popen(
        [sys.executable, "-m", "tensorboard.main", "--logdir", str(logdir), "--host", HOST,
         "--port", str(port), "--reload_interval", "5"],
        stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not _answers(url):
            if process.poll() is not None or time.monotonic() > deadline:
                log.seek(0)
                tail = log.read().decode(errors="replace").strip().splitlines()[-1:]
                raise UserError(f"TensorBoard did not start on {url}: "
                                f"{tail[0] if tail else f'exit status {process.poll()}'}")
            time.sleep(0.5)
        yield url
    finally:
        stop(process)
        log.close()


def maybe_serve(enabled: bool, logdir: str | Path, port: Optional[int] = None):
    """:func:`serve` when ``enabled``, else a block that yields None."""
    return serve(logdir, port) if enabled else contextlib.nullcontext(None)
