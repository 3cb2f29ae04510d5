"""``python -m bench.run``: the orchestrator against plain tf-keras and KerasTuner, side by side.

    python -m bench.run                      # the full benchmark: 3 interleaved repetitions (~25 min on 2 cores)
    python -m bench.run --repeat 5           # 5 repetitions
    python -m bench.run --quick              # a ~3 min smoke run on 10k examples, 1 repetition (not comparable)
    python -m bench.run --gpus-per-worker 1  # (b)/(c) mirror one GPU per worker
    python -m bench.run --only a,b           # some sections only
    python -m bench.run --wait-idle 1200     # first wait (up to 20 min) for load average < 0.6
    pip install -e '.[bench]'                # KerasTuner, for (f)

One invocation runs, on the same data (MNIST: first 50k of the train split to
train, last 10k to validate), model (the tutorial's MLP), optimizer (Adam 1e-3)
and global batch (128), each in its own subprocess:

(a) plain tf-keras ``fit`` in one process (``bench.baseline``, TF_USE_LEGACY_KERAS=1):
    the baseline every other figure is a ratio to. (a') is the same with the
    orchestrator's ``training.steps_per_execution`` (when that is not 1), to tell
    that lever apart from everything else the orchestrator adds.
(b) ``orchestrator train`` with 1 worker, (c) with 2 workers (MultiWorkerMirroredStrategy,
    batch per worker = global / 2). Each worker gets ``--cpus-per-worker`` (default:
    the machine's cores / workers, so every run uses the whole machine like (a)).
    Per-epoch time is ``history[*].epoch_seconds`` of ``result.json`` (measured like (a):
    epoch begin -> epoch end, validation included); "steady" is the mean of epochs
    2..N (epoch 1 also traces the graph). "cycle" is the time between two epoch
    starts (``history[*].started_at``): it adds the per-epoch checkpoint and report.
(c') the floor under (c): ``bench.allreduce_floor`` times, in 2 bare MWMS processes
    (no Ray, no Keras loop), one step's compute and one all-reduce of all the
    weights; global batch / their sum is what no synchronous 2-worker run here can beat.
(d) cold start: the ``orchestrator train`` subprocess's start -> its first epoch
    begun (``history[0].started_at``, the worker's wall clock), for (b) and (c).
(e) ``orchestrator tune`` over ``jobs/configs/tune_mnist.yaml`` with the benchmark's
    data and global batch, 8 trials x 1 worker, ASHA, up to 12 epochs (``--trials``,
    ``--search-epochs``), on the fast path (trials in reused Tune actors); (e0) the
    same search with ``search.fast_path: false`` (a Ray Train worker group per
    trial, the path before the fast one), run just before it. Per-trial start-up:
    Tune starts the trial (``trial_clock.jsonl``) -> its first epoch begins, median
    over the trials that are not their slot's first. Parallel efficiency = (sum of
    trial times / concurrency) / search wall time, a trial's time running from its
    start to its last epoch's end (start-up counts as lost), wall time the
    ``tuner.fit`` span (``summary.json`` ``wall_seconds``). "Training share" puts only
    the epochs' own time in the numerator. The fast path's reports also carry each
    trial actor's resident memory at the start of each of its trials.
(p) Population Based Training: ``jobs/configs/pbt_mnist.yaml`` (population 4,
    perturbed every 2 epochs, 2 members at a time here) with the benchmark's data,
    batch and ``--search-epochs``, run right after (e): time to the target as in
    (f), compared with (e)'s in the same repetition, the best member's test
    accuracy, and the exploit cost, median over the copies: from the end of the
    epoch after which a member copied another until Tune starts a trial in its
    slot, plus from Tune starting the member again (in a reused actor, from the
    donor's checkpoint) to its next epoch begun; its wait for a turn in between
    (another member training in the slot) is not counted.
(q) the same with PB2 (``jobs/configs/pb2_mnist.yaml``: a Gaussian process picks a
    copy's LR): the same figures, compared with (e) and (p) of the same repetition.
(m) memory: a search of 1-epoch trials, 17 per slot on the fast path: each trial
    actor's resident memory after its 16th trial over after its 2nd (first repetition only).
(f) time from command start until some trial ends an epoch with validation
    accuracy >= 98.0% (``--target``; the validation split, not the test set):
    ``orchestrator tune`` of (e) (epoch end = ``started_at + epoch_seconds``) vs
    KerasTuner's Hyperband (max_epochs = the search's, factor 3) on the same space,
    data, batch, steps_per_execution and machine (``bench.kt_hyperband``, Keras 3,
    stopped once it gets there, or after ``--kt-max-seconds``).

Sections run in that order, then again (``--repeat``, default 3): a b c e0 e f p, a b
c ... Every figure is the median [min-max] over the repetitions; every ratio is
taken within one repetition (e.g. (b) over the (a') run just before it), then
summarised the same way; a target whose range straddles it is "not settled".

It prints a table and writes ``bench/out/latest.json`` (``--out``): the machine
(cores, CPU model, GPUs, load average before/after), versions, every figure
and its ratio to (a). Subprocess logs and run directories go to
``bench/out/logs/`` and ``bench/out/runs/``. Each Ray that the subprocesses start
is their own (``RAY_TMPDIR`` is private to the benchmark) and ends with them.
Numbers are only worth comparing on an otherwise idle machine: the table
shows the 1-minute load average before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Optional

import yaml

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "bench" / "out" / "latest.json"
TUNE_CONFIG = ROOT / "jobs" / "configs" / "tune_mnist.yaml"
PBT_CONFIG = ROOT / "jobs" / "configs" / "pbt_mnist.yaml"
PB2_CONFIG = ROOT / "jobs" / "configs" / "pb2_mnist.yaml"
SECTIONS = ("a", "b", "c", "e", "p", "q", "f", "m")  # (d) comes from (b) and (c)

TARGETS = {
    "b_epoch_ratio": 1.10,       # (b) steady epoch time <= 1.10 x (a') (plain fit, same steps_per_execution)
    "c_throughput_ratio": 0.70,  # (c) steady samples/s >= 0.7 x (a)
    "d_cold_start_s": 8.0,       # (d) command start -> first epoch begun <= 8 s
    "e_startup_s": 1.0,          # (e) per-trial start-up (Tune starts it -> first epoch begun), median <= 1 s
    "e_efficiency": 0.95,        # (e) parallel efficiency, trial time counted from its start, >= 0.95
    "e_wall_ratio": 0.5,         # (e) search wall time <= 0.5 x the Ray Train path's (e0), same repetition
    "f_time_to_target_s": 10.0,  # (f) time to target <= 10 s
    "f_vs_kerastuner": 8.0,      # (f) KerasTuner's time to target / ours >= 8
    "m_memory_ratio": 1.2,       # (m) a trial actor's resident memory after its 16th trial <= 1.2 x after its 2nd
    "p_vs_asha": 1.0,            # (p) PBT's time to target <= (e)'s (the ASHA search), same repetition
    "p_exploit_s": 1.0,          # (p) exploit cost: slot hand-over + the member's restart <= 1 s
}
MEMORY_TRIALS_PER_SLOT = 17  # (m): the 17th trial's start is "after the 16th"


# ----------------------------------------------------------------- machine

def machine_info() -> dict:
    model = None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpus: list[str] = []
    if shutil.which("nvidia-smi"):
        try:
            out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20).stdout
            gpus = [line.strip() for line in out.splitlines() if line.strip()]
        except (OSError, subprocess.SubprocessError):
            pass
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    memory_gib = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory_gib = round(int(line.split()[1]) / 1024 ** 2, 1)
    except OSError:
        pass
    return {"hostname": platform.node(), "cores": cores, "cpu_model": model, "gpus": gpus,
            "memory_gib": memory_gib, "platform": platform.platform()}


def versions() -> dict:
    out = {"python": platform.python_version()}
    for dist in ("tensorflow", "tf-keras", "keras", "ray", "keras-tuner", "numpy"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = None
    return out


def load_average() -> Optional[list[float]]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def wait_idle(limit_s: float, max_load: float) -> float:
    """Wait (up to ``limit_s``) until the 1-minute load average is below ``max_load``; seconds waited."""
    started = time.time()
    while (load := os.getloadavg()[0]) >= max_load and time.time() - started < limit_s:
        print(f"  waiting for an idle machine: load {load:.2f} >= {max_load} "
              f"({time.time() - started:.0f}/{limit_s:.0f} s)", flush=True)
        time.sleep(15)
    return time.time() - started


# ----------------------------------------------------------------- subprocesses

def _stop(proc: subprocess.Popen) -> None:
    """Stop a subprocess we started, and its process group, politely first (Ctrl-C lets Ray shut down)."""
    for sig, grace in ((signal.SIGINT, 30), (signal.SIGTERM, 15), (signal.SIGKILL, 5)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(grace)
            return
        except subprocess.TimeoutExpired:
            continue


def run_logged(label: str, cmd: list[str], env: dict, log_dir: Path, timeout: float) -> dict:
    """Run ``cmd`` in its own process group, output to ``log_dir/label.log``; wall-clock start/end."""
    log_path = log_dir / f"{label}.log"
    print(f"  [{label}] {' '.join(cmd[1:] if cmd[0] == sys.executable else cmd)}", flush=True)
    with open(log_path, "w") as log:
        started = time.time()
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT,
                                start_new_session=True)
        try:
            rc = proc.wait(timeout)
        except subprocess.TimeoutExpired:
            _stop(proc)
            rc = None
        except KeyboardInterrupt:
            _stop(proc)
            raise
    ended = time.time()
    status = "ok" if rc == 0 else ("timeout" if rc is None else f"exit {rc}")
    print(f"  [{label}] {status} in {ended - started:.1f} s (log: {log_path})", flush=True)
    return {"started_at": started, "ended_at": ended, "seconds": ended - started, "rc": rc,
            "status": status, "log": str(log_path)}


def base_env() -> dict:
    env = dict(os.environ)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env["PYTHONUNBUFFERED"] = "1"
    env.pop("RAY_ADDRESS", None)  # each run starts its own local Ray
    # A private Ray temp dir: a `ray start` of someone else on this machine is never joined.
    env.setdefault("RAY_TMPDIR", f"/tmp/bench-ray-{os.getpid()}")
    Path(env["RAY_TMPDIR"]).mkdir(parents=True, exist_ok=True)
    return env


# ----------------------------------------------------------------- figures

def mean(values: list[float]) -> Optional[float]:
    return sum(values) / len(values) if values else None


def epoch_figures(history: list[dict], examples: int) -> dict:
    """First-epoch and steady (epochs 2..N) time, samples/s and cycle from a history."""
    seconds = [h["epoch_seconds"] for h in history]
    steady = seconds[1:]
    starts = [h.get("started_at") for h in history]
    cycles = [b - a for a, b in zip(starts, starts[1:]) if a and b]
    steady_s = mean(steady)
    return {
        "epochs": len(history),
        "epoch_seconds": seconds,
        "first_epoch_s": seconds[0] if seconds else None,
        "steady_epoch_s": steady_s,
        "steady_samples_per_s": examples / steady_s if steady_s else None,
        "mean_epoch_s_all": mean(seconds),
        "samples_per_s_all": examples * len(seconds) / sum(seconds) if seconds else None,
        # epoch start -> next epoch start, epochs 2..N: adds the checkpoint + report after each epoch
        "steady_cycle_s": mean(cycles[1:]) if len(cycles) > 1 else mean(cycles),
        "last_val_accuracy": history[-1].get("val_accuracy") if history else None,
    }


def ratio(value: Optional[float], base: Optional[float]) -> Optional[float]:
    return value / base if value is not None and base else None


# ----------------------------------------------------------------- sections

def spec_steps_per_execution() -> int:
    from orchestrator.spec import TrainingSpec  # pure data: no TensorFlow, no Ray

    return TrainingSpec().steps_per_execution


def run_baseline(label: str, args, env, dirs, steps_per_execution: int,
                 extra: tuple = ()) -> tuple[dict, Optional[dict]]:
    """``bench.baseline`` in its own process: its record, and its JSON (None when it failed)."""
    out = dirs["runs"] / f"{label}.json"
    cmd = [sys.executable, "-m", "bench.baseline", "--epochs", str(args.epochs),
           "--global-batch", str(args.global_batch), "--steps-per-execution", str(steps_per_execution),
           "--out", str(out), *extra]
    if args.train_examples:
        cmd += ["--train-examples", str(args.train_examples)]
    if args.data:
        cmd += ["--data", args.data]
    proc = run_logged(label, cmd, {**env, "TF_USE_LEGACY_KERAS": "1"}, dirs["logs"], args.timeout)
    return proc, (json.loads(out.read_text()) if proc["rc"] == 0 else None)


def section_a(args, env, dirs, steps_per_execution: int = 1) -> dict:
    label = "a_baseline" if steps_per_execution == 1 else f"a_baseline_spe{steps_per_execution}"
    proc, data = run_baseline(label, args, env, dirs, steps_per_execution)
    if data is None:
        return {"error": proc["status"], "process": proc}
    history = data["history"]
    return {"process": proc, "steps_per_execution": steps_per_execution,
            "threads": data["threads"], "test_accuracy": data["test_accuracy"],
            "cold_start_s": history[0]["started_at"] - proc["started_at"],
            **epoch_figures(history, data["train_examples"])}


def _task_config(args) -> dict:
    """The task section: the default task (the tutorial's MLP), reading --data if given."""
    return {"name": "mnist_mlp", **({"path": args.data} if args.data else {})}


def _data_config(args) -> dict:
    data: dict = {}
    if args.train_examples:
        data["train_examples"] = args.train_examples
    if args.validation_examples:
        data["validation_examples"] = args.validation_examples
    return data


def section_train(label: str, workers: int, args, env, dirs, cores: int) -> dict:
    replicas = workers * max(1, args.gpus_per_worker)
    if args.global_batch % replicas:
        return {"error": f"global batch {args.global_batch} is not divisible by {replicas} replicas"}
    cpus = args.cpus_per_worker or max(1, cores // workers)
    training = {"epochs": args.epochs, "batch_size_per_worker": args.global_batch // replicas}
    if args.steps_per_execution:
        training["steps_per_execution"] = args.steps_per_execution
    config = {"training": training,
              "scaling": {"workers": workers, "cpus_per_worker": cpus, "gpus_per_worker": args.gpus_per_worker},
              "task": _task_config(args), "data": _data_config(args)}
    config_path = dirs["runs"] / f"{label}.yaml"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    name = f"bench-{label}"
    cmd = [sys.executable, "-m", "orchestrator.cli", "train", "--config", str(config_path),
           "--storage", str(dirs["runs"]), "--name", name, "--overwrite"]
    proc = run_logged(label, cmd, env, dirs["logs"], args.timeout)
    result_file = dirs["runs"] / name / "result.json"
    if proc["rc"] != 0 or not result_file.exists():
        return {"error": proc["status"], "process": proc}
    result = json.loads(result_file.read_text())
    history = result["history"]
    evaluation = result.get("evaluation") or {}
    return {"process": proc, "workers": workers, "cpus_per_worker": cpus,
            "gpus_per_worker": args.gpus_per_worker, "batch_size_per_replica": args.global_batch // replicas,
            "steps_per_execution": result["spec"]["training"]["steps_per_execution"],
            "test_accuracy": (evaluation.get("final_weights") or {}).get("accuracy"),
            "train_wall_s": result.get("wall_seconds"),
            "cold_start_s": history[0]["started_at"] - proc["started_at"] if history[0].get("started_at") else None,
            **epoch_figures(history, result["data"]["train"])}


def section_c_floor(args, env, dirs) -> dict:
    """(c') compute + one all-reduce per step for 2 MWMS processes, no Ray, no Keras loop: (c)'s ceiling."""
    cmd = [sys.executable, "-m", "bench.allreduce_floor", "--global-batch", str(args.global_batch)]
    proc = run_logged("c_floor", cmd, env, dirs["logs"], args.timeout)
    if proc["rc"] != 0:
        return {"error": proc["status"], "process": proc}
    lines = Path(proc["log"]).read_text().strip().splitlines()
    return {"process": proc, **json.loads(lines[-1])}


def tune_config(args, dirs, fast_path: bool = True) -> Path:
    """jobs/configs/tune_mnist.yaml with the benchmark's data, trials and epochs; ``fast_path``: search.fast_path."""
    config = yaml.safe_load(TUNE_CONFIG.read_text())
    config["data"] = {**(config.get("data") or {}), **_data_config(args)}
    config["task"] = _task_config(args)
    workers = (config.get("search") or {}).get("workers_per_trial") or (config.get("scaling") or {}).get("workers", 1)
    config["training"] = {**config["training"], "epochs": args.search_epochs,
                          "batch_size_per_worker": args.global_batch // workers}
    if args.steps_per_execution:
        config["training"]["steps_per_execution"] = args.steps_per_execution
    config["search"]["samples"] = args.trials
    config["search"]["asha"]["grace_period"] = min(config["search"]["asha"]["grace_period"], args.search_epochs)
    config["search"]["fast_path"] = fast_path
    path = dirs["runs"] / ("tune.yaml" if fast_path else "tune-ray-train.yaml")
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def _tune_trial_rows(run_dir: Path) -> dict[str, list[dict]]:
    """Tune's own per-trial records: <search>/<trial dir>/result.json, one JSON object per report."""
    trials: dict[str, list[dict]] = {}
    for result_file in run_dir.glob("*/result.json"):
        rows = [json.loads(line) for line in result_file.read_text().splitlines() if line.strip()]
        if rows:
            trials[rows[0].get("trial_id") or result_file.parent.name] = rows
    return trials


def _trial_clock(run_dir: Path) -> dict[str, float]:
    """When Tune started each trial (its first start), from the search's trial_clock.jsonl."""
    started: dict[str, float] = {}
    path = run_dir / "trial_clock.jsonl"
    for line in path.read_text().splitlines() if path.exists() else []:
        row = json.loads(line)
        started.setdefault(row["trial_id"], row["started_at"])
    return started


def startup_figures(trials: dict[str, list[dict]], started: dict[str, float], concurrency: int) -> dict:
    """Per-trial start-up: Tune starts the trial -> its first epoch begins; each slot's first trial left out.

    The first ``concurrency`` trials to start are each a slot's first (they also
    start the slot's process); the median is over the others.
    """
    startup = {t: rows[0]["started_at"] - started[t] for t, rows in trials.items()
               if t in started and rows and rows[0].get("started_at")}
    order = sorted(startup, key=lambda t: started[t])
    later = [startup[t] for t in order[concurrency:]]
    return {"startup_s": startup, "startup_median_s": median(later),
            "startup_first_in_slot_s": [startup[t] for t in order[:concurrency]]}


def memory_figures(trials: dict[str, list[dict]]) -> dict:
    """Resident memory of each reused trial actor at the start of each trial it ran (fast path only)."""
    by_actor: dict = {}
    for rows in trials.values():
        first = rows[0] if rows else {}
        if first.get("actor_pid") is not None and first.get("actor_rss_mb") is not None:
            by_actor.setdefault(str(first["actor_pid"]), {})[int(first["actor_trials"])] = first["actor_rss_mb"]
    return {"actor_rss_mb": {pid: dict(sorted(v.items())) for pid, v in by_actor.items()}}


def section_e(args, env, dirs, cores: int, config_path: Path, label: str = "e_search") -> dict:
    name = f"bench-{label}"
    cmd = [sys.executable, "-m", "orchestrator.cli", "tune", "--config", str(config_path),
           "--storage", str(dirs["runs"]), "--name", name, "--overwrite"]
    proc = run_logged(label, cmd, env, dirs["logs"], args.timeout)
    run_dir = dirs["runs"] / name
    summary_file = run_dir / "summary.json"
    if proc["rc"] != 0 or not summary_file.exists():
        return {"error": proc["status"], "process": proc}
    summary = json.loads(summary_file.read_text())
    config = yaml.safe_load(config_path.read_text())
    trial_cpus = config["scaling"]["workers"] * config["scaling"].get("cpus_per_worker", 1)
    concurrency = max(1, min(args.trials, cores // max(1, int(trial_cpus))))
    trials = _tune_trial_rows(run_dir)
    trial_seconds = {t: rows[-1]["time_total_s"] for t, rows in trials.items()}
    # Trials that ran at once (Tune's clock: end = last report, start = end - time_total_s).
    # More than `concurrency` means trials held their slot while waiting for workers:
    # their time_total_s then counts waiting, and the efficiency below is not meaningful.
    spans = [(rows[-1]["timestamp"] - rows[-1]["time_total_s"], rows[-1]["timestamp"]) for rows in trials.values()]
    max_overlap = max((sum(1 for a, b in spans if a <= t < b) for t, _ in spans), default=0)
    trained_seconds = {t: sum(r.get("epoch_seconds", 0.0) for r in rows) for t, rows in trials.items()}
    wall = summary["wall_seconds"]
    total = sum(trial_seconds.values())
    started = _trial_clock(run_dir)
    # Trial time from the moment Tune started it to its last epoch's end: start-up counts as lost.
    from_start = {t: rows[-1]["started_at"] + rows[-1]["epoch_seconds"] - started[t]
                  for t, rows in trials.items() if t in started and rows[-1].get("started_at")}
    # (f): the end of the first epoch, in any trial, at or above the target
    hits = [(r["started_at"] + r["epoch_seconds"], t, r) for t, rows in trials.items() for r in rows
            if r.get("val_accuracy", 0.0) >= args.target and r.get("started_at")]
    first = min(hits, key=lambda h: h[0]) if hits else None
    best = summary.get("best_trial") or {}
    evaluation = summary.get("evaluation") or {}
    return {
        "process": proc, "trials": len(trials), "trials_in_summary": len(summary["results"]),
        "trials_errored": sum(1 for r in summary["results"] if r["status"] == "ERROR"),
        "concurrency": concurrency, "max_trials_at_once": max_overlap,
        "efficiency_valid": max_overlap <= concurrency,
        "wall_s": wall, "command_s": proc["seconds"],
        "sum_trial_s": total, "trial_s": trial_seconds,
        "efficiency_tune_clock": (total / concurrency) / wall if wall else None,
        "efficiency": (sum(from_start.values()) / concurrency) / wall if wall and from_start else None,
        **startup_figures(trials, started, concurrency), **memory_figures(trials),
        "sum_epoch_s": sum(trained_seconds.values()),
        "training_share": (sum(trained_seconds.values()) / concurrency) / wall if wall else None,
        "epochs_run": sum(len(rows) for rows in trials.values()),
        "stop_reasons": {r["trial_id"]: r["stop_reason"] for r in summary["results"]},
        "best_val_accuracy": max((r.get("val_accuracy", 0.0) for rows in trials.values() for r in rows), default=None),
        "best_trial": {k: best.get(k) for k in ("trial_id", "config", "best_val_loss", "best_val_accuracy")},
        "best_test_accuracy": (evaluation.get("final_weights") or {}).get("accuracy"),
        "target": args.target,
        "time_to_target_s": first[0] - proc["started_at"] if first else None,
        "target_trial": {"trial_id": first[1], "epoch": first[2]["epoch"],
                         "val_accuracy": first[2]["val_accuracy"]} if first else None,
    }


def pbt_config(args, dirs, source: Path = PBT_CONFIG) -> Path:
    """jobs/configs/pbt_mnist.yaml (or ``source``) with the benchmark's data, batch and epochs."""
    config = yaml.safe_load(source.read_text())
    config["data"] = {**(config.get("data") or {}), **_data_config(args)}
    config["task"] = _task_config(args)
    config["training"] = {**config["training"], "epochs": args.search_epochs, "batch_size_per_worker": args.global_batch}
    if args.steps_per_execution:
        config["training"]["steps_per_execution"] = args.steps_per_execution
    config["search"]["samples"] = min(config["search"]["samples"], max(2, args.trials))  # quick: a population of 2
    config["search"]["pbt"]["perturbation_interval"] = min(config["search"]["pbt"]["perturbation_interval"],
                                                           max(1, args.search_epochs - 1))
    path = dirs["runs"] / source.name
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def _trial_starts(run_dir: Path) -> list[tuple[float, str]]:
    """Every start Tune made (first starts and restarts), as (time, trial_id), in order."""
    path = run_dir / "trial_clock.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    return sorted((r["started_at"], r["trial_id"]) for r in rows)


def exploit_costs(summary: dict, trials: dict[str, list[dict]], run_dir: Path) -> list[float]:
    """For each copy, what it cost: the hand-over of the copying member's slot plus its restart.

    The member pauses at the end of the epoch it copies at (read from its own
    segment that ended there, ``trials/<id>*``: Tune's rows of a member start
    over at each copy). Its slot is free once Tune starts a trial in it (the next
    start after the pause, any member's: Tune hands the actor on); the member's
    own restart runs from Tune starting it again to its next epoch begun. When
    members take turns (a population larger than the slots), the wait for its
    turn in between is another member training, not a cost of the copy.
    """
    starts = _trial_starts(run_dir)
    costs = []
    for row in summary["results"]:
        member = row["trial_id"]
        next_start = {r["epoch"]: r["started_at"] for r in trials.get(member, []) if r.get("started_at")}
        for copy in row.get("copies") or []:
            resumed_at = next_start.get(copy["epoch"] + 1)
            paused = None
            for state_file in (run_dir / "trials").glob(f"{member}*/checkpoint_*/state.json"):
                history = json.loads(state_file.read_text()).get("history") or []
                if history and history[-1]["epoch"] == copy["epoch"] and history[-1].get("started_at"):
                    end = history[-1]["started_at"] + history[-1]["epoch_seconds"]
                    if resumed_at and end < resumed_at:
                        paused = max(paused or 0, end)
            if paused is None:
                continue
            handed_over = next((t for t, _ in starts if t >= paused), None)
            restarted = max((t for t, trial in starts if trial == member and t <= resumed_at), default=None)
            if handed_over is None or restarted is None or restarted < paused:
                continue
            costs.append((handed_over - paused) + (resumed_at - restarted))
    return costs


def section_p(args, env, dirs, source: Path = PBT_CONFIG, label: str = "p_pbt") -> dict:
    """(p) a PBT search, or (q) a PB2 one: time to the target, best test accuracy, exploit cost."""
    name = f"bench-{label}"
    cmd = [sys.executable, "-m", "orchestrator.cli", "tune", "--config", str(pbt_config(args, dirs, source)),
           "--storage", str(dirs["runs"]), "--name", name, "--overwrite"]
    proc = run_logged(label, cmd, env, dirs["logs"], args.timeout)
    run_dir = dirs["runs"] / name
    if proc["rc"] != 0 or not (run_dir / "summary.json").exists():
        return {"error": proc["status"], "process": proc}
    summary = json.loads((run_dir / "summary.json").read_text())
    trials = _tune_trial_rows(run_dir)
    hits = [r["started_at"] + r["epoch_seconds"] for rows in trials.values() for r in rows
            if r.get("val_accuracy", 0.0) >= args.target and r.get("started_at")]
    costs = exploit_costs(summary, trials, run_dir)
    return {
        "process": proc, "members": len(summary["results"]), "wall_s": summary.get("wall_seconds"),
        "time_to_target_s": min(hits) - proc["started_at"] if hits else None,
        "best_test_accuracy": ((summary.get("evaluation") or {}).get("final_weights") or {}).get("accuracy"),
        "copies": len(costs), "exploit_s": costs, "exploit_median_s": median(costs),
    }


def section_m(args, env, dirs, cores: int) -> dict:
    """(m) memory of a reused trial actor: a search of 1-epoch trials, 17 per slot, on a data subset."""
    config = yaml.safe_load(tune_config(args, dirs).read_text())
    slots = max(1, cores // int(config["scaling"].get("cpus_per_worker", 1)))
    config["data"] = {"train_examples": 5000, "validation_examples": 1000, "test_examples": 1000}
    config["training"]["epochs"] = 1
    config["search"]["samples"] = MEMORY_TRIALS_PER_SLOT * slots
    config["search"]["asha"] = {"enabled": False}
    path = dirs["runs"] / "tune-memory.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    name = "bench-m_memory"
    cmd = [sys.executable, "-m", "orchestrator.cli", "tune", "--config", str(path),
           "--storage", str(dirs["runs"]), "--name", name, "--overwrite"]
    proc = run_logged("m_memory", cmd, env, dirs["logs"], args.timeout)
    if proc["rc"] != 0:
        return {"error": proc["status"], "process": proc}
    actors = memory_figures(_tune_trial_rows(dirs["runs"] / name))["actor_rss_mb"]
    # Measured at a trial's start: the 3rd's is "after the 2nd", the 17th's "after the 16th".
    pairs = {pid: (rss.get(3), rss.get(MEMORY_TRIALS_PER_SLOT)) for pid, rss in actors.items()}
    ratios = [late / early for early, late in pairs.values() if early and late]
    return {"process": proc, "actor_rss_mb": actors, "after_2nd_and_16th_mb": pairs,
            "worst_ratio": max(ratios) if ratios else None,
            "after_2nd_mb": max((p[0] for p in pairs.values() if p[0]), default=None),
            "after_16th_mb": max((p[1] for p in pairs.values() if p[1]), default=None)}


def section_f(args, env, dirs, config_path: Path) -> dict:
    out = dirs["runs"] / "f_kerastuner.json"
    cmd = [sys.executable, "-m", "bench.kt_hyperband", "--config", str(config_path),
           "--target", str(args.target), "--max-seconds", str(args.kt_max_seconds),
           "--directory", str(dirs["runs"] / "kerastuner"), "--out", str(out)]
    kt_env = {k: v for k, v in env.items() if k != "TF_USE_LEGACY_KERAS"}
    proc = run_logged("f_kerastuner", cmd, kt_env, dirs["logs"], args.kt_max_seconds + 120)
    if proc["rc"] != 0 or not out.exists():
        return {"error": proc["status"], "process": proc}
    data = json.loads(out.read_text())
    found = data.get("found")
    return {"process": proc, "stopped": data["stopped"], "epochs_trained": data["epochs_trained"],
            "trials_started": data["trials_started"], "max_epochs": data["max_epochs"], "factor": data["factor"],
            "time_to_target_s": found["reached_at"] - proc["started_at"] if found else None,
            "target_trial": found, "keras": data["keras"], "keras_tuner": data["keras_tuner"]}


# ----------------------------------------------------------------- report

def _fmt(value, digits=2) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.{digits}f}"
    return str(value)


def median(values: list) -> Optional[float]:
    values = sorted(v for v in values if v is not None)
    if not values:
        return None
    mid = len(values) // 2
    return values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2


def build_rows(sections: dict, config: dict) -> list[dict]:
    """One repetition's rows: figure, value, ratio (within this repetition), target and the test it meets.

    ``ok`` takes a value (or ratio, see ``on``) and says whether it meets the target.
    """
    a, b, c, e, f = (sections.get(k) or {} for k in ("a", "b", "c", "e", "f"))
    a_spe = sections.get("a_spe") or {}
    e0 = sections.get("e0") or {}
    rows: list[dict] = []

    def row(label, value, base=None, target="", ok=None, on="value", digits=2):
        rows.append({"figure": label, "value": value, "ratio": ratio(value, base) if base else None,
                     "target": target, "ok": ok, "on": on, "digits": digits})

    row("(a) tf-keras fit: steady epoch s", a.get("steady_epoch_s"), a.get("steady_epoch_s"))
    row("(a) first epoch s (traces)", a.get("first_epoch_s"), a.get("first_epoch_s"))
    row("(a) cold start s (process -> epoch 1)", a.get("cold_start_s"), a.get("cold_start_s"))
    if a_spe and "error" not in a_spe:
        row(f"(a') fit, steps_per_execution {a_spe['steps_per_execution']}: steady epoch s",
            a_spe.get("steady_epoch_s"), a.get("steady_epoch_s"))
    # (b) against (a'), plain fit with the same steps_per_execution: the headline; (c) against (a).
    base_b = a_spe if a_spe and "error" not in a_spe else a
    for key, s, base in (("b", b, base_b), ("c", c, a)):
        if not s or "error" in s:
            if key in config.get("only", SECTIONS):
                row(f"({key}) {s.get('error', 'not run')}", None)
            continue
        vs = "(a')" if base is a_spe else "(a)"
        tag = f"({key}) {s['workers']} worker{'s' if s['workers'] > 1 else ''}"
        row(f"{tag}: steady epoch s, ratio vs {vs}", s["steady_epoch_s"], base.get("steady_epoch_s"),
            "<= 1.10x" if key == "b" else "",
            (lambda x: x <= TARGETS["b_epoch_ratio"]) if key == "b" else None, on="ratio")
        row(f"{tag}: steady cycle s (+ckpt, report)", s["steady_cycle_s"], base.get("steady_epoch_s"))
        row(f"{tag}: first epoch s", s["first_epoch_s"], base.get("first_epoch_s"))
        row(f"{tag}: steady samples/s", s["steady_samples_per_s"], base.get("steady_samples_per_s"),
            ">= 0.70x" if key == "c" else "",
            (lambda x: x >= TARGETS["c_throughput_ratio"]) if key == "c" else None, on="ratio")
    floor = sections.get("c_floor") or {}
    if floor and "error" not in floor:
        row("(c') 2-process step floor ms (compute + all-reduce)", floor["step_floor_ms"])
        row("(c') floor samples/s (no Ray, no Keras loop)", floor["floor_samples_per_s"],
            a.get("steady_samples_per_s"))
    elif floor:
        row(f"(c') 2-process step floor: {floor.get('error')}", None)
    for key, s in (("b", b), ("c", c)):
        if s and s.get("cold_start_s") is not None:
            row(f"(d) cold start s, {s['workers']} worker(s)", s["cold_start_s"], None,
                "<= 8 s", lambda x: x <= TARGETS["d_cold_start_s"])
    for key, s, path in (("e0", e0, "Ray Train per trial"), ("e", e, "fast path")):
        if not s:
            continue
        if "error" in s:
            row(f"({key}) search, {path}: {s.get('error')}", None)
            continue
        fast = key == "e"
        row(f"({key}) search, {path}: wall s" + (", ratio vs (e0)" if fast else ""), s["wall_s"],
            e0.get("wall_s") if fast and e0 and "error" not in e0 else None,
            "<= 0.50x" if fast else "", (lambda x: x <= TARGETS["e_wall_ratio"]) if fast else None, on="ratio")
        row(f"({key}) per-trial start-up s (median, not slots' first)", s.get("startup_median_s"), None,
            "<= 1.0 s" if fast else "", (lambda x: x <= TARGETS["e_startup_s"]) if fast else None)
        row(f"({key}) parallel efficiency (trial time from its start)", s.get("efficiency"), None,
            ">= 0.95" if fast else "", (lambda x: x >= TARGETS["e_efficiency"]) if fast else None, digits=3)
        row(f"({key}) training share (sum epoch s / conc. / wall)", s.get("training_share"), digits=3)
        row(f"({key}) s to val acc >= {config['target'] * 100:.1f}%", s.get("time_to_target_s"), None,
            "<= 10 s" if fast else "", (lambda x: x <= TARGETS["f_time_to_target_s"]) if fast else None)
        if fast:
            rss = [v for actor in (s.get("actor_rss_mb") or {}).values() for v in actor.values()]
            if rss:
                row("(e) trial actor resident MB, highest at a trial's start", max(rss), digits=0)
    p = sections.get("p") or {}
    if p and "error" not in p:
        ours = e.get("time_to_target_s") if e and "error" not in e else None
        row(f"(p) PBT: s to val acc >= {config['target'] * 100:.1f}%, ratio vs (e)", p.get("time_to_target_s"),
            ours, "<= 1.00x", lambda x: x <= TARGETS["p_vs_asha"], on="ratio")
        row("(p) PBT: best member's test accuracy", p.get("best_test_accuracy"), digits=4)
        row("(p) PBT: exploit cost s (median over its copies)", p.get("exploit_median_s"), None,
            "<= 1.0 s", lambda x: x <= TARGETS["p_exploit_s"])
    elif p:
        row(f"(p) PBT: {p.get('error')}", None)
    q = sections.get("q") or {}
    if q and "error" not in q:
        ours = e.get("time_to_target_s") if e and "error" not in e else None
        row(f"(q) PB2: s to val acc >= {config['target'] * 100:.1f}%, ratio vs (e)", q.get("time_to_target_s"), ours)
        pbt = p.get("time_to_target_s") if p and "error" not in p else None
        row("(q) PB2: s to the target, ratio vs (p) PBT", q.get("time_to_target_s"), pbt)
        row("(q) PB2: best member's test accuracy", q.get("best_test_accuracy"), digits=4)
        row("(q) PB2: exploit cost s (median over its copies)", q.get("exploit_median_s"))
    elif q:
        row(f"(q) PB2: {q.get('error')}", None)
    if f and "error" not in f:
        theirs = f.get("time_to_target_s")
        row(f"(f) KerasTuner Hyperband: s to val acc >= {config['target'] * 100:.1f}%", theirs)
        if e and "error" not in e:
            ours = e.get("time_to_target_s")
            row("(f) KerasTuner's time / (e)'s (how many times faster)",
                theirs / ours if theirs and ours else None, None, ">= 8x",
                lambda x: x >= TARGETS["f_vs_kerastuner"])
    elif f:
        row(f"(f) KerasTuner: {f.get('error')}", None)
    m = sections.get("m") or {}
    if m and "error" not in m:
        row("(m) trial actor resident MB after its 2nd trial", m.get("after_2nd_mb"), digits=0)
        row("(m) ... after its 16th trial, ratio to after the 2nd (worst actor)", m.get("after_16th_mb"), None,
            "<= 1.20x", lambda x: x <= TARGETS["m_memory_ratio"], digits=0)
        rows[-1]["ratio"] = m.get("worst_ratio")
        rows[-1]["on"] = "ratio"
    elif m:
        row(f"(m) {m.get('error')}", None)
    return rows


def aggregate(repetitions: list[list[dict]]) -> list[dict]:
    """Every figure over the repetitions: median [min-max] of its value and of its within-repetition ratio.

    "met" is "yes" when the whole range meets the target, "NO" when none of it
    does, and "not settled" when the range straddles the target.
    """
    order: list[str] = []
    by_figure: dict[str, list[dict]] = {}
    for rows in repetitions:
        for r in rows:
            if r["figure"] not in by_figure:
                order.append(r["figure"])
            by_figure.setdefault(r["figure"], []).append(r)
    out = []
    for figure in order:
        rows = by_figure[figure]
        first = rows[0]
        values = [r["value"] for r in rows if r["value"] is not None]
        ratios = [r["ratio"] for r in rows if r["ratio"] is not None]
        judged = ratios if first["on"] == "ratio" else values
        met = ""
        if first["ok"] is not None and judged:
            oks = {bool(first["ok"](x)) for x in (min(judged), max(judged))}
            met = "yes" if oks == {True} else "NO" if oks == {False} else "not settled"
        elif first["ok"] is not None:
            met = "-"  # not measured (e.g. never reached the target, or no trial after the slots' first)
        out.append({"figure": figure, "n": len(values),
                    "value": median(values), "value_min": min(values, default=None),
                    "value_max": max(values, default=None),
                    "ratio": median(ratios), "ratio_min": min(ratios, default=None),
                    "ratio_max": max(ratios, default=None),
                    "target": first["target"], "met": met, "digits": first["digits"]})
    return out


def _spread(mid, low, high, digits, suffix="") -> str:
    if mid is None:
        return "-"
    if low == high:
        return f"{_fmt(mid, digits)}{suffix}"
    return f"{_fmt(mid, digits)}{suffix} [{_fmt(low, digits)}-{_fmt(high, digits)}]"


def render(r: dict) -> str:
    rows = [(a["figure"], _spread(a["value"], a["value_min"], a["value_max"], a["digits"]),
             _spread(a["ratio"], a["ratio_min"], a["ratio_max"], 2, "x"), a["target"], a["met"])
            for a in r["table"]]
    m, v = r["machine"], r["versions"]
    header = ("figure", "median [min-max]", "ratio (same rep.)", "target", "met")
    widths = [max(len(str(x[i])) for x in rows + [header]) for i in range(5)]
    lines = [
        f"bench {r['date']}  {m['cores']} cores {m['cpu_model']}, {m['memory_gib']} GiB, "
        f"GPU: {', '.join(m['gpus']) or 'none'}",
        f"  load average (1/5/15 min) before {r['load_before']}, after {r['load_after']}"
        + (f" (waited {r['waited_for_idle_s']:.0f} s for idle)" if r.get("waited_for_idle_s") else ""),
        f"  python {v['python']}, tensorflow {v['tensorflow']}, tf-keras {v['tf-keras']}, keras {v['keras']}, "
        f"ray {v['ray']}, keras-tuner {v['keras-tuner']}",
        f"  {r['config']['repeat']} repetition(s), interleaved; global batch {r['config']['global_batch']}, "
        f"{r['config']['epochs']} epochs for (a)-(c), "
        f"search: {r['config']['trials']} trials x up to {r['config']['search_epochs']} epochs"
        + ("  [--quick: not comparable]" if r["config"]["quick"] else ""),
        "",
        "  ".join(h.ljust(w) for h, w in zip(header, widths)),
        "  ".join("-" * w for w in widths),
    ]
    lines += ["  ".join(str(x).ljust(w) for x, w in zip(rw, widths)).rstrip() for rw in rows]
    lines.append("")
    lines.append("ratio: computed within each repetition ((b) over (a'), (c) over (a), (e) wall over (e0)), "
                 "then median [min-max]; 'not settled': the range straddles the target.")
    return "\n".join(lines)


# ----------------------------------------------------------------- entry

def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="smoke run: 10k train / 2k val examples, 2 epochs, 2 trials x 2 epochs, KerasTuner 60 s")
    p.add_argument("--repeat", type=int, help="repetitions, interleaved (a b c e0 e f, a b ...): every figure "
                   "is their median [min-max], every ratio taken within one (default 3; quick 1)")
    p.add_argument("--epochs", type=int, help="epochs of (a)-(c) (default 3; quick 2)")
    p.add_argument("--global-batch", type=int, default=128, help="global batch of every run (default 128)")
    p.add_argument("--gpus-per-worker", type=int, default=0, help="GPUs per worker in (b) and (c)")
    p.add_argument("--cpus-per-worker", type=float, default=None,
                   help="CPUs per worker in (b) and (c) (default: cores / workers)")
    p.add_argument("--steps-per-execution", type=int, default=None,
                   help="override training.steps_per_execution in (b), (c), (e) (default: the spec's)")
    p.add_argument("--trials", type=int, help="trials of the search (default 8; quick 2)")
    p.add_argument("--search-epochs", type=int, help="max epochs per trial (default 12; quick 2)")
    p.add_argument("--target", type=float, default=0.98, help="validation accuracy for (f) (default 0.98)")
    p.add_argument("--kt-max-seconds", type=float, help="KerasTuner's time budget (default 300; quick 60)")
    p.add_argument("--train-examples", type=int, help="training examples (default 50000; quick 10000)")
    p.add_argument("--validation-examples", type=int, help="validation examples (default 10000; quick 2000)")
    p.add_argument("--data", help="mnist.npz (default: the Keras cache)")
    p.add_argument("--only", default=",".join(SECTIONS),
                   help="sections to run, e.g. a,b (default a,b,c,e,p,f,m; e runs (e0) too; m once)")
    p.add_argument("--timeout", type=float, default=600, help="limit per subprocess, seconds")
    p.add_argument("--wait-idle", type=float, default=0, metavar="SECONDS",
                   help="first wait up to SECONDS for the 1-minute load average to fall below --max-load")
    p.add_argument("--max-load", type=float, default=0.6, help="what --wait-idle waits for (default 0.6)")
    p.add_argument("--out", default=str(DEFAULT_OUT), help="JSON output (default bench/out/latest.json)")
    args = p.parse_args(argv)
    quick = args.quick
    for name, full, small in (("repeat", 3, 1), ("epochs", 3, 2), ("trials", 8, 2), ("search_epochs", 12, 2),
                              ("kt_max_seconds", 300.0, 60.0), ("train_examples", None, 10000),
                              ("validation_examples", None, 2000)):
        if getattr(args, name) is None:
            setattr(args, name, small if quick else full)
    args.only = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = set(args.only) - set(SECTIONS) - {"d"}
    if unknown:
        p.error(f"--only: unknown section(s) {sorted(unknown)}; valid: {','.join(SECTIONS)} ((d) comes from b and c)")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    out_path = Path(args.out).resolve()
    out_dir = out_path.parent
    dirs = {"logs": out_dir / "logs", "runs": out_dir / "runs"}
    shutil.rmtree(dirs["runs"], ignore_errors=True)
    for d in dirs.values():
        d.mkdir(parents=True, exist_ok=True)
    env = base_env()
    machine = machine_info()
    waited = wait_idle(args.wait_idle, args.max_load) if args.wait_idle else 0.0
    report: dict = {
        "date": datetime.now(timezone.utc).astimezone().isoformat(timespec="seconds"),
        "command": " ".join(["python -m bench.run", *(argv if argv is not None else sys.argv[1:])]),
        "machine": machine, "versions": versions(), "load_before": load_average(), "waited_for_idle_s": waited,
        "config": {k: v for k, v in vars(args).items() if k not in ("out",)},
        "targets": TARGETS,
    }
    started = time.time()
    print(f"bench: {machine['cores']} cores, load {report['load_before']}; logs in {dirs['logs']}", flush=True)
    repetitions = report["repetitions"] = []
    for rep in range(args.repeat):
        print(f"repetition {rep + 1}/{args.repeat}", flush=True)
        repetitions.append(run_repetition(args, env, dirs, machine, first=rep == 0))
    report["load_after"] = load_average()
    report["total_seconds"] = time.time() - started
    out_path.write_text(json.dumps(report, indent=1, default=str))  # the measurements, before any summary
    report["table"] = aggregate([build_rows(sections, report["config"]) for sections in repetitions])
    out_path.write_text(json.dumps(report, indent=1, default=str))
    print()
    print(render(report))
    print(f"\nwritten: {out_path} ({report['total_seconds']:.0f} s in all)")
    return 0 if all("error" not in (s or {}) for sections in repetitions for s in sections.values()) else 1


def run_repetition(args, env, dirs, machine, first: bool = True) -> dict:
    """One repetition of every section asked for, baseline first: ratios are taken within it.

    (m), memory over 17 trials per slot, runs in the first repetition only.
    """
    sections: dict = {}
    if "a" in args.only:
        sections["a"] = section_a(args, env, dirs)
        # (a'): plain fit with the orchestrator's steps_per_execution, to tell that lever from the rest
        spe = args.steps_per_execution or spec_steps_per_execution()
        if spe != 1:
            sections["a_spe"] = section_a(args, env, dirs, spe)
    if "b" in args.only or "d" in args.only:
        sections["b"] = section_train("b_1worker", 1, args, env, dirs, machine["cores"])
    if "c" in args.only or "d" in args.only:
        sections["c"] = section_train("c_2workers", 2, args, env, dirs, machine["cores"])
        if "c" in args.only and not args.gpus_per_worker:
            sections["c_floor"] = section_c_floor(args, env, dirs)
    if "e" in args.only or "f" in args.only:
        config_path = tune_config(args, dirs)
        if "e" in args.only:
            # (e0): the same search with every trial under Ray Train (search.fast_path: false), then (e)
            sections["e0"] = section_e(args, env, dirs, machine["cores"], tune_config(args, dirs, fast_path=False),
                                       label="e0_search_ray_train")
            sections["e"] = section_e(args, env, dirs, machine["cores"], config_path)
        if "f" in args.only:
            sections["f"] = section_f(args, env, dirs, config_path)
    if "p" in args.only:
        sections["p"] = section_p(args, env, dirs)
    if "q" in args.only:
        sections["q"] = section_p(args, env, dirs, PB2_CONFIG, label="q_pb2")
    if "m" in args.only and first:
        sections["m"] = section_m(args, env, dirs, machine["cores"])
    return sections


if __name__ == "__main__":
    sys.exit(main())
