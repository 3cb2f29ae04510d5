"""Learning rate per 0-based epoch for every schedule, and how the spec fills them in."""

from __future__ import annotations

import math

import pytest

from orchestrator.schedules import SCHEDULES, Constant, Cosine, HoldThenExpDecay, Step
from orchestrator.spec import build_spec, load_spec

BASE = 0.001


def close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-12, abs_tol=1e-15)


# ----------------------------------------------------------------- hold_then_exp_decay

@pytest.mark.parametrize("epoch", [0, 1, 2, 3, 4])
def test_hold_then_exp_decay_holds_base_lr_for_first_hold_epochs(epoch):
    s = HoldThenExpDecay(hold_epochs=5, rate=0.1)
    assert s(epoch, BASE) == BASE


@pytest.mark.parametrize("epoch, decays", [(5, 1), (6, 2), (7, 3), (10, 6)])
def test_hold_then_exp_decay_decays_by_exp_minus_rate_per_epoch_after_hold(epoch, decays):
    s = HoldThenExpDecay(hold_epochs=5, rate=0.1)
    assert close(s(epoch, BASE), BASE * math.exp(-0.1 * decays))


def test_hold_then_exp_decay_matches_required_points_exactly():
    s = HoldThenExpDecay(hold_epochs=5, rate=0.1)
    assert math.isclose(s(5, BASE), BASE * math.exp(-0.1))
    assert math.isclose(s(7, BASE), BASE * math.exp(-0.3))
    # The module's documented doctest values.
    assert [round(s(e, 1.0), 4) for e in (0, 4, 5, 7)] == [1.0, 1.0, 0.9048, 0.7408]


def test_hold_then_exp_decay_defaults_are_tutorials():
    s = HoldThenExpDecay()
    assert (s.hold_epochs, s.rate) == (5, 0.1)


def test_hold_then_exp_decay_is_pure_function_of_epoch():
    # A resumed run at epoch 7 gets the LR it would have had: no hidden state.
    s = HoldThenExpDecay(hold_epochs=5, rate=0.1)
    fresh = HoldThenExpDecay(hold_epochs=5, rate=0.1)
    for e in range(7):
        s(e, BASE)
    assert s(7, BASE) == fresh(7, BASE)


# ----------------------------------------------------------------- step

@pytest.mark.parametrize("epoch, factor", [
    (0, 1.0), (1, 1.0), (2, 1.0),
    (3, 0.5), (4, 0.5), (5, 0.5),
    (6, 0.25), (8, 0.25),
    (9, 0.125),
])
def test_step_halves_every_three_epochs(epoch, factor):
    s = Step(drop=0.5, every=3)
    assert close(s(epoch, BASE), BASE * factor)


# ----------------------------------------------------------------- cosine

def test_cosine_starts_at_base_and_ends_at_floor():
    s = Cosine(decay_epochs=10, min_fraction=0.1)
    assert close(s(0, BASE), BASE)
    assert close(s(10, BASE), 0.1 * BASE)


def test_cosine_midpoint_is_halfway_between_base_and_floor():
    s = Cosine(decay_epochs=10, min_fraction=0.1)
    floor = 0.1 * BASE
    assert close(s(5, BASE), (BASE + floor) / 2)


@pytest.mark.parametrize("epoch", [10, 11, 15, 100])
def test_cosine_stays_at_floor_after_decay_epochs(epoch):
    s = Cosine(decay_epochs=10, min_fraction=0.1)
    assert close(s(epoch, BASE), 0.1 * BASE)


def test_cosine_is_monotonically_non_increasing_over_its_span():
    s = Cosine(decay_epochs=10, min_fraction=0.0)
    lrs = [s(e, BASE) for e in range(12)]
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))
    assert close(lrs[-1], 0.0)


# ----------------------------------------------------------------- constant

@pytest.mark.parametrize("epoch", [0, 1, 5, 50])
def test_constant_is_base_lr_at_every_epoch(epoch):
    assert Constant()(epoch, BASE) == BASE


# ----------------------------------------------------------------- through the spec

def test_every_schedule_name_is_registered():
    assert set(SCHEDULES) == {"constant", "hold_then_exp_decay", "step", "cosine", "piecewise"}


@pytest.mark.parametrize("config, cls, epoch, expected", [
    ({"name": "constant"}, Constant, 9, BASE),
    ({"name": "hold_then_exp_decay", "hold_epochs": 2, "rate": 0.5}, HoldThenExpDecay, 3,
     BASE * math.exp(-1.0)),
    ({"name": "step", "drop": 0.5, "every": 3}, Step, 6, BASE / 4),
    ({"name": "cosine", "decay_epochs": 4, "min_fraction": 0.0}, Cosine, 2, BASE / 2),
])
def test_spec_builds_named_schedule_from_yaml_mapping(config, cls, epoch, expected):
    spec = build_spec({"lr_schedule": config})
    assert isinstance(spec.lr_schedule, cls)
    assert close(spec.lr_schedule(epoch, BASE), expected)


def test_spec_fills_cosine_decay_epochs_from_training_epochs():
    spec = build_spec({"training": {"epochs": 12}, "lr_schedule": {"name": "cosine", "min_fraction": 0.1}})
    assert spec.lr_schedule.decay_epochs == 12
    # Decays over the whole run: the last epoch index (11) is just above the floor,
    # epoch 12 is exactly at it.
    assert close(spec.lr_schedule(12, BASE), 0.1 * BASE)
    assert spec.lr_schedule(11, BASE) > 0.1 * BASE


def test_spec_fills_cosine_decay_epochs_from_default_epochs():
    spec = build_spec({"lr_schedule": {"name": "cosine"}})
    assert spec.lr_schedule.decay_epochs == spec.training.epochs == 20


def test_spec_keeps_explicit_cosine_decay_epochs():
    spec = build_spec({"training": {"epochs": 12}, "lr_schedule": {"name": "cosine", "decay_epochs": 4}})
    assert spec.lr_schedule.decay_epochs == 4


def test_cosine_decay_epochs_follows_epochs_override(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("training: {epochs: 30}\nlr_schedule: {name: cosine}\n")
    spec = load_spec(cfg, {"training.epochs": 7})
    assert spec.training.epochs == 7
    assert spec.lr_schedule.decay_epochs == 7


def test_short_label_names_schedule_and_parameters():
    assert Step(drop=0.5, every=3).short() == "step(drop=0.5,every=3)"
    assert Constant().short() == "constant"


# ----------------------------------------------------------------- piecewise

def test_piecewise_per_epoch_lrs_are_absolute_and_the_last_one_holds():
    from orchestrator.schedules import Piecewise

    s = Piecewise(lrs=[0.003, 0.002, 0.0005])
    # Whatever the base LR, the listed LRs are used: a replay does not depend on it.
    assert [s(e, 123.0) for e in range(5)] == [0.003, 0.002, 0.0005, 0.0005, 0.0005]


def test_piecewise_breakpoints_hold_each_lr_until_the_next():
    from orchestrator.schedules import Piecewise

    s = Piecewise(breakpoints=[[0, 0.01], [3, 0.001], [5, 0.0001]])
    assert [s(e, BASE) for e in range(7)] == [0.01] * 3 + [0.001] * 2 + [0.0001] * 2


def test_piecewise_replays_float32_rounded_lrs_exactly_through_yaml(tmp_path):
    # What Keras logs is the optimizer's float32 LR widened to a float: the YAML
    # written for a replay must give back the very same number.
    lrs = [0.0012000000569969416, 0.0009600000339560211, 0.0011520000407472253]
    cfg = tmp_path / "replay.yaml"
    import yaml

    cfg.write_text(yaml.safe_dump({"lr_schedule": {"name": "piecewise", "lrs": lrs}}))
    spec = load_spec(cfg)
    assert [spec.lr_schedule(e, 1.0) for e in range(3)] == lrs
    assert spec.lr_schedule.short() == "piecewise(epochs=3)"


@pytest.mark.parametrize("schedule, message", [
    ({"lrs": [0.001, -0.1]}, "lr_schedule.lrs: every learning rate must be > 0, got -0.1"),
    ({"breakpoints": [[0, 0.01], [4, 0.001], [4, 0.0001]]},
     "lr_schedule.breakpoints: epochs must increase, got 4 after 4"),
    ({"breakpoints": [[0, 0.01], [5, 0.001], [2, 0.0001]]},
     "lr_schedule.breakpoints: epochs must increase, got 2 after 5"),
    ({"breakpoints": [[2, 0.01]]}, "lr_schedule.breakpoints: the first breakpoint must be at epoch 0, got 2"),
    ({"breakpoints": [[0, 0.01], [2, -1]]}, "lr_schedule.breakpoints: every learning rate must be > 0, got -1"),
    ({}, "lr_schedule.lrs: give exactly one of"),
    ({"lrs": [0.1], "breakpoints": [[0, 0.1]]}, "lr_schedule.lrs: give exactly one of"),
])
def test_bad_piecewise_schedules_fail_in_one_line(schedule, message):
    from conftest import error_of

    msg = error_of(build_spec, {"lr_schedule": {"name": "piecewise", **schedule}})
    assert msg.startswith(message), msg
