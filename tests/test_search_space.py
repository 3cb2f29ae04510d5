"""The search space: parsing, validation before anything runs, and what each trial gets."""

from __future__ import annotations


import pytest

from orchestrator.errors import UserError
from orchestrator.search_space import load_search

SPACE = {
    "optimizer.learning_rate": {"loguniform": [0.0003, 0.01]},
    "early_stopping.patience": {"randint": [2, 5]},
    "optimizer.name": {"choice": ["adam", "sgd"]},
    "lr_schedule": {
        "hold_then_exp_decay": {"hold_epochs": {"randint": [2, 6]}, "rate": {"uniform": [0.05, 0.3]}},
        "step": {"drop": 0.5, "every": {"randint": [2, 4]}},
        "cosine": {},
    },
}


def search_of(space=None, **search):
    return load_search({"training": {"epochs": 10}, "search": {"space": space or SPACE, **search}})


def test_trial_spec_applies_only_the_drawn_family_and_fields():
    s = search_of()
    config = {"optimizer.learning_rate": 0.002, "early_stopping.patience": 4, "optimizer.name": "sgd",
              "lr_schedule": "step",
              "schedule_params": {"hold_then_exp_decay": {"hold_epochs": 3, "rate": 0.2},
                                  "step": {"drop": 0.5, "every": 3}}}
    spec = s.trial_spec(config)
    assert spec.optimizer.learning_rate == 0.002 and spec.optimizer.name == "sgd"
    assert spec.early_stopping.patience == 4
    assert spec.lr_schedule.name == "step" and spec.lr_schedule.every == 3
    assert spec.training.epochs == 10  # the base spec is kept
    assert s.hparams(config) == {"optimizer.learning_rate": 0.002, "early_stopping.patience": 4,
                                 "optimizer.name": "sgd", "lr_schedule": "step", "step.drop": 0.5, "step.every": 3}


def test_cosine_in_a_trial_decays_over_the_runs_epochs():
    spec = search_of().trial_spec({"lr_schedule": "cosine", "schedule_params": {}})
    assert spec.lr_schedule.decay_epochs == 10


def test_param_space_is_tune_domains_with_inclusive_randint():
    from ray.tune.search.sample import Categorical, Float, Integer

    space = search_of().param_space()
    assert isinstance(space["optimizer.learning_rate"], Float)
    patience = space["early_stopping.patience"]
    assert isinstance(patience, Integer) and (patience.lower, patience.upper) == (2, 6)  # 5 inclusive
    assert isinstance(space["lr_schedule"], Categorical)
    assert set(space["lr_schedule"].categories) == {"hold_then_exp_decay", "step", "cosine"}
    assert space["schedule_params"]["step"]["drop"] == 0.5


def test_samples_from_the_space_build_valid_specs():
    from ray.tune.search.basic_variant import BasicVariantGenerator  # noqa: F401
    from ray.tune.search.variant_generator import generate_variants

    s = search_of()
    seen = set()
    for _ in range(30):
        for _, config in generate_variants(s.param_space()):
            spec = s.trial_spec(config)
            assert 0.0003 <= spec.optimizer.learning_rate <= 0.01
            assert 2 <= spec.early_stopping.patience <= 5
            seen.add(spec.lr_schedule.name)
    assert seen == {"hold_then_exp_decay", "step", "cosine"}


def test_optuna_accepts_the_space():
    from ray.tune.search.optuna import OptunaSearch

    s = search_of(algorithm="optuna")
    converted = OptunaSearch.convert_search_space(s.param_space())
    assert "optimizer.learning_rate" in converted and "lr_schedule" in converted


@pytest.mark.parametrize("space, search, expected", [
    ({}, {}, "search.space: the search space is empty"),
    ({"optimizer.learning_rate": {"loguniform": [0, 0.1]}}, {}, "loguniform needs low > 0"),
    ({"optimizer.learning_rate": {"uniform": [0.1, 0.01]}}, {}, "uniform needs low < high"),
    ({"optimizer.learning_rate": {"uniform": [-0.1, 0.01]}}, {}, "optimizer.learning_rate"),
    ({"early_stopping.patience": {"randint": [0, 3]}}, {}, "early_stopping.patience"),
    ({"early_stopping.patience": {"randint": [1.5, 3]}}, {}, "randint needs integer bounds"),
    ({"optimizer.name": {"choice": []}}, {}, "choice needs at least one value"),
    ({"optimizer.name": {"choice": ["adam", "rmsprop"]}}, {}, "optimizer.name"),
    ({"training.epoch": 3}, {}, "training.epoch: unknown key"),
    ({"optimizer.learning_rate": {"normal": [0, 1]}}, {}, "got keys ['normal']"),
    ({"lr_schedule": {"linear": {}}}, {}, "search.space.lr_schedule.linear: unknown schedule"),
    ({"lr_schedule": {"step": {"rate": 0.1}}}, {}, "search.space.lr_schedule.step.rate: unknown parameter"),
    ({"lr_schedule": {"step": {"drop": {"uniform": [0.5, 2.0]}}}}, {}, "lr_schedule.step"),
    ({"optimizer.learning_rate": {"grid": [0.001, 0.01]}}, {"algorithm": "optuna"}, "grid domains need"),
    (SPACE, {"samples": 0}, "search.samples"),
    (SPACE, {"algorithm": "bayes"}, "search.algorithm"),
    (SPACE, {"asha": {"reduction_factor": 1}}, "search.asha.reduction_factor"),
])
def test_bad_spaces_fail_before_anything_runs(space, search, expected):
    with pytest.raises(UserError) as err:
        search_of(space, **search) if space else load_search({"search": {"space": {}, **search}})
    message = str(err.value)
    assert expected in message and "\n" not in message, message


def test_a_config_without_search_section_is_refused():
    with pytest.raises(UserError, match="no `search:` section"):
        load_search({"training": {"epochs": 3}})


def test_workers_per_trial_sets_the_trials_scaling():
    assert search_of(workers_per_trial=3).base.scaling.workers == 3


# ----------------------------------------------------------------- PBT (pure parts)

def test_the_shipped_pbt_config_is_a_population_of_4_perturbed_every_2_epochs():
    from pathlib import Path

    from orchestrator.search_space import load_search
    from orchestrator.spec import read_yaml

    search = load_search(read_yaml(Path(__file__).parents[1] / "jobs" / "configs" / "pbt_mnist.yaml"))
    assert search.search.algorithm == "pbt" and search.population() == 4
    assert search.search.pbt.perturbation_interval == 2 and search.mutated() == ["optimizer.learning_rate"]


def test_pbt_mutations_stay_inside_a_range_but_not_inside_a_grid():
    from orchestrator.search_space import load_search

    def search(domain):
        return load_search({"training": {"epochs": 4}, "search": {
            "algorithm": "pbt", "samples": 2, "space": {"optimizer.learning_rate": domain}}})

    ranged = search({"loguniform": [0.001, 0.01]})
    assert ranged.clamp_mutations({"optimizer.learning_rate": 0.012}) == {"optimizer.learning_rate": 0.01}
    assert ranged.clamp_mutations({"optimizer.learning_rate": 0.0008}) == {"optimizer.learning_rate": 0.001}
    gridded = search({"grid": [0.002, 0.3]})
    assert gridded.population() == 4
    assert gridded.clamp_mutations({"optimizer.learning_rate": 0.0016}) == {"optimizer.learning_rate": 0.0016}
    assert gridded.pbt_mutations()["optimizer.learning_rate"]() in (0.002, 0.3)  # resampled from the grid


def test_the_shipped_pb2_config_explores_the_lr_within_the_spaces_bounds():
    from pathlib import Path

    from orchestrator.spec import read_yaml

    search = load_search(read_yaml(Path(__file__).parents[1] / "jobs" / "configs" / "pb2_mnist.yaml"))
    assert search.search.algorithm == "pb2" and search.population() == 4
    assert search.pb2_bounds() == {"optimizer.learning_rate": [0.0003, 0.01]}
    # PB2's picks come as float32: kept inside the bounds.
    assert search.clamp_mutations({"optimizer.learning_rate": 0.0100001}) == {"optimizer.learning_rate": 0.01}


def test_pb2_bounds_of_a_grid_are_its_smallest_and_largest_values():
    search = load_search({"training": {"epochs": 4}, "search": {
        "algorithm": "pb2", "samples": 1, "space": {"optimizer.learning_rate": {"grid": [0.3, 0.002]}}}})
    assert search.population() == 2 and search.pb2_bounds() == {"optimizer.learning_rate": [0.002, 0.3]}
    assert search.clamp_mutations({"optimizer.learning_rate": 0.31}) == {"optimizer.learning_rate": 0.3}


def test_an_algorithm_whose_library_is_missing_is_one_line_before_ray(monkeypatch):
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "sklearn" else find_spec(name, *a))
    with pytest.raises(UserError) as err:
        load_search({"training": {"epochs": 4}, "search": {
            "algorithm": "pb2", "samples": 2, "space": {"optimizer.learning_rate": {"loguniform": [0.001, 0.01]}}}})
    assert str(err.value) == "search.algorithm: pb2 needs `pip install scikit-learn` (or `pip install -e '.[pb2]'`)"


@pytest.mark.parametrize("algorithm", ["pbt", "pb2"])
def test_a_member_never_copies_a_state_older_than_its_own(algorithm):
    """A member at epoch 10 whose donor last passed a point at epoch 8 (paused, waiting for
    its turn) keeps its own state; a donor at the same or a later epoch is copied."""
    from unittest import mock

    from ray.tune.schedulers.pbt import _PBTTrialState

    from orchestrator.engine.pbt import pb2_scheduler, pbt_scheduler

    search = load_search({"training": {"epochs": 12}, "search": {
        "algorithm": algorithm, "samples": 4, "pbt": {"perturbation_interval": 2},
        "space": {"optimizer.learning_rate": {"loguniform": [0.001, 0.01]}}}})
    scheduler = (pbt_scheduler if algorithm == "pbt" else pb2_scheduler)(search, 2)
    member, donor = mock.MagicMock(config={"optimizer.learning_rate": 0.002}), \
        mock.MagicMock(config={"optimizer.learning_rate": 0.004})
    for trial, epoch in ((member, 10), (donor, 8)):
        scheduler._trial_state[trial] = _PBTTrialState(trial)
        scheduler._trial_state[trial].last_train_time = scheduler._trial_state[trial].last_perturbation_time = epoch
    controller = mock.MagicMock()
    with mock.patch.object(type(scheduler).__mro__[1], "_exploit") as tunes_exploit:
        scheduler._exploit(controller, member, donor)
        assert not tunes_exploit.called  # epoch 8 < 10: no copy
        scheduler._trial_state[donor].last_train_time = 10
        scheduler._exploit(controller, member, donor)
        tunes_exploit.assert_called_once_with(controller, member, donor)


def test_who_trained_each_epoch_of_a_lineage():
    from orchestrator.engine.pbt import trained_by

    # c copied b at epoch 6, which had copied a at epoch 2.
    copies = [{"member": "b", "from": "a", "epoch": 2}, {"member": "c", "from": "b", "epoch": 6}]
    owner = trained_by(list(range(1, 9)), "c", copies)
    assert owner == {1: "a", 2: "a", 3: "b", 4: "b", 5: "b", 6: "b", 7: "c", 8: "c"}
    assert trained_by([1, 2, 3], "a", []) == {1: "a", 2: "a", 3: "a"}


def test_a_start_from_another_members_checkpoint_is_recorded_as_a_copy(tmp_path):
    import json

    from orchestrator.engine.pbt import LINEAGE, start_lineage

    donor_ckpt = tmp_path / "ckpt"
    donor_ckpt.mkdir()
    (donor_ckpt / "state.json").write_text(json.dumps({"epoch": 4, "history": []}))
    (donor_ckpt / LINEAGE).write_text(json.dumps({"member": "a", "copies": [{"member": "a", "from": "b", "epoch": 2}]}))
    lineage = start_lineage("c", str(donor_ckpt), {"optimizer.learning_rate": 0.0012})
    assert lineage == {"member": "c", "copies": [
        {"member": "a", "from": "b", "epoch": 2},
        {"member": "c", "from": "a", "epoch": 4, "config": {"optimizer.learning_rate": 0.0012}}]}
    # Its own checkpoint (PBT paused and resumed it): no copy.
    assert start_lineage("a", str(donor_ckpt), {})["copies"] == [{"member": "a", "from": "b", "epoch": 2}]
    assert start_lineage("a", None, {}) == {"member": "a", "copies": []}


def test_a_trials_best_checkpoint_is_best_by_the_searchs_metric():
    spec = search_of(metric="val_accuracy", mode="max").trial_spec({"optimizer.learning_rate": 0.001})
    assert (spec.checkpoint.monitor, spec.checkpoint.mode) == ("val_accuracy", "max")
    with pytest.raises(UserError) as err:
        load_search({"checkpoint": {"monitor": "val_loss"},
                     "search": {"metric": "val_accuracy", "mode": "max", "space": SPACE}})
    assert "checkpoint.monitor: 'val_loss' differs from search.metric 'val_accuracy'" in str(err.value)
    assert "\n" not in str(err.value)


def test_the_hparams_dashboard_compares_trials_by_the_searchs_metric():
    from orchestrator.best import trial_metrics

    assert trial_metrics("val_loss") == ("best_val_loss", "best_val_accuracy", "epochs_run")
    assert trial_metrics("val_accuracy") == ("best_val_accuracy", "best_val_loss", "epochs_run")
