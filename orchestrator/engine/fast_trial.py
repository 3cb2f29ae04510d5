"""Which trials take the fast path (one worker, trained in Tune's reused trial actor), and its trial function.

The driver side only: TensorFlow is imported inside the trial function, in the
trial's actor (see :mod:`orchestrator.worker.in_actor`), never in the search's driver.
"""

from __future__ import annotations


from orchestrator import process
from orchestrator.contract import WorkerConfig
from orchestrator.search_space import Search


def uses_fast_path(search: Search) -> bool:
    """One worker per trial, asked for (``search.fast_path``, the default), storage a local path.

    The fast path writes a trial's checkpoints with file operations on a path
    every node mounts; storage given as a URI (object storage) keeps Ray Train,
    which uploads them. PBT members take it too (``engine/pbt.py`` starts each of
    their segments in the actor).
    """
    return search.search.fast_path and search.base.scaling.workers == 1 and "://" not in search.base.storage


def trial_resources(search: Search) -> dict:
    """The trial actor trains itself: it holds the worker's CPUs and GPUs."""
    scaling = search.base.scaling
    resources = {"CPU": scaling.cpus_per_worker}
    if scaling.gpus_per_worker:
        resources["GPU"] = scaling.gpus_per_worker
    return resources


def train_in_actor(search: Search, run: WorkerConfig, to_tune=None) -> None:
    """Train ``run`` in this Tune actor, as its one Ray Train worker would (see ``worker/in_actor.py``).

    Args:
        search: the search (its verbosity picks the worker's console).
        run: what that worker would get.
        to_tune: how each epoch reaches Tune (``TuneTrialSession``); by default its metrics alone.
    """
    # What a Ray Train worker gets in its runtime env, before TensorFlow's first import here.
    process.use_worker_env(search.base.verbose)
    from orchestrator.worker.in_actor import train_trial

    train_trial(run, to_tune=to_tune)


def run_fast_trial(config: dict, search: Search = None, data: dict = None, run_dir: str = None) -> None:
    """One Tune trial trained in this actor: the same worker loop, reporting each epoch to Tune."""
    from orchestrator.engine.tune import this_trial

    trial_id, spec, layout, trial = this_trial(config, search, run_dir)
    train_in_actor(search, WorkerConfig(spec=spec, task=data["task"], data=data["ref"],
                                        run_dir=str(layout.trial(trial_id).root),
                                        tensorboard_dir=str(layout.tensorboard_run(trial.label)), trial=trial))
