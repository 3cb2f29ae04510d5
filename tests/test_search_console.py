"""A search's console when it is not a terminal (``ray job logs``, a file): finished-trial lines,
the final table, no worker lines; then ``orchestrator list`` / ``show`` read it back from its files.

The grid: two sane learning rates and one absurd one, 2 trials at a time. The
sane ones stop themselves by EarlyStopping (min_delta too large to meet)
at epoch 3; ASHA stops the absurd one at its first rung.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
import yaml
from test_console import ANSI

SEARCH_CONFIG = {
    "seed": 3,
    "training": {"epochs": 4, "batch_size_per_worker": 64},
    "early_stopping": {"patience": 2, "min_delta": 0.5},
    "checkpoint": {"keep_best": 1},
    "data": {"train_examples": 3000, "validation_examples": 1000, "test_examples": 1000},
    "search": {
        "samples": 1, "workers_per_trial": 1, "max_concurrent": 2,
        "asha": {"grace_period": 1, "reduction_factor": 2},
        "space": {"optimizer.learning_rate": {"grid": [0.002, 0.001, 60.0]}, "lr_schedule": {"constant": {}}},
    },
}


def cli(*args, cwd, timeout=900) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-m", "orchestrator.cli", *args], cwd=cwd, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, timeout=timeout)
    done.stdout, done.stderr = ANSI.sub("", done.stdout), ANSI.sub("", done.stderr)
    return done


@pytest.fixture(scope="module")
def search(tmp_path_factory, mnist_path):
    tmp = tmp_path_factory.mktemp("search")
    config = {**SEARCH_CONFIG, "task": {"path": str(mnist_path)}}
    (tmp / "tune.yaml").write_text(yaml.safe_dump(config))
    done = cli("tune", "--config", str(tmp / "tune.yaml"), "--storage", str(tmp / "results"), "--name", "s1",
               cwd=tmp)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    return tmp / "results", done


def test_a_search_off_a_terminal_prints_a_line_per_finished_trial_and_a_final_table(search):
    storage, done = search
    out = done.stdout
    summary = json.loads((storage / "s1" / "summary.json").read_text())
    ids = sorted(r["trial_id"] for r in summary["results"])
    assert len(ids) == 3
    finished = re.findall(r"^trial (\S+) finished: (.+?), best val_loss", out, re.M)
    assert sorted(t for t, _ in finished) == ids, out
    reasons = dict(finished)
    # Each line says what summary.json records for that trial.
    in_words = {"early_stopping (patience) at epoch": "EarlyStopping at epoch", "asha at epoch": "ASHA at epoch",
                "max_epochs": "max epochs"}
    for row in summary["results"]:
        recorded = row["stop_reason"]
        for file_words, console_words in in_words.items():
            recorded = recorded.replace(file_words, console_words)
        assert reasons[row["trial_id"]] == recorded, (reasons, row["stop_reason"])
    by_lr = {r["config"]["optimizer.learning_rate"]: r["trial_id"] for r in summary["results"]}
    assert reasons[by_lr[60.0]].startswith("ASHA at epoch"), reasons
    counts = {"early-stopped": sum(r.startswith("EarlyStopping") for r in reasons.values()),
              "ASHA-stopped": sum(r.startswith("ASHA") for r in reasons.values()),
              "max epochs": sum(r.startswith("max epochs") for r in reasons.values())}
    assert counts["early-stopped"] >= 1, reasons
    final_status = [line for line in out.splitlines() if line.startswith("running ")][-1]
    assert final_status.startswith(f"running 0 · early-stopped {counts['early-stopped']} · ASHA-stopped "
                                   f"{counts['ASHA-stopped']} · max epochs {counts['max epochs']} · errored 0 · "
                                   "pending 0 · "), final_status
    # The final table: one row per trial with its stop reason.
    table_rows = {t: line for line in out.splitlines() for t in ids if line.startswith(t + " ")}
    assert set(table_rows) == set(ids), out
    for trial_id, reason in reasons.items():
        assert reason in table_rows[trial_id], table_rows[trial_id]
    # Not interleaved: no worker's epoch lines, no Tune status blocks, no Train report lines.
    assert not re.search(r"Epoch \d+/\d+|Trial status|== Status ==|Reporting training result|"
                         r"Configuration for experiment|View detailed results", out + done.stderr), out


def test_list_and_show_read_the_search_back(search):
    storage, _ = search
    listed = cli("list", "--storage", str(storage), cwd=storage)
    assert listed.returncode == 0, listed.stderr
    row = [line for line in listed.stdout.splitlines() if line.startswith("s1 ")]
    assert row and re.search(r"s1\s+search\s+finished\s+\S+ \S+\s+3\s+0\.\d{4}", row[0]), listed.stdout
    shown = cli("show", "s1", "--storage", str(storage), cwd=storage)
    assert shown.returncode == 0, shown.stderr
    summary = json.loads((storage / "s1" / "summary.json").read_text())
    for r in summary["results"]:
        assert re.search(rf"^{r['trial_id']}\s+{r['epochs_run']}\s+{re.escape(r['stop_reason'])}", shown.stdout, re.M), \
            shown.stdout
