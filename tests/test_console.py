"""What a user sees in the terminal: ``orchestrator train``'s output, captured as printed.

Quiet by default (one line per epoch, Keras's checkpoint and EarlyStopping
messages, warnings, the summary), Ray's and TensorFlow's logs with --verbose.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ANSI = re.compile(r"\x1b\[[0-9;]*m")
# "(RayTrainWorker pid=123) " in front of every line a Ray process printed.
RAY_PREFIX = re.compile(r"^\((\w+)(?: pid=\d+)?(?:, ip=[\d.]+)?\) ?")
NOISE = {
    "Ray Train's per-report line": re.compile(r"Reporting training result"),
    "Ray Train's checkpoint line": re.compile(r"Checkpoint successfully created"),
    "TensorFlow's checkpoint sharding line": re.compile(r"Sharding callback duration"),
    "a TensorFlow C++ log line": re.compile(r"^[IWEF]\d{4} \d\d:\d\d:\d\d\.\d+ +\d+ [\w.]+:\d+\]"),
    "absl's pre-init notice": re.compile(r"absl::InitializeLog"),
    "the CUDA probe on a CPU machine": re.compile(r"cuInit|cudart_stub|Could not find cuda drivers"),
    "TensorFlow's strategy set-up": re.compile(r"Collective all_reduce|MultiWorkerMirroredStrategy with cluster_spec"),
}
EPOCHS = 3


def run_cli(args: list[str], cwd: Path, timeout: float = 600) -> str:
    """stdout and stderr of one command, interleaved as a terminal shows them, colours removed."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    done = subprocess.run([sys.executable, "-m", "orchestrator.cli", *args], cwd=cwd, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout)
    out = ANSI.sub("", done.stdout)
    assert done.returncode == 0, out[-5000:]
    return out


def write_config(tmp_path: Path, mnist_path: Path, epochs: int) -> Path:
    config = {
        "training": {"epochs": epochs},
        "lr_schedule": {"name": "constant"},
        "scaling": {"workers": 2},
        "task": {"path": str(mnist_path)}, "data": {"train_examples": 3000, "validation_examples": 1000,
                 "test_examples": 1000},
    }
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def worker_text(line: str) -> str:
    return RAY_PREFIX.sub("", line)


@pytest.fixture(scope="module")
def quiet_run(tmp_path_factory, mnist_path):
    tmp_path = tmp_path_factory.mktemp("quiet")
    config = write_config(tmp_path, mnist_path, EPOCHS)
    out = run_cli(["train", "--config", str(config), "--storage", str(tmp_path / "results"),
                   "--name", "quiet"], cwd=tmp_path)
    return tmp_path / "results" / "quiet", out


def test_train_prints_one_line_per_epoch_and_no_noise(quiet_run):
    run_dir, out = quiet_run
    lines = out.splitlines()
    for what, pattern in NOISE.items():
        found = [line for line in lines if pattern.search(worker_text(line))]
        assert not found, f"{what} in the output: {found[:3]}\n{out[-4000:]}"
    assert not [line for line in lines if not worker_text(line).strip()], "empty lines in the output\n" + out

    for epoch in range(1, EPOCHS + 1):
        epoch_lines = [line for line in lines if worker_text(line).startswith(f"Epoch {epoch}/{EPOCHS} - ")]
        assert len(epoch_lines) == 1, f"epoch {epoch}: {epoch_lines}\n{out}"
        assert re.search(r" - \d+s - loss: [\d.]+ - accuracy: [\d.]+ - val_loss: [\d.]+ - val_accuracy: "
                         r"[\d.]+ - learning_rate: [\d.e-]+$", epoch_lines[0]), epoch_lines[0]
        # Keras's own ModelCheckpoint message (from the chief only) may follow; nothing else about it.
        about = [line for line in lines if re.match(rf"Epoch {epoch}\b", worker_text(line))]
        assert len(about) <= 2, about

    # Where to look comes first; the summary last.
    first = [line for line in lines if not re.search(r"WARNING|INFO", line)][:3]
    assert first[0] == f"run quiet: {run_dir}", first
    assert re.match(r"  ray dashboard: http://127\.0\.0\.1:\d+$", first[1]), first
    assert first[2] == f"  tensorboard:   tensorboard --logdir {run_dir / 'tensorboard'}", first
    assert f"run quiet: {EPOCHS} epoch(s), stopped by max_epochs" in out
    summary = lines[lines.index(next(l for l in lines if l.startswith(f"run quiet: {EPOCHS} epoch(s)"))):]
    assert summary[1].startswith("  test accuracy: final weights ") and \
        summary[2] == f"  results: {run_dir}/ (result.json, best_model.keras)", summary

    # Keras's "did not improve" lines are dropped: a line about an epoch's checkpoint means one was saved.
    assert not [line for line in lines if "did not improve" in line], out
    # Everything else is a warning or an error (of Ray, under load), shown as it comes.
    known = re.compile(r"^(run quiet|  \w[\w ]*:|Epoch \d+)")
    rest = [worker_text(line) for line in lines if not known.match(worker_text(line))]
    for line in rest:
        assert re.search(r"WARNING|ERROR|Error|error|Traceback|^\s+|^\^|core_worker\.cc.*PreemptionWatcher|"
                         r"Failed to|safe to ignore", line), f"unexpected line {line!r}\n{out}"


def test_verbose_brings_back_rays_and_tensorflows_logs(tmp_path, mnist_path):
    config = write_config(tmp_path, mnist_path, 1)
    out = run_cli(["train", "--config", str(config), "--storage", str(tmp_path / "results"),
                   "--name", "loud", "--verbose"], cwd=tmp_path)
    assert "Reporting training result 1" in out, out[-4000:]
    assert "Checkpoint successfully created" in out, out[-4000:]
    assert re.search(r"\d+/\d+ - \d+s - loss: ", out), "Keras's own verbose=2 line, e.g. 24/24 - 1s - loss: ..."


def _cli(*args, cwd) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "orchestrator.cli", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=120)


def test_list_and_show_a_finished_and_an_interrupted_run_from_their_files(quiet_run, tmp_path):
    import json
    import shutil

    run_dir, _ = quiet_run
    storage = run_dir.parent
    # What an interrupted run leaves: its checkpoints, no result.json.
    shutil.copytree(run_dir, storage / "cut", ignore=shutil.ignore_patterns("result.json", "best_model.keras"))
    result = json.loads((run_dir / "result.json").read_text())

    listed = _cli("list", "--storage", str(storage), cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    rows = {line.split()[0]: line.split() for line in listed.stdout.splitlines()[1:] if line.strip()}
    assert rows["quiet"][1:3] == ["run", "finished"] and rows["quiet"][5] == str(EPOCHS), listed.stdout
    assert float(rows["quiet"][6]) == pytest.approx(result["best"]["val_loss"], abs=1e-4)
    assert rows["cut"][1:3] == ["run", "interrupted"] and rows["cut"][5] == str(EPOCHS), listed.stdout

    shown = _cli("show", "quiet", "--storage", str(storage), cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert f"run quiet (finished): {EPOCHS} epoch(s), stopped by max_epochs" in shown.stdout
    for h in result["history"]:
        assert re.search(rf"^\s*{h['epoch']}( \*)?\s+{h['loss']:.4f}\s+{h['accuracy']:.4f}\s+{h['val_loss']:.4f}",
                         shown.stdout, re.M), shown.stdout
    cut = _cli("show", "cut", "--storage", str(storage), cwd=tmp_path)
    assert cut.returncode == 0 and "run cut (interrupted)" in cut.stdout and "--resume" in cut.stdout, cut.stdout


@pytest.mark.parametrize("command", ["show", "tensorboard"])
def test_an_unknown_name_is_refused_in_one_line(command, tmp_path):
    (tmp_path / "results").mkdir()
    done = _cli(command, "nope", "--storage", str(tmp_path / "results"), cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: no run or search named 'nope'"), done.stderr


def test_list_and_show_start_no_ray_and_import_no_tensorflow(quiet_run):
    run_dir, _ = quiet_run
    code = (f"import sys; from click.testing import CliRunner; from orchestrator.cli import cli; "
            f"r = CliRunner().invoke(cli, ['show', 'quiet', '--storage', {str(run_dir.parent)!r}]); "
            f"r2 = CliRunner().invoke(cli, ['list', '--storage', {str(run_dir.parent)!r}]); "
            f"print(r.exit_code, r2.exit_code, sorted(m for m in ('ray', 'tensorflow', 'tf_keras') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip().splitlines()[-1] == "0 0 []", out.stdout + out.stderr
