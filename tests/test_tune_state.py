"""Tune's state files: a whole copy is kept as Tune rewrites them, and put back for one a full disk cut."""

from __future__ import annotations

import json
import os

from orchestrator.engine.tune_state import KeepCompleteTuneState, restore_cut_state
from orchestrator.layout import RunLayout


def test_a_cut_experiment_state_is_put_back_from_its_last_whole_copy(tmp_path):
    state = tmp_path / "experiment_state-2026-11-27_10-00-00.json"
    search_alg = tmp_path / "basic-variant-state-2026-11-27_10-00-00.json"
    keeper = KeepCompleteTuneState(str(tmp_path))
    for generation in (1, 2):
        state.write_text(json.dumps({"trial_data": [[f"trial {generation}"]]}))
        search_alg.write_text(json.dumps({"generation": generation}))
        os.utime(state, ns=(generation * 10**9, generation * 10**9))  # a rewrite, as Tune's copy leaves it
        keeper.on_step_end(iteration=generation, trials=[])
    assert restore_cut_state(tmp_path) is None  # nothing cut: nothing done

    whole = state.read_text()
    state.write_text(whole[: len(whole) // 2])  # Tune's last rewrite, cut by the full disk
    keeper.on_step_end(iteration=3, trials=[])  # a cut file never replaces the whole copy
    note = restore_cut_state(tmp_path)
    assert note and state.name in note and search_alg.name not in note
    assert json.loads(state.read_text()) == {"trial_data": [["trial 2"]]}
    copies = RunLayout(tmp_path).tune_state_copies
    assert sorted(p.name for p in copies.iterdir()) == sorted([state.name, search_alg.name])


def test_a_cut_file_without_a_whole_copy_is_left_for_the_integrity_check_to_name(tmp_path):
    state = tmp_path / "experiment_state-2026-11-27_10-00-00.json"
    state.write_text('{"trial_data": [')
    assert restore_cut_state(tmp_path) is None
    assert state.read_text() == '{"trial_data": ['
