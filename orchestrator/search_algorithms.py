"""Search algorithms by name: the one place that knows each one.

An entry says how Ray Tune runs the algorithm: the search algorithm that picks
the trials, the scheduler it brings (ASHA, when enabled, for one that brings
none), and what it cannot take. Ray is imported inside the builders only, so
the spec checks a name without importing Ray. Adding an algorithm is one entry
here plus its test; the spec, ``--algorithm`` and ``--help`` follow::

    $ orchestrator tune --config jobs/configs/tune_mnist.yaml --algorithm optuna
    $ orchestrator tune --config jobs/configs/pbt_mnist.yaml      # search.algorithm: pbt
    $ orchestrator tune --config jobs/configs/pb2_mnist.yaml      # search.algorithm: pb2
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Optional

from orchestrator.errors import UserError

if TYPE_CHECKING:
    from orchestrator.search_space import Search


@dataclass(frozen=True)
class Algorithm:
    """One search algorithm.

    Args:
        help: one line for ``--help``.
        searcher: ``(search, max_concurrent) -> `` a Tune ``Searcher`` (which trials to run).
        scheduler: ``(search, max_concurrent) -> `` a Tune ``TrialScheduler`` this
            algorithm brings; ``None``: ASHA when ``search.asha`` is enabled, else FIFO.
        limits_concurrency: the searcher holds ``max_concurrent`` itself (Tune ignores
            ``max_concurrent_trials`` for it, with a warning).
        enumerates_grids: ``{grid: [...]}`` domains are run in full (a sampler cannot).
        population: members copy each other's training state (PBT): each trial hands
            its checkpoints to Tune, and its summary row is its lineage.
        requires: ``(module, pip package)`` the algorithm imports: found before Ray
            starts (not imported then), so a missing one is one line, exit 2.
    """

    help: str
    searcher: Callable[["Search", Optional[int]], Any]
    scheduler: Optional[Callable[["Search", Optional[int]], Any]] = None
    limits_concurrency: bool = False
    enumerates_grids: bool = True
    population: bool = False
    requires: Optional[tuple[str, str]] = None


def _variants(search: "Search", max_concurrent: Optional[int]):
    from ray.tune.search.basic_variant import BasicVariantGenerator

    # Seeded like the trials: the same config draws the same trials. Given a
    # search_alg, Tune ignores max_concurrent_trials, so it is told here.
    return BasicVariantGenerator(random_state=search.base.seed, max_concurrent=max_concurrent or 0)


def _members(search: "Search", max_concurrent: Optional[int]):
    """A PBT population. In reused actors (the fast path) every member is a trial from the
    start, so that Tune's PBT can let them take turns: a member at a perturbation point
    hands its actor to a waiting one, and how many train at once is what the cluster's
    CPUs hold. Members that are Ray Train runs start as slots free up, as other trials do:
    a turn would cost a new worker group."""
    from orchestrator.engine.fast_trial import uses_fast_path

    return _variants(search, None if uses_fast_path(search) else max_concurrent)


def _optuna(search: "Search", max_concurrent: Optional[int]):
    from ray.tune.search import create_searcher

    return create_searcher("optuna", seed=search.base.seed)


def _pbt(search: "Search", max_concurrent: Optional[int]):
    from orchestrator.engine.pbt import pbt_scheduler

    return pbt_scheduler(search, max_concurrent)


def _pb2(search: "Search", max_concurrent: Optional[int]):
    from orchestrator.engine.pbt import pb2_scheduler

    return pb2_scheduler(search, max_concurrent)


ALGORITHMS: dict[str, Algorithm] = {
    "random": Algorithm("random draws (and every grid point) of search.space", _variants,
                        limits_concurrency=True),
    "optuna": Algorithm("Optuna's TPE sampler (pip install optuna), no grid domains", _optuna,
                        enumerates_grids=False, requires=("optuna", "optuna")),
    "pbt": Algorithm("Population Based Training (search.pbt): members copy the best and perturb its LR",
                     _members, scheduler=_pbt, limits_concurrency=True, population=True),
    "pb2": Algorithm("Population Based Bandits (search.pbt; pip install scikit-learn): as pbt, but a "
                     "Gaussian process picks the copying member's new LR within its bounds",
                     _members, scheduler=_pb2, limits_concurrency=True, population=True,
                     requires=("sklearn", "scikit-learn")),
}


def algorithm(name: str) -> Algorithm:
    """The entry for ``name`` (the spec has checked it exists)."""
    return ALGORITHMS[name]


def check_installed(name: str) -> None:
    """UserError (one line) when the algorithm's library is missing; imports nothing."""
    import importlib.util

    needed = ALGORITHMS[name].requires
    if needed and importlib.util.find_spec(needed[0]) is None:
        raise UserError(f"search.algorithm: {name} needs `pip install {needed[1]}` "
                        f"(or `pip install -e '.[{name}]'`)")


def asha(search: "Search"):
    """Ray Tune's ASHA over a trial's epochs, or ``None`` when disabled or the algorithm brings its own."""
    s = search.search
    if ALGORITHMS[s.algorithm].scheduler is not None or not s.asha.enabled:
        return None
    from ray.tune.schedulers import create_scheduler

    epochs = search.base.training.epochs
    return create_scheduler("async_hyperband", time_attr="training_iteration", max_t=epochs,
                            grace_period=min(s.asha.grace_period, epochs),
                            reduction_factor=s.asha.reduction_factor)
