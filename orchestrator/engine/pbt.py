"""Population Based Training on Ray Tune's own scheduler, members of one worker or several.

    $ orchestrator tune --config jobs/configs/pbt_mnist.yaml --name pbt1
    $ orchestrator train --config results/pbt1/best_schedule.yaml --name replay1

Ray Tune's ``PopulationBasedTraining`` exploits by pausing the weaker trial
and starting its function again with ``tune.get_checkpoint()`` = the better
trial's last *Tune* checkpoint. ``TuneReportCallback`` only forwards metrics
(the Train checkpoint's path, not a Tune checkpoint), so a PBT member hands
every Train checkpoint to Tune itself:

- :class:`HandCheckpointToTune`, a Train callback in Train's controller, puts
  each reported checkpoint on a queue and waits until the trial has passed it
  to ``tune.report`` (which copies it into Tune's trial directory), so Train's
  own checkpoint rotation cannot delete it first.
- :func:`run_pbt_trial` runs ``trainer.fit()`` in a thread and reports what
  arrives. When it starts from a Tune checkpoint (an exploit, or its own after
  PBT paused it) it starts a new Train run ("segment") whose workers restore
  that checkpoint: weights, optimizer state, epoch, EarlyStopping and
  best-so-far state, and the history of every epoch before, with the LR each
  epoch actually used. From then on the LR is the member's (mutated) config's.
- A member of one worker on local storage (the search's fast path,
  ``engine/fast_trial.py``) trains each segment in its reused Tune actor
  instead, and reports each checkpoint to Tune directly: a pause or an exploit
  then restarts the member in a process that has TensorFlow and the data, not
  a new Ray Train worker group.
- ``lineage.json`` in each Tune checkpoint records who trained it and every
  copy in its ancestry ({member, from, epoch}), so a member's record says
  which member it copied from at which epoch, inherited copies included.
"""

from __future__ import annotations

import json
import queue
import threading
from pathlib import Path
from typing import Any, Optional

from orchestrator.checkpoint_files import STATE
from orchestrator.layout import RunLayout
from orchestrator.results import read_json, write_atomic

LINEAGE = "lineage.json"
# How long Train's controller waits for the trial to take a checkpoint: far
# longer than a report; if the trial died, its controller is gone with it anyway.
HANDOFF_TIMEOUT_S = 600.0


def _user_callback_base():
    from ray.train.v2.api.callback import UserCallback

    return UserCallback


class HandCheckpointToTune(_user_callback_base()):
    """Hand each Train report (metrics + checkpoint path) to the Tune trial; wait until it took it.

    Args:
        items: a ``ray.util.queue.Queue`` the trial reads reports from.
        acks: a queue the trial answers on once Tune has copied the checkpoint.
    """

    def __init__(self, items, acks):
        self.items = items
        self.acks = acks

    def after_report(self, run_context, metrics: list, checkpoint) -> None:
        item = dict(metrics[0])
        item["checkpoint_path"] = checkpoint.path if checkpoint else None
        self.items.put(item, timeout=HANDOFF_TIMEOUT_S)
        self.acks.get(timeout=HANDOFF_TIMEOUT_S)


def read_lineage(directory: str | Path) -> Optional[dict]:
    path = Path(directory) / LINEAGE
    return read_json(path) if path.exists() else None


def start_lineage(trial_id: str, start_dir: Optional[str], hparams: dict) -> dict:
    """This member's lineage, given the checkpoint its function starts from (None: from scratch)."""
    if start_dir is None:
        return {"member": trial_id, "copies": []}
    inherited = read_lineage(start_dir) or {"member": trial_id, "copies": []}
    copies = list(inherited.get("copies", []))
    if inherited.get("member") != trial_id:  # an exploit: PBT gave us another member's checkpoint
        epoch = int(read_json(Path(start_dir) / STATE)["epoch"])
        copies.append({"member": trial_id, "from": inherited.get("member"), "epoch": epoch,
                       "config": hparams})
    return {"member": trial_id, "copies": copies}


def _next_segment(trials_dir: Path, trial_id: str) -> str:
    """A fresh Train run name for each start of a member: Train must not resume its own last run."""
    taken = {p.name for p in trials_dir.glob(f"{trial_id}*")} if trials_dir.exists() else set()
    n = 0
    while (f"{trial_id}" if n == 0 else f"{trial_id}.{n}") in taken:
        n += 1
    return trial_id if n == 0 else f"{trial_id}.{n}"


def run_pbt_trial(config: dict, search=None, data: dict = None, run_dir: str = None) -> None:
    """One PBT member's function: from scratch or from the checkpoint Tune gives it.

    Every start of a member trains a new segment (``trials/<member>[.n]``) from
    that checkpoint, in this reused Tune actor (the fast path, one worker) or as a
    Ray Train run.
    """
    from ray import tune

    from orchestrator.contract import Trial
    from orchestrator.engine.fast_trial import uses_fast_path

    trial_id = tune.get_context().get_trial_id()
    hparams = search.hparams(config)
    start = tune.get_checkpoint()
    lineage = start_lineage(trial_id, start.path if start else None, hparams)
    donor = (read_lineage(start.path) or {}).get("member") if start is not None else None
    if donor not in (None, trial_id):
        print(f"[orchestrator] member {trial_id} continues from member {donor}'s epoch "
              f"{lineage['copies'][-1]['epoch']} with {hparams}", flush=True)
    layout = RunLayout(Path(run_dir))
    segment = _next_segment(layout.trials, trial_id)
    spec = search.trial_spec(config, name=segment)
    member = Trial(trial_id, dict(hparams))  # one TensorBoard run per member, whatever its config becomes

    def to_tune(item: dict, checkpoint_path: Optional[str]) -> None:
        """Report an epoch with its checkpoint, stamped with the lineage that trained it."""
        checkpoint = None
        if checkpoint_path:
            write_atomic(Path(checkpoint_path) / LINEAGE,
                         lambda tmp: tmp.write_text(json.dumps(lineage, indent=1)))
            checkpoint = tune.Checkpoint.from_directory(checkpoint_path)
        tune.report({**item, "trial_id": trial_id}, checkpoint=checkpoint)

    if uses_fast_path(search):
        _member_in_actor(search, spec, data, layout, segment, member, start, to_tune)
    else:
        _member_as_train_run(spec, data, layout, segment, member, start, to_tune)


def _member_in_actor(search, spec, data: dict, layout: RunLayout, segment: str, member, start, to_tune) -> None:
    """The segment trained in this (reused) Tune actor: an exploit costs no new process."""
    from ray.train import Checkpoint as TrainCheckpoint

    from orchestrator.contract import WorkerConfig
    from orchestrator.engine.fast_trial import train_in_actor

    train_in_actor(search, WorkerConfig(
        spec=spec, task=data["task"], data=data["ref"], run_dir=str(layout.trial(segment).root),
        tensorboard_dir=str(layout.tensorboard_run(member.label)), trial=member,
        start_checkpoint=TrainCheckpoint(start.path) if start is not None else None), to_tune=to_tune)


def _member_as_train_run(spec, data: dict, layout: RunLayout, segment: str, member, start, to_tune) -> None:
    """The segment as a Ray Train run, whose checkpoints are handed over one by one."""
    from ray.train import Checkpoint as TrainCheckpoint
    from ray.util.queue import Queue

    from orchestrator.engine.train import make_trainer

    items = Queue(1, actor_options={"num_cpus": 0})
    acks = Queue(1, actor_options={"num_cpus": 0})
    trainer = make_trainer(
        spec, data["task"], data["ref"], storage_path=str(layout.trials), name=segment,
        tensorboard_dir=str(layout.tensorboard_run(member.label)), trial=member,
        callbacks=[HandCheckpointToTune(items, acks)],
        start_checkpoint=TrainCheckpoint(start.path) if start is not None else None)

    outcome: dict[str, Any] = {}

    def fit() -> None:
        try:
            trainer.fit()
        except BaseException as exc:  # noqa: BLE001  (re-raised in the trial's thread below)
            outcome["error"] = exc

    thread = threading.Thread(target=fit, name=f"fit-{segment}", daemon=True)
    thread.start()
    while True:
        try:
            item = items.get(timeout=1.0)
        except queue.Empty:  # ray.util.queue.Empty is one
            if not thread.is_alive():
                break  # the controller waits for each ack, so nothing can be left behind
            continue
        to_tune(item, item.get("checkpoint_path"))
        acks.put(True)
    thread.join()
    if "error" in outcome:
        raise outcome["error"]


def _member_scheduler_class(base):
    """``base`` (Tune's ``PopulationBasedTraining`` or its subclass ``PB2``) adapted to members."""
    from ray.tune.schedulers import TrialScheduler

    class Member(base):
        """Ray Tune's PBT (or PB2), adapted to members that report a checkpoint with every epoch.

        - Every member at its perturbation point keeps that checkpoint as the one
          others may copy, not only a member already in the top quantile: with
          Tune's rule, a member reaching the point before the others are scored
          is never copyable at that point (in a population of 2, never at all
          when it is always ahead).
        - A member's last epoch (``stop_reason`` set) is never perturbed: its
          function is ending, and copying into it would restart a finished state.
        - A resumed search starts a new scheduler, whose members have passed no
          perturbation point yet: a member's first result past epoch 1 sets the
          last point its lineage passed, so that it is not perturbed again at once
          (a second copy, one epoch after the one it made before the stop).
        - A member is not paused to let a waiting one run (Tune's time sharing)
          when all unfinished members fit at once (``slots``): pausing would
          only restart it. Synchronous PBT pauses every member at each
          perturbation point by design, and keeps doing so.
        - A member never copies a checkpoint older than its own state (a donor
          that last passed a point at an earlier epoch, paused while members
          take turns): it keeps training and becomes copyable instead. Tune's
          rule sends it back to the donor's epoch with the donor's time, which
          ties with the paused donors in Tune's choice of who runs next, so a
          member whose new values keep it below the donors can copy them at the
          same old epoch again and again while they wait (seen: 27 copies from
          epoch 8 in one PB2 search, 204 s instead of 40-60 s).

        Args:
            slots: how many members run at once.
            **kwargs: as for ``PopulationBasedTraining`` (or ``PB2``).
        """

        def __init__(self, slots: int, **kwargs):
            super().__init__(**kwargs)
            self._slots = slots

        def on_trial_result(self, tune_controller, trial, result):
            state = self._trial_state.get(trial)
            epoch = result.get(self._time_attr)
            if state is not None and not state.last_train_time and epoch is not None and epoch > 1:
                passed = (int(epoch) - 1) // self._perturbation_interval * self._perturbation_interval
                state.last_perturbation_time = state.last_train_time = passed
            if result.get("stop_reason"):
                return TrialScheduler.CONTINUE
            decision = super().on_trial_result(tune_controller, trial, result)
            unfinished = [t for t in tune_controller.get_trials() if not t.is_finished()]
            if decision == TrialScheduler.PAUSE and not self._synch and len(unfinished) <= self._slots:
                return TrialScheduler.CONTINUE
            return decision

        def _exploit(self, tune_controller, trial, trial_to_clone):
            own, donor = self._trial_state[trial], self._trial_state[trial_to_clone]
            if donor.last_train_time < own.last_train_time:
                return  # an older state: no copy, and _checkpoint_or_exploit keeps this one copyable
            super()._exploit(tune_controller, trial, trial_to_clone)

        def _checkpoint_or_exploit(self, trial, tune_controller, upper_quantile, lower_quantile):
            exploits = self._num_perturbations
            super()._checkpoint_or_exploit(trial, tune_controller, upper_quantile, lower_quantile)
            if trial not in upper_quantile and self._num_perturbations == exploits:
                state = self._trial_state[trial]
                state.last_checkpoint = tune_controller._schedule_trial_save(trial, result=state.last_result)

    Member.__name__ = Member.__qualname__ = f"Member{base.__name__}"
    return Member


def pbt_scheduler(search, max_concurrent: Optional[int]):
    """The search's PBT scheduler. Time is the epoch each member reports (its lineage's,
    continued across exploits), not Tune's iteration count, which restarts with every
    start of a member's function."""
    from ray.tune.schedulers import PopulationBasedTraining

    s = search.search
    return _member_scheduler_class(PopulationBasedTraining)(
        slots=max_concurrent, time_attr="epoch", perturbation_interval=s.pbt.perturbation_interval,
        synch=s.pbt.synch,
        hyperparam_mutations=search.pbt_mutations(), quantile_fraction=s.pbt.quantile,
        resample_probability=s.pbt.resample_probability,
        perturbation_factors=tuple(s.pbt.perturbation_factors),
        custom_explore_fn=search.clamp_mutations)


def pb2_scheduler(search, max_concurrent: Optional[int]):
    """The search's PB2 scheduler (Ray Tune's Population Based Bandits), members as for PBT.

    PB2 records each member's score and values at every perturbation point; a
    copying member gets the values that a Gaussian process over those records
    (improvement per epoch against time, score and values) rates best by UCB.
    Until the donor has passed two points with the same values (Ray's PB2
    fits only then), a copy keeps the donor's values: the first copies always do.
    """
    from ray.tune.schedulers.pb2 import PB2

    s = search.search
    return _member_scheduler_class(PB2)(
        slots=max_concurrent, time_attr="epoch", perturbation_interval=s.pbt.perturbation_interval,
        synch=s.pbt.synch, hyperparam_bounds=search.pb2_bounds(), quantile_fraction=s.pbt.quantile,
        custom_explore_fn=search.clamp_mutations)


def member_record(final_dir: Optional[str], trial_id: str) -> tuple[Optional[dict], dict]:
    """(state.json, lineage.json) of a member's last Tune checkpoint; (None, empty lineage) without one."""
    empty = {"member": trial_id, "copies": []}
    if not final_dir or not (Path(final_dir) / STATE).exists():
        return None, empty
    return read_json(Path(final_dir) / STATE), read_lineage(final_dir) or empty


def trained_by(epochs: list[int], member: str, copies: list[dict]) -> dict[int, str]:
    """Which member trained each epoch of a lineage: before each copy, the member copied from."""
    owner: dict[int, str] = {}
    later_member = member
    bound = None
    for copy in sorted(copies, key=lambda c: c["epoch"], reverse=True):
        for e in epochs:
            if e > copy["epoch"] and (bound is None or e <= bound) and e not in owner:
                owner[e] = later_member
        later_member, bound = copy["from"], copy["epoch"]
    for e in epochs:
        owner.setdefault(e, later_member)
    return owner


def replay_config(spec_dump: dict, history: list[dict], source: str) -> str:
    """``best_schedule.yaml``: a complete train config whose piecewise schedule is ``history``'s LRs."""
    import yaml

    lrs = [float(h["learning_rate"]) for h in history]
    config = json.loads(json.dumps(spec_dump))  # a plain copy
    config.pop("name", None)
    config["lr_schedule"] = {"name": "piecewise", "lrs": lrs}
    config["optimizer"]["learning_rate"] = lrs[0]  # unused by piecewise; kept equal to epoch 0's
    config["training"]["epochs"] = len(lrs)
    header = (f"# The LR of every epoch of {source}, as a train config that runs it from scratch:\n"
              "#   orchestrator train --config best_schedule.yaml --name replay1\n"
              "# lr_schedule.lrs[e] is the LR epoch e (0-based) used; the rest is that trial's spec.\n")
    return header + yaml.safe_dump(config, sort_keys=False, default_flow_style=None, width=100)
