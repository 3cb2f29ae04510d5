"""The process: its environment variables and how it is interrupted. The one home of both.

Environment. Every process that may import TensorFlow needs tf-keras selected
before the import: TF 2.21's default Keras 3 fails under
``MultiWorkerMirroredStrategy`` inside Ray Train (``PerReplica`` conversion
error), tf-keras does not. :func:`use_tf_keras` is the one entry point that
must run before TensorFlow is imported (``orchestrator.worker`` calls it when
imported, the one import with that side effect). Ray passes
:func:`worker_env_vars` to its workers; :func:`prepare_driver` sets this
process's, which a local Ray started from it inherits, with Ray Train's own
settings. No other module writes ``os.environ``, but for two settings that
belong to one component: ``TF_CONFIG``, set in each worker by the Train
backend (``engine/tf_backend.py``, as Ray's own ``TensorflowTrainer`` does),
and MLflow's client timeouts (``engine/tracking.py``).

Interrupts. Ctrl-C, and SIGTERM (``ray job stop``, a scheduler, ``kill``), end
as ``KeyboardInterrupt`` in the command, which says how to resume and exits 130::

    $ orchestrator train --name run1        # Ctrl-C
    interrupted: workers stopped, completed epochs and trials are kept; resume with: ...

Ray installs its own handlers in ``ray.init``, Train's ``fit()`` and Tune's
``fit()``; the helpers here keep ours in charge of the outcome and leave Ray's
cleanup (workers stopped, state saved) in place.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from typing import Iterator, Optional

# Whether the workers print their own lines (set per run from --verbose).
VERBOSE_ENV = "ORCHESTRATOR_VERBOSE"

# TF_CPP_MIN_LOG_LEVEL=2: TensorFlow's C++ INFO and WARNING lines stay out of the console.
TF_ENV_VARS = {"TF_USE_LEGACY_KERAS": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}

RAY_ENV_VARS = {
    # Train V2 is the default in Ray 2.60; pinned so an inherited setting cannot flip APIs.
    "RAY_TRAIN_V2_ENABLED": "1",
    # A worker group that cannot be placed (e.g. after a node died) fails after this
    # long instead of Train's 60 s; each failure counts against max_failures. Processes
    # of a local Ray started here inherit it; set it on the nodes of a real cluster.
    "RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S": "30",
    # Train's controller collects reports by polling the workers (default every 2 s), and
    # a worker's next report blocks until its last one was collected: short epochs would
    # each wait for the poll (README, Benchmark). Train passes it on to its controller.
    "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.5",
}

# A reused Tune actor (the search's fast path) is handed to the next trial only once
# the last trial's function thread has ended; Tune waits 2 s by default, shorter than a
# stopped or paused Keras trial's unwinding on a loaded machine, and a reset that times
# out fails the next trial ("reset_config() ... return True"). Read at each reset.
TRIAL_ACTOR_ENV_VARS = {"TUNE_FUNCTION_THREAD_TIMEOUT_S": "60"}


# ------------------------------------------------------------------ environment

def use_tf_keras() -> None:
    """Select tf-keras for this process's TensorFlow; must run before TensorFlow is imported."""
    os.environ["TF_USE_LEGACY_KERAS"] = "1"
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", TF_ENV_VARS["TF_CPP_MIN_LOG_LEVEL"])


def worker_env_vars(verbose: bool) -> dict[str, str]:
    """The env of every Ray process that may import TensorFlow (Train workers, evaluation tasks)."""
    return {**TF_ENV_VARS, VERBOSE_ENV: "1" if verbose else "0"}


def use_worker_env(verbose: bool) -> None:
    """This process trains like a Ray Train worker (a fast-path trial's actor): its env, where unset."""
    for key, value in {**worker_env_vars(verbose), **TRIAL_ACTOR_ENV_VARS}.items():
        os.environ.setdefault(key, value)


def prepare_driver(verbose: bool) -> None:
    """This process (and a local Ray started from it, which inherits its env): workers' vars, Ray Train's."""
    os.environ.update(worker_env_vars(verbose))
    if not verbose:
        # Tune 2.60's default output prints its experiment box, "View detailed results
        # here" and a TensorBoard command for its own driver artifacts even at verbose=0;
        # its older output path prints nothing at verbose=0. The search table replaces both.
        os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    for key, value in RAY_ENV_VARS.items():
        os.environ.setdefault(key, value)


# ------------------------------------------------------------------ interrupts

def _raise_keyboard_interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def sigterm_as_ctrl_c() -> None:
    """SIGTERM (``ray job stop``, a scheduler, ``kill``) stops this command as cleanly as Ctrl-C."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)


@contextlib.contextmanager
def keeping_sigterm() -> Iterator[None]:
    """Around ``ray.init``, which replaces the SIGTERM handler with one that exits at once.

    The caller's handler (see :func:`sigterm_as_ctrl_c`) is put back; Ray's is
    kept where there was none.
    """
    main = threading.current_thread() is threading.main_thread()
    caller = signal.getsignal(signal.SIGTERM) if main else None
    try:
        yield
    finally:
        if callable(caller):
            signal.signal(signal.SIGTERM, caller)


def _exit_from_finalizer(unraisable) -> None:
    if unraisable.exc_type is not None and issubclass(unraisable.exc_type, SystemExit):
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        code = getattr(unraisable.exc_value, "code", 1)
        os._exit(code if isinstance(code, int) else 1)
    sys.__unraisablehook__(unraisable)


def exit_on_sigterm_in_finalizers() -> None:
    """A worker process that gets SIGTERM while Python runs a finalizer exits, with no traceback.

    Ray's worker handler raises ``SystemExit`` (as Ray ends a job, every
    reused trial actor gets SIGTERM). When the signal lands inside a finalizer,
    a garbage collector's weakref callback say, Python cannot raise it there: it
    prints "Exception ignored in ... SystemExit: 1" with a traceback, which Ray
    forwards to the command's console under the search's summary, and the
    process carries on until Ray kills it. Here it exits as the handler meant;
    other unraisable exceptions are printed as Python does.
    """
    sys.unraisablehook = _exit_from_finalizer


def _note_ctrl_c(trainer) -> list:
    """Wrap the SIGINT handler Ray Train installs in ``fit()`` so that the signal is noted."""
    interrupted: list = []
    register = getattr(trainer, "_register_sigint_handler", None)
    if register is None:  # another Ray version: its handler, if any, is left alone
        return interrupted

    def register_and_note(controller):
        register(controller)
        ray_handler = signal.getsignal(signal.SIGINT)

        def handler(signum, frame):
            interrupted.append(signum)
            if callable(ray_handler):
                ray_handler(signum, frame)

        signal.signal(signal.SIGINT, handler)

    trainer._register_sigint_handler = register_and_note
    return interrupted


@contextlib.contextmanager
def train_fit_interruptible(trainer) -> Iterator[None]:
    """Around a Ray Train ``trainer.fit()``: Ctrl-C ends in ``KeyboardInterrupt``, as everywhere else.

    In the main thread, ``fit()`` installs Ray Train's own SIGINT handler: it
    aborts the run (workers stopped, checkpoints kept) and then exits the process
    with status 1, so the command could neither say how to resume nor exit 130.
    Its abort is kept; the signal is noted and the exit becomes a
    KeyboardInterrupt. Train leaves its handler (bound to a finished run)
    installed after ``fit()``: the previous one is put back.
    """
    interrupted = _note_ctrl_c(trainer)
    previous = signal.getsignal(signal.SIGINT)
    try:
        yield
    except SystemExit:
        if interrupted:
            raise KeyboardInterrupt("SIGINT") from None
        raise
    finally:
        if previous is not None and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, previous)


@contextlib.contextmanager
def tune_fit_interruptible() -> Iterator[None]:
    """Around ``tuner.fit()``: Ctrl-C is Tune's graceful stop, then ``KeyboardInterrupt``.

    Tune's own SIGINT handler stops the trials and saves its state, but then
    ``fit()`` returns as if the search were done: a summary would be written,
    mark the search finished and refuse ``--resume``. Here the first Ctrl-C is
    noted and passed to Tune as SIGUSR1 (the same graceful stop), and the
    interruption is raised once ``fit()`` returns; a second Ctrl-C interrupts at once.
    """
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers belong to the main thread; Tune installs none elsewhere either
        return
    noted: list[int] = []

    def note_and_stop_gracefully(signum, frame):
        noted.append(signum)
        if len(noted) == 1 and callable(signal.getsignal(signal.SIGUSR1)):  # Tune's, once it runs
            os.kill(os.getpid(), signal.SIGUSR1)
        else:
            raise KeyboardInterrupt(f"signal {signum}")

    saved_env: Optional[str] = os.environ.get("TUNE_DISABLE_SIGINT_HANDLER")
    os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"  # Tune leaves SIGINT to the handler above
    previous = signal.signal(signal.SIGINT, note_and_stop_gracefully)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if saved_env is None:
            os.environ.pop("TUNE_DISABLE_SIGINT_HANDLER", None)
        else:
            os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = saved_env
    if noted:
        raise KeyboardInterrupt("search interrupted; Tune saved its state for --resume")
