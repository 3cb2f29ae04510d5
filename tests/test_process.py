"""The process: importing a module leaves the environment alone, and interrupts end as KeyboardInterrupt."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest

from orchestrator import process


def test_importing_any_module_but_the_worker_entry_point_leaves_the_environment_alone():
    script = textwrap.dedent("""
        import importlib, importlib.util, os, pathlib, sys
        import ray.air.integrations.mlflow, mlflow  # libraries' own import-time settings are theirs
        root = pathlib.Path(importlib.util.find_spec("orchestrator").origin).parent.parent
        names = sorted(".".join(p.relative_to(root).with_suffix("").parts).removesuffix(".__init__")
                       for top in ("orchestrator", "jobs") for p in (root / top).rglob("*.py"))
        before = dict(os.environ)
        for name in names:
            if not name.startswith("orchestrator.worker"):
                importlib.import_module(name)
        changed = {k for k in set(before) | set(os.environ) if before.get(k) != os.environ.get(k)}
        print(sorted(changed), "tensorflow" in sys.modules)
        import orchestrator.worker  # the one documented entry point
        print(os.environ["TF_USE_LEGACY_KERAS"])
    """)
    env = {k: v for k, v in os.environ.items() if k not in ("TF_USE_LEGACY_KERAS", "TF_CPP_MIN_LOG_LEVEL")}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    changed, legacy = out.stdout.strip().splitlines()[-2:]
    assert changed == "[] False", f"imports changed the environment (or imported TensorFlow): {changed}"
    assert legacy == "1"


def test_sigterm_stops_a_command_like_ctrl_c_and_survives_ray_init_replacing_it():
    previous = signal.getsignal(signal.SIGTERM)
    try:
        process.sigterm_as_ctrl_c()
        with process.keeping_sigterm():
            signal.signal(signal.SIGTERM, signal.SIG_DFL)  # what ray.init does
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGTERM)
            signal.sigtimedwait([], 0.1) if hasattr(signal, "sigtimedwait") else None
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_the_first_ctrl_c_in_a_search_is_tunes_graceful_stop_then_an_interrupt():
    stopped = []
    previous_usr1 = signal.signal(signal.SIGUSR1, lambda signum, frame: stopped.append(signum))  # Tune's
    try:
        with pytest.raises(KeyboardInterrupt):
            with process.tune_fit_interruptible():
                assert os.environ["TUNE_DISABLE_SIGINT_HANDLER"] == "1"
                os.kill(os.getpid(), signal.SIGINT)
                signal.sigtimedwait([], 0.1)
                assert stopped == [signal.SIGUSR1]  # the search was asked to stop, not killed
        assert "TUNE_DISABLE_SIGINT_HANDLER" not in os.environ
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGUSR1, previous_usr1)


FINALIZER_SIGTERM = textwrap.dedent('''
    import os, signal, sys, weakref
    from orchestrator import process

    def ray_worker_handler(signum, frame):  # what a Ray worker's SIGTERM handler does
        raise SystemExit(1)

    signal.signal(signal.SIGTERM, ray_worker_handler)
    if sys.argv[1] == "hook":
        process.exit_on_sigterm_in_finalizers()

    class Trial: pass

    def finalizer(ref):
        os.kill(os.getpid(), signal.SIGTERM)
        for _ in range(100000):  # the handler runs here, inside the finalizer
            pass

    trial = Trial()
    kept = weakref.ref(trial, finalizer)
    del trial
    print("carried on after SIGTERM", flush=True)
''')


@pytest.mark.parametrize("hook", ["hook", "python"])
def test_a_worker_sigtermed_inside_a_finalizer_exits_without_a_traceback(hook):
    out = subprocess.run([sys.executable, "-c", FINALIZER_SIGTERM, hook], capture_output=True, text=True,
                         timeout=60)
    if hook == "python":  # what a trial actor printed to the search's console before, and it carried on
        assert "Exception ignored in" in out.stderr and "SystemExit" in out.stderr
        assert "carried on" in out.stdout and out.returncode == 0
    else:  # it exits as Ray's handler meant, quietly
        assert out.stderr == "" and out.stdout == "" and out.returncode == 1
