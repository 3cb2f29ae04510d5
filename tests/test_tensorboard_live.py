"""``orchestrator train --tensorboard``: a real TensorBoard server answers while the run trains,
and is gone when the command ends, by Ctrl-C too."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request

from pathlib import Path

import yaml
from test_console import ANSI


def descendants(pid: int) -> list[tuple[int, str]]:
    """(pid, command line) of every process below ``pid``, from /proc."""
    parent_of = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            parent_of[int(stat.parent.name)] = int(fields[1])
        except (OSError, ValueError, IndexError):
            continue
    found, frontier = [], [pid]
    while frontier:
        children = [child for child, parent in parent_of.items() if parent in frontier]
        found += children
        frontier = children
    out = []
    for child in found:
        try:
            out.append((child, Path(f"/proc/{child}/cmdline").read_bytes().replace(b"\0", b" ").decode()))
        except OSError:
            continue
    return out


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def get_json(url: str):
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return json.loads(response.read())
    except OSError:
        return None


def port_answers(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(2)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def test_a_live_tensorboard_shows_epoch_1_while_training_stops_on_ctrl_c_and_serves_the_run_after(tmp_path, mnist_path):
    epochs, port = 30, free_port()
    config = {"training": {"epochs": epochs}, "lr_schedule": {"name": "constant"},
              "early_stopping": {"enabled": False}, "scaling": {"workers": 1},
              "task": {"path": str(mnist_path)}, "data": {"train_examples": 2000, "validation_examples": 500,
                       "test_examples": 500}}
    (tmp_path / "train.yaml").write_text(yaml.safe_dump(config))
    log = tmp_path / "out.txt"
    with open(log, "w") as out:
        command = subprocess.Popen(
            [sys.executable, "-m", "orchestrator.cli", "train", "--config", str(tmp_path / "train.yaml"),
             "--storage", str(tmp_path / "results"), "--name", "live", "--tensorboard",
             "--tensorboard-port", str(port)],
            cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline, loss = time.monotonic() + 600, None
        while loss is None:
            assert command.poll() is None, "the run ended before TensorBoard showed epoch 1\n" + log.read_text()[-4000:]
            assert time.monotonic() < deadline, "no epoch_loss on TensorBoard\n" + log.read_text()[-4000:]
            tags = get_json(f"{base}/data/plugin/scalars/tags") or {}
            if "epoch_loss" in tags.get("train", {}):
                points = get_json(f"{base}/data/plugin/scalars/scalars?run=train&tag=epoch_loss") or []
                loss = next((value for _, step, value in points if step == 0), None)
            time.sleep(1)
        assert command.poll() is None, "training must still run while TensorBoard is checked"
        shown = ANSI.sub("", log.read_text())
        assert f"  tensorboard:   {base} (live, serving" in shown, shown[-3000:]
        printed = re.search(r"Epoch 1/\d+ - \d+s - loss: ([\d.]+)", shown)
        assert printed and abs(loss - float(printed.group(1))) < 1e-4, (loss, shown[-3000:])
        servers = [pid for pid, cmdline in descendants(command.pid) if "tensorboard.main" in cmdline]
        assert len(servers) == 1, descendants(command.pid)

        os.killpg(command.pid, signal.SIGINT)  # Ctrl-C in the terminal
        assert command.wait(120) == 130, log.read_text()[-3000:]
        deadline = time.monotonic() + 15
        while alive(servers[0]) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert not alive(servers[0]) and not port_answers(port), "TensorBoard outlived the run"
    finally:
        if command.poll() is None:
            os.killpg(command.pid, signal.SIGKILL)

    # `orchestrator tensorboard NAME` serves the same (here interrupted) run until Ctrl-C.
    port = free_port()
    with open(tmp_path / "serve.txt", "w") as out:
        serving = subprocess.Popen(
            [sys.executable, "-m", "orchestrator.cli", "tensorboard", "live", "--storage", str(tmp_path / "results"),
             "--port", str(port)], cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        while "train" not in (get_json(f"http://127.0.0.1:{port}/data/plugin/scalars/tags") or {}):
            assert serving.poll() is None and time.monotonic() < deadline, (tmp_path / "serve.txt").read_text()
            time.sleep(1)
        server = [pid for pid, cmdline in descendants(serving.pid) if "tensorboard.main" in cmdline]
        os.killpg(serving.pid, signal.SIGINT)
        assert serving.wait(60) == 0, (tmp_path / "serve.txt").read_text()
        deadline = time.monotonic() + 15
        while alive(server[0]) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert not alive(server[0]) and not port_answers(port)
    finally:
        if serving.poll() is None:
            os.killpg(serving.pid, signal.SIGKILL)
