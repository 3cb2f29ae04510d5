"""A small Population Based Training search: 2 members x 1 worker, both at once, on an MNIST subset.

One member starts at a sane LR (0.002), the other at an absurd one (0.3, Adam:
it stays at chance). At the first perturbation point (epoch 2) the absurd
member is in the bottom half, so PBT must copy the sane member's state into
it and continue at the sane LR times 0.8 or 1.2 (no resampling). EarlyStopping
is off so nothing but PBT decides. Synchronous PBT, and one perturbation point
(the last epoch is never perturbed): with two members, one copies the other at
every point, and a second copy would write over the record of the first.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import yaml
from conftest import pbt_search_config

EPOCHS = 4
INTERVAL = 2
PBT_CONFIG = pbt_search_config(EPOCHS, INTERVAL)


@pytest.fixture(scope="module")
def pbt_search(local_ray, tmp_path_factory, mnist_path):
    from orchestrator.engine.tune import run_search
    from orchestrator.search_space import load_search
    from orchestrator.spec import set_path

    storage = tmp_path_factory.mktemp("results")
    search = load_search(set_path(PBT_CONFIG, "task.path", str(mnist_path)))
    summary = run_search(search, name="pbt", storage=str(storage))
    return summary, storage / "pbt"


def _copier_and_donor(summary: dict):
    rows = {r["trial_id"]: r for r in summary["results"]}
    copiers = [r for r in summary["results"] if r["copies"]]
    assert copiers, [(r["trial_id"], r["stop_reason"]) for r in summary["results"]]
    assert len(copiers) == 1 and len(copiers[0]["copies"]) == 1, [r["copies"] for r in copiers]
    copier = copiers[0]
    copy = copier["copies"][0]
    return copier, rows[copy["from"]], copy


def _value(event) -> float:
    from tensorboard.util import tensor_util

    return float(tensor_util.make_ndarray(event.tensor_proto).item())


def _own_scalars(run_dir: Path, trial_id: str, split: str, tag: str) -> dict[int, float]:
    """A member's own TensorBoard scalar per 0-based epoch, its first write of each.

    Tune's record of a member starts over when it copies another; its
    TensorBoard run keeps what it trained itself before the copy.
    """
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir / "tensorboard" / trial_id / split),
                              size_guidance={"tensors": 0}).Reload().Tensors(tag)
    out: dict[int, float] = {}
    for event in sorted(events, key=lambda e: e.wall_time):
        out.setdefault(event.step, _value(event))
    return out


def test_the_absurd_member_copies_the_sane_one_and_its_lineage_is_recorded(pbt_search):
    summary, run_dir = pbt_search
    assert summary["algorithm"] == "pbt" and summary["trials"] == 2
    copier, donor, copy = _copier_and_donor(summary)
    # The member that started at LR 0.3 is the one that copied, at a perturbation point.
    assert _own_scalars(run_dir, copier["trial_id"], "train", "epoch_learning_rate")[0] == pytest.approx(0.3)
    assert copy["epoch"] % INTERVAL == 0 and copy["epoch"] < EPOCHS
    assert copier["lineage"][-1] == copy
    # Its history is its lineage's: the donor's epochs up to the copy (same numbers), then its own.
    history = {h["epoch"]: h for h in copier["history"]}
    donor_history = {h["epoch"]: h for h in donor["history"]}
    assert sorted(history) == list(range(1, EPOCHS + 1))
    for epoch in range(1, copy["epoch"] + 1):
        assert history[epoch]["trained_by"] == donor["trial_id"]
        assert history[epoch]["val_loss"] == donor_history[epoch]["val_loss"]
        assert history[epoch]["learning_rate"] == donor_history[epoch]["learning_rate"]
    for epoch in range(copy["epoch"] + 1, EPOCHS + 1):
        assert history[epoch]["trained_by"] == copier["trial_id"]
    csv_text = (run_dir / "summary.csv").read_text()
    assert f"{donor['trial_id']}@{copy['epoch']}" in csv_text


def test_after_the_copy_it_continues_from_the_donors_weights_at_a_perturbed_lr(pbt_search):
    summary, run_dir = pbt_search
    copier, donor, copy = _copier_and_donor(summary)
    k = copy["epoch"]
    donor_at_k = {h["epoch"]: h for h in donor["history"]}[k]
    after = {h["epoch"]: h for h in copier["history"]}[k + 1]
    own_at_k = _own_scalars(run_dir, copier["trial_id"], "validation", "epoch_loss")[k - 1]
    # Its own state at epoch k was at chance (LR 0.3); one epoch after the copy it is
    # where the donor was, not where it was itself.
    assert own_at_k > 1.5
    assert abs(after["val_loss"] - donor_at_k["val_loss"]) < 0.25 * abs(own_at_k - donor_at_k["val_loss"])
    # The LR from the copy on is the donor's times 0.8 or 1.2: the member's new config.
    factor = after["learning_rate"] / donor_at_k["learning_rate"]
    assert min(abs(factor - 0.8), abs(factor - 1.2)) < 1e-6, factor
    assert math.isclose(copier["config"]["optimizer.learning_rate"], after["learning_rate"], rel_tol=1e-6)


def test_one_tensorboard_run_per_member_shows_the_lr_jump(pbt_search):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    summary, run_dir = pbt_search
    root = run_dir / "tensorboard"
    assert sorted(p.name for p in root.iterdir() if p.is_dir()) == sorted(r["trial_id"] for r in summary["results"])
    copier, _, copy = _copier_and_donor(summary)
    train = EventAccumulator(str(root / copier["trial_id"] / "train"), size_guidance={"tensors": 0}).Reload()
    lr = {}
    for event in sorted(train.Tensors("epoch_learning_rate"), key=lambda e: e.wall_time):
        lr[event.step] = _value(event)  # the last write of a step wins
    assert lr[0] == pytest.approx(0.3)  # its own start
    after = {h["epoch"]: h for h in copier["history"]}[copy["epoch"] + 1]
    assert lr[copy["epoch"]] == pytest.approx(after["learning_rate"], rel=1e-6)  # 0-based step of epoch k+1


def test_best_schedule_replays_the_winners_lr_of_every_epoch_exactly(pbt_search, mnist_path):
    from orchestrator.engine.train import run_training
    from orchestrator.spec import load_spec

    summary, run_dir = pbt_search
    assert (run_dir / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    winner = next(r for r in summary["results"] if r["trial_id"] == summary["best_trial"]["trial_id"])
    recorded = [h["learning_rate"] for h in winner["history"]]
    path = Path(summary["best_schedule"])
    assert path == run_dir / "best_schedule.yaml"
    assert yaml.safe_load(path.read_text())["lr_schedule"] == {"name": "piecewise", "lrs": recorded}
    spec = load_spec(path, {"name": "replay", "storage": str(run_dir.parent)})
    assert spec.training.epochs == len(recorded)
    result = run_training(spec)
    assert [h["learning_rate"] for h in result["history"]] == recorded


# ------------------------------------------------------------- PB2
# The same population (LR 0.002 and 0.3) under Ray Tune's PB2, perturbed after
# every epoch (points 1, 2 and 3 of 4). At the first, the donor has no two records
# with one LR, so there is nothing to fit and the copy keeps the donor's LR (PBT
# would multiply it by 0.8 or 1.2). Later, PB2's Gaussian process picks the LR
# within the bounds [0.002, 0.3].

def test_pb2_copies_the_donors_lr_first_then_picks_one_within_the_bounds(local_ray, tmp_path, mnist_path):
    from orchestrator.engine.tune import run_search
    from orchestrator.search_space import load_search
    from orchestrator.spec import set_path

    epochs = 4
    search = load_search(set_path(pbt_search_config(epochs, interval=1, algorithm="pb2"),
                                  "task.path", str(mnist_path)))
    summary = run_search(search, name="pb2", storage=str(tmp_path))
    assert summary["algorithm"] == "pb2" and summary["trials"] == 2
    rows = {r["trial_id"]: r for r in summary["results"]}
    own_start = {t: _own_scalars(tmp_path / "pb2", t, "train", "epoch_learning_rate")[0] for t in rows}
    absurd = next(t for t, lr in own_start.items() if lr == pytest.approx(0.3))
    # The absurd member (at chance) copies the sane one after epoch 1 and trains its epoch 2 at
    # the donor's LR as it was. Its own TensorBoard run shows it (its summary row may not:
    # a later copy replaces its lineage with its new donor's).
    assert _own_scalars(tmp_path / "pb2", absurd, "train", "epoch_learning_rate")[1] == pytest.approx(0.002)
    # Later copies: an LR PB2 picked within the bounds, not the donor's.
    copies = {(c["member"], c["from"], c["epoch"]): c for r in rows.values() for c in r["lineage"]}
    later = [c for key, c in copies.items() if key[2] >= 2]
    assert later, copies
    for copy in later:
        assert 0.002 <= copy["config"]["optimizer.learning_rate"] <= 0.3
    donor_lr = {(h["trained_by"], h["epoch"]): h["learning_rate"] for r in rows.values() for h in r["history"]}
    assert any(c["config"]["optimizer.learning_rate"] != pytest.approx(donor_lr[(c["from"], c["epoch"])], rel=1e-6)
               for c in later), later
    for row in rows.values():
        history = {h["epoch"]: h for h in row["history"]}
        assert sorted(history) == list(range(1, epochs + 1))
        last_copy = max((c["epoch"] for c in row["lineage"] if c["member"] == row["trial_id"]), default=0)
        for epoch in range(last_copy + 1, epochs + 1):  # the LR actually used is the member's (new) config
            assert history[epoch]["learning_rate"] == pytest.approx(row["config"]["optimizer.learning_rate"],
                                                                    rel=1e-6)
    assert (tmp_path / "pb2" / "best_schedule.yaml").is_file()


# ------------------------------------------------------------- stop_at (any algorithm)
# In this module to share its Ray: a random search of 2 trials x up to 20 epochs
# must end as soon as one of them reaches 85% validation accuracy (epoch 1-2 here).

def test_stop_at_ends_the_whole_search_when_one_trial_reaches_the_target(local_ray, tmp_path, mnist_path):
    from orchestrator.engine.tune import run_search
    from orchestrator.search_space import load_search

    config = {
        "seed": 3,
        "training": {"epochs": 20, "batch_size_per_worker": 64, "verbose": 0},
        "early_stopping": {"enabled": False},
        "lr_schedule": {"name": "constant"},
        "tensorboard": {"histogram_freq": 0, "write_graph": False},
        "task": {"path": str(mnist_path)}, "data": {"train_examples": 3000, "validation_examples": 1000,
                 "test_examples": 1000},
        "search": {"samples": 1, "workers_per_trial": 1, "max_concurrent": 2, "asha": {"enabled": False},
                   "stop_at": {"val_accuracy": 0.85},
                   "space": {"optimizer.learning_rate": {"grid": [0.002, 0.001]}}},
    }
    summary = run_search(load_search(config), name="stop-at", storage=str(tmp_path))
    hit = summary["stop_at"]["reached"]
    assert summary["stop_at"]["targets"] == {"val_accuracy": 0.85}
    assert hit["trial_id"] in {r["trial_id"] for r in summary["results"]}
    assert hit["metrics"]["val_accuracy"] >= 0.85 and hit["seconds_since_start"] > 0
    reached = next(r for r in summary["results"] if r["trial_id"] == hit["trial_id"])
    first = next(h["epoch"] for h in reached["history"] if h["val_accuracy"] >= 0.85)
    assert hit["epoch"] == first
    for row in summary["results"]:
        assert row["epochs_run"] < 20, row["stop_reason"]
        if row["epochs_run"] == 0:  # still pending when the target was reached (its actor starts slower)
            assert row["trial_id"] != hit["trial_id"]
            assert row["stop_reason"] == f"not started (stop_at: trial {hit['trial_id']} reached the target first)"
            continue
        assert row["stop_reason"].startswith(f"stop_at (trial {hit['trial_id']} reached the target)"), row
        assert Path(row["final_checkpoint"], "state.json").is_file()  # stopped, checkpoints kept
    assert json.loads((tmp_path / "stop-at" / "summary.json").read_text())["stop_at"]["reached"] == hit
