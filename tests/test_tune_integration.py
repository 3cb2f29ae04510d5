"""A small search on an MNIST subset: 4 trials x 1 worker, 2 at a time.

The grid puts two sane learning rates first and two absurd ones last, so by the
time the bad trials reach ASHA's first rung the good ones have set the bar:
ASHA must stop the bad ones at epoch 1. EarlyStopping's min_delta is so large
that a good trial stops itself at epoch 3, before the 4-epoch limit; patience 2
leaves ASHA's asynchronous stop two epochs to land before EarlyStopping could
end a bad trial itself.
"""

from __future__ import annotations

import json
import math
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import search_config, validation_loss_of

SEARCH_CONFIG = search_config({"optimizer.learning_rate": {"grid": [0.002, 0.001, 40.0, 80.0]},
                               "lr_schedule": {"constant": {}}},
                              epochs=4, train_examples=4000, early_stopping={"patience": 2, "min_delta": 0.5},
                              tensorboard={"histogram_freq": 1}, asha={"grace_period": 1, "reduction_factor": 2})


@pytest.fixture(scope="module")
def search_result(local_ray, tmp_path_factory, mnist_path):
    from orchestrator.engine.tune import run_search
    from orchestrator.search_space import load_search
    from orchestrator.spec import set_path

    storage = tmp_path_factory.mktemp("results")
    config = set_path(SEARCH_CONFIG, "task.path", str(mnist_path))
    search = load_search(config)
    summary = run_search(search, name="small-search", storage=str(storage))
    return search, summary, storage / "small-search"


def test_summary_counts_every_trial_once(search_result):
    _, summary, run_dir = search_result
    on_disk = json.loads((run_dir / "summary.json").read_text())
    assert on_disk["trials"] == 4 and len(on_disk["results"]) == 4
    assert len({r["trial_id"] for r in on_disk["results"]}) == 4
    assert sorted(r["config"]["optimizer.learning_rate"] for r in on_disk["results"]) == [0.001, 0.002, 40.0, 80.0]
    csv_lines = (run_dir / "summary.csv").read_text().strip().splitlines()
    assert len(csv_lines) == 5 and csv_lines[0].startswith("trial_id,status,epochs_run,stop_reason")


def test_asha_stops_the_bad_learning_rates_early(search_result):
    _, summary, _ = search_result
    bad = [r for r in summary["results"] if r["config"]["optimizer.learning_rate"] >= 40]
    # At its first or second rung: which rung depends on whether the diverged loss is
    # already NaN at epoch 1 (ASHA cannot rank a NaN) and on the order trials report in.
    assert any(r["stop_reason"] == f"asha at epoch {r['epochs_run']}" and r["epochs_run"] <= 2 for r in bad), \
        [(r["config"], r["stop_reason"]) for r in summary["results"]]


def test_early_stopping_ends_a_good_trial_before_max_epochs(search_result):
    _, summary, _ = search_result
    good = [r for r in summary["results"] if r["config"]["optimizer.learning_rate"] < 1]
    stopped = [r for r in good if r["stop_reason"].startswith("early_stopping")]
    assert stopped, [(r["config"], r["stop_reason"]) for r in good]
    assert all(r["epochs_run"] == 3 < 4 for r in stopped)


def test_best_trial_is_a_sane_one_and_its_checkpoint_reloads_to_its_val_loss(search_result, mnist_path):
    _, summary, run_dir = search_result
    best = summary["best_trial"]
    assert best["config"]["optimizer.learning_rate"] < 1
    assert best["best_val_loss"] == min(r["best_val_loss"] for r in summary["results"]
                                        if r["best_val_loss"] is not None)
    checkpoint = Path(best["best_checkpoint"])
    # Reloaded in a fresh process with plain tf-keras, the recorded val_loss comes back.
    reloaded = validation_loss_of(checkpoint / "weights.h5", mnist_path)
    assert math.isclose(reloaded, best["best_val_loss"], rel_tol=1e-4)
    evaluation = summary["evaluation"]
    assert Path(evaluation["exported_model"]).is_file()
    assert evaluation["best_checkpoint_reloaded"]["accuracy"] > 0.8
    assert (run_dir / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_one_tensorboard_run_per_trial_with_scalars_and_hparams(search_result):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import metadata as hparams_metadata

    _, summary, run_dir = search_result
    root = run_dir / "tensorboard"
    runs = sorted(p.name for p in root.iterdir() if p.is_dir())
    assert runs == sorted(r["label"] for r in summary["results"])
    for row in summary["results"]:
        run = root / row["label"]
        assert sorted(p.name for p in run.iterdir() if p.is_dir()) == ["train", "validation"]
        validation = EventAccumulator(str(run / "validation"), size_guidance={"tensors": 0}).Reload()
        logged_epochs = len(validation.Tensors("epoch_loss"))
        if row["stop_reason"].startswith("asha"):
            # ASHA stops a trial asynchronously: until the stop reaches its workers they
            # train on, and log, epochs after the result Tune acted on (how many depends
            # on epoch length against the stop's latency, not on a bound Ray gives).
            assert row["epochs_run"] <= logged_epochs <= SEARCH_CONFIG["training"]["epochs"]
        else:  # the trial ended by itself: Tune saw every epoch it trained
            assert logged_epochs == row["epochs_run"], row
        session = EventAccumulator(str(run), size_guidance={"tensors": 0}).Reload()
        plugin_tags = session.PluginTagToContent(hparams_metadata.PLUGIN_NAME)
        assert hparams_metadata.SESSION_START_INFO_TAG in plugin_tags
        assert {"best_val_loss", "best_val_accuracy", "epochs_run"} <= set(session.Tags()["tensors"])
    experiment = EventAccumulator(str(root)).Reload()
    assert hparams_metadata.EXPERIMENT_TAG in experiment.PluginTagToContent(hparams_metadata.PLUGIN_NAME)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_real_tensorboard_server_lists_every_trial_and_serves_hparams(search_result):
    _, summary, run_dir = search_result
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "tensorboard.main", "--logdir", str(run_dir / "tensorboard"),
         "--host", "127.0.0.1", "--port", str(port), "--reload_interval", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.time() + 60
        runs = []
        while time.time() < deadline:
            try:
                runs = json.loads(urllib.request.urlopen(f"{base}/data/runs", timeout=5).read())
                if len(runs) >= 4 * 2:
                    break
            except OSError:
                pass
            time.sleep(1)
        for row in summary["results"]:
            assert f"{row['label']}/validation" in runs, runs
        request = urllib.request.Request(
            f"{base}/data/plugin/hparams/session_groups",
            data=json.dumps({"startIndex": 0, "sliceSize": 100, "allowedStatuses": [
                "STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE", "STATUS_RUNNING"],
                "colParams": []}).encode(),
            headers={"Content-Type": "application/json"})
        groups = json.loads(urllib.request.urlopen(request, timeout=10).read())
        assert groups["totalSize"] == 4
        names = {g["name"] for g in groups["sessionGroups"]}
        assert names == {r["label"] for r in summary["results"]}
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_a_trial_that_cannot_fit_fails_fast_with_the_reason(search_result, tmp_path, mnist_path):
    from orchestrator.engine.tune import run_search
    from orchestrator.errors import UserError
    from orchestrator.search_space import load_search
    from orchestrator.spec import set_path

    config = set_path(set_path(SEARCH_CONFIG, "search.workers_per_trial", 5), "task.path", str(mnist_path))
    started = time.time()
    with pytest.raises(UserError, match=r"needs 5 worker\(s\) of \{CPU: 1, GPU: 0\} but the cluster can place only 2"):
        run_search(load_search(config), name="too-big", storage=str(tmp_path))
    assert time.time() - started < 10
