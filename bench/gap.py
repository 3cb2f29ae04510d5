"""``python -m bench.gap``: where (b) loses against (a'), one part at a time.

    python -m bench.gap                    # 3 interleaved repetitions of 5 runs, 6 epochs each
    python -m bench.gap --repeat 5 --epochs 8
    python -m bench.gap --quick            # smoke run: 10k examples, 2 epochs, 1 repetition (not comparable)

(a') is plain tf-keras ``fit`` on pre-scaled arrays with the orchestrator's
``steps_per_execution``; (b) is ``orchestrator train`` with 1 worker. Between
them, ``bench.baseline`` adds what a worker adds, one part at a time, each run
in its own process:

  a'            plain fit (arrays, a timer callback)
  +input        the worker's tf.data pipeline and thread pools
  +callbacks    and its callbacks (LR schedule, EarlyStopping, best-weights
                ModelCheckpoint, TensorBoard with histograms and graph)
  +ray          all of that in a task of a local Ray with its dashboard
  b             orchestrator train --workers 1 (Ray Train: its controller, the
                per-epoch checkpoint and report)

Every epoch is timed the same way (``on_epoch_begin`` -> ``on_epoch_end`` of
the last callback); a run's figure is its steady epoch (the mean of epochs 2..N).
The runs go in turn (a' +input +callbacks +ray b, a' ...), each step's ratio
is taken within its repetition, and the table gives median [min-max] over the
repetitions. JSON goes to ``bench/out/gap.json``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

from bench.run import (ROOT, base_env, epoch_figures, load_average, machine_info, median, ratio, run_baseline,
                       section_train, spec_steps_per_execution, versions)

# (name, log label, bench.baseline flags)
STEPS = [("a'", "gap_a_spe", []), ("+input", "gap_input", ["--input", "orchestrator"]),
         ("+callbacks", "gap_callbacks", ["--input", "orchestrator", "--callbacks", "orchestrator"]),
         ("+ray", "gap_ray", ["--input", "orchestrator", "--callbacks", "orchestrator", "--in-ray"])]


def step(label: str, extra: list[str], args, env, dirs, spe: int) -> dict:
    proc, data = run_baseline(label, args, env, dirs, spe, tuple(extra))
    if data is None:
        return {"error": proc["status"], "process": proc}
    return {"process": proc, "fit_in_another_process": data["fit_pid"] != data["process_pid"],
            "callbacks": data.get("callbacks"), **epoch_figures(data["history"], data["train_examples"])}


def repetition(args, env, dirs, cores: int, spe: int) -> dict:
    figures = {}
    for name, label, extra in STEPS:
        figures[name] = step(label, extra, args, env, dirs, spe)
    train_args = argparse.Namespace(**{**vars(args), "cpus_per_worker": None, "gpus_per_worker": 0,
                                       "steps_per_execution": spe, "validation_examples": None})
    figures["b"] = section_train("gap_b", 1, train_args, env, dirs, cores)
    return figures


def table(reps: list[dict]) -> list[dict]:
    rows, names = [], [name for name, _, _ in STEPS] + ["b"]
    for i, name in enumerate(names):
        epochs = [r[name].get("steady_epoch_s") for r in reps]
        to_a = [ratio(r[name].get("steady_epoch_s"), r["a'"].get("steady_epoch_s")) for r in reps]
        to_prev = [ratio(r[name].get("steady_epoch_s"), r[names[i - 1]].get("steady_epoch_s")) if i else None
                   for r in reps]
        rows.append({"run": name, "steady_epoch_s": _summary(epochs), "vs_a_spe": _summary(to_a),
                     "vs_previous": _summary(to_prev)})
    return rows


def _summary(values: list) -> dict:
    values = [v for v in values if v is not None]
    return {"median": median(values), "min": min(values), "max": max(values)} if values else {}


def _fmt(s: dict, digits: int = 2, suffix: str = "") -> str:
    if not s:
        return ""
    return f"{s['median']:.{digits}f}{suffix} [{s['min']:.{digits}f}-{s['max']:.{digits}f}]"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.gap", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="smoke run: 10k train examples, 2 epochs, 1 repetition")
    p.add_argument("--repeat", type=int, help="repetitions, interleaved (default 3; quick 1)")
    p.add_argument("--epochs", type=int, help="epochs of every run (default 6; quick 2)")
    p.add_argument("--train-examples", type=int, help="training examples (default 50000; quick 10000)")
    p.add_argument("--data", help="mnist.npz (default: the Keras cache)")
    p.add_argument("--global-batch", type=int, default=128)
    p.add_argument("--timeout", type=float, default=600, help="limit per subprocess, seconds")
    p.add_argument("--out", default=str(ROOT / "bench" / "out" / "gap.json"))
    args = p.parse_args(argv)
    for name, full, small in (("repeat", 3, 1), ("epochs", 6, 2), ("train_examples", None, 10000)):
        if getattr(args, name) is None:
            setattr(args, name, small if args.quick else full)
    out_path = Path(args.out).resolve()
    dirs = {"logs": out_path.parent / "logs", "runs": out_path.parent / "runs-gap"}
    shutil.rmtree(dirs["runs"], ignore_errors=True)
    for d in dirs.values():
        d.mkdir(parents=True, exist_ok=True)
    env, machine, spe = base_env(), machine_info(), spec_steps_per_execution()
    report = {"date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "machine": machine, "versions": versions(),
              "load_before": load_average(), "config": vars(args), "steps_per_execution": spe}
    reps = []
    for rep in range(args.repeat):
        print(f"repetition {rep + 1}/{args.repeat}", flush=True)
        reps.append(repetition(args, env, dirs, machine["cores"], spe))
    report["load_after"], report["repetitions"] = load_average(), reps
    failed = [f"{name} (repetition {i + 1})" for i, r in enumerate(reps) for name, s in r.items() if "error" in s]
    report["table"] = table([r for r in reps if not any("error" in s for s in r.values())]) \
        if len(failed) < len(reps) * len(reps[0]) else []
    out_path.write_text(json.dumps(report, indent=1, default=str))
    print(f"\nsteady epoch, steps_per_execution {spe}, {args.repeat} repetitions, "
          f"load {report['load_before']} -> {report['load_after']}")
    print(f"{'run':12} {'steady epoch s':24} {'x (a-prime)':22} {'x the step before':22}")
    for row in report["table"]:
        print(f"{row['run']:12} {_fmt(row['steady_epoch_s']):24} {_fmt(row['vs_a_spe'], suffix='x'):22} "
              f"{_fmt(row['vs_previous'], suffix='x'):22}")
    if failed:
        print("failed: " + ", ".join(failed))
    print(f"written: {out_path}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
