"""The worker's model, data and callbacks under MirroredStrategy over 2 logical devices.

``bench/logical_gpus.py`` splits one GPU in two on a GPU machine; here it
splits the CPU, which checks the same thing: 2 replicas at the same global
batch train the same model as 1 replica (synchronous data parallelism).
"""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_two_logical_replicas_match_one(tmp_path, mnist_path):
    out_file = tmp_path / "split.json"
    subprocess.run([sys.executable, str(ROOT / "bench" / "logical_gpus.py"), "--device", "cpu", "--epochs", "2",
                    "--train-examples", "4000", "--data", str(mnist_path), "--json", str(out_file)],
                   check=True, capture_output=True, timeout=300)
    out = json.loads(out_file.read_text())
    two, one = out["results"]
    assert two["replicas"] == 2 and len(set(two["devices"])) == 2 and one["replicas"] == 1
    assert two["val_accuracy"] > 0.8
    assert abs(two["val_accuracy"] - one["val_accuracy"]) < 2e-3
