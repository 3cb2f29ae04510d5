"""Scratch directories of killed processes are swept by the next process that makes one."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

from orchestrator.scratch import scratch, scratch_dir, sweep

MAKE = ("import sys, time; from orchestrator.scratch import scratch_dir; d = scratch_dir('ckpt'); "
        "(d / 'weights.h5').write_bytes(b'x' * 1000); print(d, flush=True); time.sleep(600)")


def _child_with_scratch(tmp_path):
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    child = subprocess.Popen([sys.executable, "-c", MAKE], env=env, stdout=subprocess.PIPE, text=True)
    return child, child.stdout.readline().strip()


def test_a_killed_processs_scratch_is_swept_a_live_ones_and_foreign_names_are_kept(tmp_path):
    killed, killed_dir = _child_with_scratch(tmp_path)
    live, live_dir = _child_with_scratch(tmp_path)
    try:
        killed.send_signal(signal.SIGKILL)  # as Ray kills a worker: no finally, no atexit
        killed.wait(timeout=30)
        foreign = [tmp_path / "orchestrator-best-abc", tmp_path / "orchestrator-best-1.1-x", tmp_path / "user-dir"]
        for path in foreign:
            path.mkdir()
        assert os.path.isdir(killed_dir) and os.path.isdir(live_dir)

        removed = sweep(str(tmp_path))

        assert [str(p) for p in removed] == [killed_dir]
        assert not os.path.exists(killed_dir)
        assert os.path.isfile(os.path.join(live_dir, "weights.h5"))
        assert all(p.is_dir() for p in foreign)  # not ours, or another pid namespace's
    finally:
        live.kill()
        live.wait(timeout=30)
        killed.stdout.close()
        live.stdout.close()


def test_scratch_removes_its_directory_on_the_way_out_even_on_an_error(tmp_path, monkeypatch):
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    try:
        with scratch("export") as path:
            (path / "model.keras").write_text("x")
            assert path.parent == tmp_path and path.name.startswith("orchestrator-export-")
            raise RuntimeError("upload failed")
    except RuntimeError:
        pass
    assert not path.exists()
    kept = scratch_dir("best")
    assert kept.is_dir() and f".{os.getpid()}-" in kept.name
