"""What the worker loop asks of the run it belongs to: who it is, report an epoch, where to resume.

Two answers: :class:`RayTrainSession` (a Ray Train worker, the loop's default) and
``orchestrator.worker.in_actor.TuneTrialSession`` (a one-worker trial training
inside its Tune actor, the search's fast path).
"""

from __future__ import annotations

from typing import Optional

import ray.train


class RayTrainSession:
    """The loop as one worker of a Ray Train worker group.

    Args:
        none: everything comes from ``ray.train.get_context()``.
    """

    def __init__(self):
        context = ray.train.get_context()
        self.world_rank = context.get_world_rank()
        self.world_size = context.get_world_size()

    def report(self, metrics: dict, checkpoint: Optional["ray.train.Checkpoint"] = None) -> None:
        ray.train.report(metrics, checkpoint=checkpoint)

    def resume_point(self):
        from orchestrator.worker.resume import resume_point

        return resume_point()

    def report_again(self, point, state: dict, identity: dict) -> None:
        from orchestrator.worker.resume import report_again

        report_again(point, state, identity)
