"""The search table's counts, stop reasons and ETA, driven through Tune's callback hooks (no Ray started)."""

from __future__ import annotations

import io
import pickle
import types

from orchestrator.engine.search_table import SearchTable
from orchestrator.stop_reasons import in_words, stop_reason
from orchestrator.search_space import load_search
from orchestrator.spec import read_yaml


def trial(i: int, status: str):
    return types.SimpleNamespace(trial_id=f"t_{i:05d}", status=status, config={
        "optimizer.learning_rate": 0.002, "lr_schedule": "step",
        "schedule_params": {"step": {"drop": 0.5, "every": 2}, "cosine": {"min_fraction": 0.01}}})


def test_stop_reasons_from_the_last_report_in_the_summarys_and_the_consoles_words():
    cases = [
        (dict(last={"epoch": 3, "stop_reason": "early_stopping"}),
         "early_stopping (patience) at epoch 3", "EarlyStopping at epoch 3"),
        (dict(last={"epoch": 2, "stop_reason": None}), "asha at epoch 2", "ASHA at epoch 2"),
        (dict(last={"epoch": 2}, scheduler_stops=False), "stopped at epoch 2", "stopped at epoch 2"),
        (dict(last={"epoch": 20, "stop_reason": "max_epochs"}), "max_epochs (20)", "max epochs (20)"),
        (dict(last={"epoch": 4}, stop_at_trial="t_00001"),
         "stop_at (trial t_00001 reached the target) at epoch 4", "stopped: trial t_00001 reached the target at epoch 4"),
        (dict(last={}, error=ValueError("bad\nworse")), "error: ValueError: bad", "error"),
        (dict(last={}), "not started", "not started"),
        (dict(last={}, stop_at_trial="t_00001"), "not started (stop_at: trial t_00001 reached the target first)",
         "not started: trial t_00001 reached the target first"),
    ]
    for kwargs, recorded, words in cases:
        last = kwargs.pop("last")
        assert stop_reason(last, 20, **kwargs) == recorded
        assert in_words(recorded) == words


def test_under_asha_stop_at_names_the_running_and_the_pending_but_not_the_long_stopped():
    from orchestrator.engine.tune import _running_at

    search = load_search(read_yaml("jobs/configs/tune_mnist.yaml"))  # ASHA on
    hit = {"trial_id": "t_00000", "time": 100.0}
    assert _running_at({"epoch": 5, "started_at": 97.0, "epoch_seconds": 2.0}, hit, search)
    assert not _running_at({"epoch": 4, "started_at": 60.0, "epoch_seconds": 2.0}, hit, search)  # ASHA's
    assert _running_at({}, hit, search)  # pending when the target was reached


def test_counts_finished_lines_best_and_final_table():
    search = load_search(read_yaml("jobs/configs/tune_mnist.yaml"))
    out = io.StringIO()
    table = SearchTable(search, samples=3, concurrent=2, stream=out, live=False, status_every_s=3600)
    pickle.dumps(table)  # Tune stores its callbacks with the experiment state
    trials = [trial(0, "RUNNING"), trial(1, "RUNNING"), trial(2, "PENDING")]
    for t in trials[:2]:
        table.on_trial_start(0, trials, t)
    table.on_trial_result(1, trials, trials[0], {"epoch": 2, "val_loss": 0.09, "best_val_loss": 0.08})
    table.on_trial_result(1, trials, trials[1], {"epoch": 1, "val_loss": 0.5, "best_val_loss": 0.5})
    table.on_trial_complete(2, trials, trials[1])  # Tune still says RUNNING while completing it
    assert table.counts(trials) == {"running": 1, "early-stopped": 0, "ASHA-stopped": 1, "max epochs": 0,
                                    "errored": 0, "pending": 1}
    table.on_trial_error(3, trials, trials[2])
    lines = out.getvalue().splitlines()
    # The best's short config holds only its schedule family's parameters.
    assert lines[0] == "trial t_00001 finished: ASHA at epoch 1, best val_loss 0.5000 " \
                       "(lr=0.002 sched=step step.drop=0.5 step.every=2)", lines
    assert "best t_00000 val_loss 0.0800" in lines[1] and "cosine" not in lines[1], lines
    assert lines[2].startswith("trial t_00002 finished: error"), lines
    trials[0].status = "TERMINATED"
    table.on_trial_result(3, trials, trials[0], {"epoch": 3, "val_loss": 0.1, "best_val_loss": 0.08,
                                                 "stop_reason": "early_stopping"})
    table.on_trial_complete(3, trials, trials[0])
    table.on_experiment_end(trials)
    final = out.getvalue().splitlines()
    assert any(line.startswith("running 0 · early-stopped 1 · ASHA-stopped 1 · max epochs 0 · errored 1 · pending 0")
               for line in final), final
    rows = [line for line in final if line.startswith("t_0000")]
    assert [r.split()[0] for r in rows] == ["t_00000", "t_00001", "t_00002"], final
    assert "EarlyStopping at epoch 3" in rows[0] and "ASHA at epoch 1" in rows[1] and "error" in rows[2]
