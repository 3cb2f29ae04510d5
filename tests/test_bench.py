"""The benchmarks' smoke runs still run, so they cannot rot.

``python -m bench.run --quick``: sections (a) and (e) only, one repetition: (e)
runs the search on both trial paths ((e0) Ray Train per trial, (e) the fast
path) end to end. (b)-(d) are the ``orchestrator train`` runs other tests
cover, (f) needs KerasTuner (``.[bench]``). ``python -m bench.gap --quick``:
its five runs, each adding one part of a worker to plain ``fit``. ``python -m
bench.allreduce_floor``: (c)'s floor, 2 bare MWMS processes timing the task's model.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_quick_bench_runs_both_search_paths_and_reports_median_ranges(tmp_path, mnist_path):
    out = tmp_path / "bench.json"
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["RAY_TMPDIR"] = str(Path("/tmp") / f"bench-test-{os.getpid()}")  # its own Ray, short socket paths
    try:
        done = subprocess.run([sys.executable, "-m", "bench.run", "--quick", "--only", "a,e", "--data",
                               str(mnist_path), "--out", str(out)], cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=900)
    finally:
        shutil.rmtree(env["RAY_TMPDIR"], ignore_errors=True)  # Ray's session logs, 30 MB a run
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    report = json.loads(out.read_text())
    [sections] = report["repetitions"]
    for key in ("a", "e0", "e"):
        assert "error" not in sections[key], (key, sections[key])
    for key in ("e0", "e"):
        assert sections[key]["trials_in_summary"] == report["config"]["trials"]
        assert all(r.startswith(("max_epochs", "asha", "early_stopping"))
                   for r in sections[key]["stop_reasons"].values()), sections[key]["stop_reasons"]
    # The fast path ran in reused actors, which said how much memory they held.
    assert sections["e"]["actor_rss_mb"], sections["e"]
    table = {row["figure"]: row for row in report["table"]}
    wall = table["(e) search, fast path: wall s, ratio vs (e0)"]
    assert wall["value"] > 0 and wall["ratio"] == wall["value"] / sections["e0"]["wall_s"]
    assert "(e0) search, Ray Train per trial: wall s" in done.stdout


def test_quick_gap_bench_adds_one_part_of_a_worker_at_a_time(tmp_path, mnist_path):
    out = tmp_path / "gap.json"
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["RAY_TMPDIR"] = str(Path("/tmp") / f"bench-test-{os.getpid()}")
    try:
        done = subprocess.run([sys.executable, "-m", "bench.gap", "--quick", "--data", str(mnist_path), "--out",
                               str(out)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    finally:
        shutil.rmtree(env["RAY_TMPDIR"], ignore_errors=True)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    report = json.loads(out.read_text())
    [runs] = report["repetitions"]
    assert list(runs) == ["a'", "+input", "+callbacks", "+ray", "b"]
    assert runs["+ray"]["fit_in_another_process"] and not runs["+callbacks"]["fit_in_another_process"]
    assert not runs["+input"]["callbacks"] and {"ModelCheckpoint", "EpochTensorBoard"} <= set(runs["+callbacks"]["callbacks"])
    assert all(r["epochs"] == 2 and r["steady_epoch_s"] > 0 for r in runs.values()), runs
    rows = {row["run"]: row for row in report["table"]}
    assert rows["b"]["vs_a_spe"]["median"] == runs["b"]["steady_epoch_s"] / runs["a'"]["steady_epoch_s"]


def test_allreduce_floor_times_the_default_tasks_model_in_two_mwms_processes():
    done = subprocess.run([sys.executable, "-m", "bench.allreduce_floor", "--repeats", "5"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    floor = json.loads(done.stdout.strip().splitlines()[-1])
    # Every weight of the tutorial's MLP (784-256-64-32-10) is all-reduced once a step.
    assert floor["workers"] == 2 and floor["values_all_reduced"] == 784 * 256 + 256 + 256 * 64 + 64 + 64 * 32 + 32 + 32 * 10 + 10
    assert floor["compute_ms"] > 0 and floor["all_reduce_ms"] > 0
    assert floor["floor_samples_per_s"] == floor["global_batch"] / floor["step_floor_ms"] * 1000


def test_a_failed_floor_is_a_row_of_the_table_not_a_silent_gap():
    from bench.run import build_rows

    rows = build_rows({"c_floor": {"error": "exit 1"}}, {})
    assert any(r["figure"].startswith("(c') 2-process step floor") and "exit 1" in r["figure"] for r in rows), rows
