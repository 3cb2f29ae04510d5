"""One console line per epoch, as Keras's ``verbose=2`` prints it, but in one line instead of two."""

from __future__ import annotations

import sys
import time

import orchestrator.worker  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow)

import tensorflow as tf


def format_value(value: float) -> str:
    """As Keras's progress bar shows a metric: 4 decimals, or 4 significant digits when small."""
    return f"{value:.4f}" if abs(value) >= 1e-3 or value == 0 else f"{value:.4e}"


class EpochLine(tf.keras.callbacks.Callback):
    """``Epoch 3/20 - 4s - loss: 0.0832 - accuracy: 0.9747 - val_loss: 0.0870 - ... - learning_rate: 0.0010``.

    Keras's ``verbose=2`` prints ``Epoch 3/20`` when an epoch begins and its
    metrics when it ends; this prints both at the end. Put it first among the
    callbacks, so the epoch's line comes before ModelCheckpoint's and
    EarlyStopping's messages about it.

    Args:
        epochs: the run's epoch limit, shown as the denominator.
        print_fn: where the line goes (default: stdout, as Keras writes it); injectable for tests.
    """

    def __init__(self, epochs: int, print_fn=None):
        super().__init__()
        self.epochs = epochs
        self.print_fn = print_fn or _write_line
        self._started = 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self._started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        seconds = time.perf_counter() - self._started
        parts = [f"Epoch {epoch + 1}/{self.epochs}", f"{seconds:.0f}s"]
        parts += [f"{name}: {format_value(float(value))}" for name, value in (logs or {}).items()
                  if isinstance(value, (int, float)) or hasattr(value, "__float__")]
        self.print_fn(" - ".join(parts))


def _write_line(line: str) -> None:
    # Not print(): Ray Train V2 patches print in its workers to log each call
    # and, when sys.stdout is wrapped, to print it too: every line showed twice.
    sys.stdout.write(line + "\n")
    sys.stdout.flush()
