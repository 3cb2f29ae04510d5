"""Search algorithms by name: each one in the registry is accepted by the spec and runs under Tune."""

from __future__ import annotations

import pytest

from orchestrator.errors import UserError
from orchestrator.search_algorithms import ALGORITHMS, algorithm, asha
from orchestrator.search_space import load_search

SPACE = {"optimizer.learning_rate": {"loguniform": [0.0003, 0.01]}}


def search_of(name: str, **search):
    return load_search({"training": {"epochs": 6},
                        "search": {"algorithm": name, "samples": 4, "space": SPACE, **search}})


@pytest.mark.parametrize("name", sorted(ALGORITHMS))
def test_every_algorithm_builds_what_tune_runs(name):
    from ray.tune.schedulers import AsyncHyperBandScheduler, PopulationBasedTraining
    from ray.tune.search import Searcher, SearchAlgorithm

    search = search_of(name)
    algo = algorithm(name)
    searcher = algo.searcher(search, 2)
    assert isinstance(searcher, (Searcher, SearchAlgorithm)), searcher
    if algo.population:
        # PBT brings its own scheduler, which replaces ASHA.
        assert isinstance(algo.scheduler(search, 2), PopulationBasedTraining)
        assert asha(search) is None
    else:
        assert algo.scheduler is None
        scheduler = asha(search)
        assert isinstance(scheduler, AsyncHyperBandScheduler)
        assert scheduler._max_t == 6  # a trial's epochs are ASHA's time budget
        assert asha(search_of(name, asha={"enabled": False})) is None


def test_an_unknown_algorithm_is_refused_in_one_line_naming_the_known_ones():
    with pytest.raises(UserError) as err:
        search_of("bayes")
    message = str(err.value)
    assert "\n" not in message and "unknown algorithm 'bayes'" in message
    assert all(name in message for name in ALGORITHMS), message

