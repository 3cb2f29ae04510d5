"""Why a trial ended, in one vocabulary: as the summary records it, and in the console's words.

    $ jq '.results[].stop_reason' results/s1/summary.json
    "early_stopping (patience) at epoch 6"
    "asha at epoch 2"
    "max_epochs (12)"

The live search table says the same in words a Keras user reads
(``EarlyStopping at epoch 6``, ``ASHA at epoch 2``, ``max epochs (12)``).
"""

from __future__ import annotations

from typing import Optional

# Recorded phrase -> the console's words for it.
_IN_WORDS = {"early_stopping (patience) at epoch": "EarlyStopping at epoch", "asha at epoch": "ASHA at epoch",
             "max_epochs": "max epochs", "stopped at epoch": "stopped at epoch"}


def stop_reason(last: dict, max_epochs: int, *, error: Optional[BaseException] = None,
                stop_at_trial: Optional[str] = None, scheduler_stops: bool = True) -> str:
    """How a trial ended, as ``summary.json`` records it.

    Args:
        last: the trial's last reported epoch (``epoch``, and ``stop_reason`` set by the worker
            when Keras's EarlyStopping or the epoch budget ended it).
        max_epochs: the trial's epoch budget.
        error: the trial's error, if it failed.
        stop_at_trial: the trial whose result reached ``search.stop_at`` and ended the search,
            when this trial was still running, or not yet started, then.
        scheduler_stops: whether a scheduler (ASHA) may stop trials early in this search.
    """
    if error is not None:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else ""
        return f"error: {type(error).__name__}: {first_line}"[:300]
    reason, epoch = last.get("stop_reason"), last.get("epoch")
    if reason == "early_stopping":
        return f"early_stopping (patience) at epoch {epoch}"
    if reason == "max_epochs" or (epoch or 0) >= max_epochs:
        return f"max_epochs ({max_epochs})"
    if epoch is None:
        # A search that stop_at ends before a pending trial's first epoch never runs it.
        return f"not started (stop_at: trial {stop_at_trial} reached the target first)" if stop_at_trial \
            else "not started"
    if stop_at_trial is not None:
        return f"stop_at (trial {stop_at_trial} reached the target) at epoch {epoch}"
    return f"asha at epoch {epoch}" if scheduler_stops else f"stopped at epoch {epoch}"


def in_words(recorded: str) -> str:
    """The console's words for a recorded stop reason."""
    for phrase, words in _IN_WORDS.items():
        if recorded.startswith(phrase):
            return words + recorded[len(phrase):]
    if recorded.startswith("not started (stop_at: trial "):
        return "not started: trial " + recorded[len("not started (stop_at: trial "):].rstrip(")")
    if recorded.startswith("stop_at (trial "):
        return "stopped: trial " + recorded[len("stop_at (trial "):].replace(")", "", 1)
    return "error" if recorded.startswith("error") else recorded
