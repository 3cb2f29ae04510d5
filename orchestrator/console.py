"""What the console shows: quiet by default, Ray's and TensorFlow's logs with ``--verbose``.

Every choice about logs is made here, for every process that prints:

- the driver: Ray's INFO lines off (``ray.init(logging_level=...)``); it
  prints where to look (run directory, dashboard, TensorBoard) itself;
- Ray Train's controller and workers: ``RunConfig(logging_config=...)``
  at WARNING hides "Reporting training result ...", "Checkpoint successfully
  created ..." and the group set-up lines; Train applies the same level to
  the workers' root logger, which TensorFlow's Python INFO lines
  ("Sharding callback duration", collective set-up) go through;
- TensorFlow in a worker: ``TF_CPP_MIN_LOG_LEVEL`` in its env, and, for the
  C++ lines logged while TensorFlow loads (before absl is initialised, they
  ignore every log level), its import runs with stderr captured and only
  warnings and errors replayed (:func:`import_tensorflow`);
- Keras on the chief: one line per epoch (``worker/callbacks/epoch_line.py``)
  instead of Keras's two, and no empty lines.

``verbose`` (``--verbose``, or ``verbose: true`` in a config) reaches the
worker processes as :data:`VERBOSE_ENV` and turns all of it back to Ray's and
TensorFlow's own behaviour. Warnings and errors show either way.

Imports neither Ray nor TensorFlow at module level: the driver, Train's
controller and the workers all use it.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import tempfile
from typing import Optional

from orchestrator.process import VERBOSE_ENV, use_tf_keras

# C++ lines TensorFlow logs while loading, before absl is initialised: absl's
# notice about that, INFO lines (I<mmdd> ...: oneDNN, cudart_stub), and the CUDA
# probe failing on a worker that was given no GPU (that is how TensorFlow learns
# there is none; it reads like an error but is not one).
_ABSL_BANNER = "All log messages before absl::InitializeLog() is called are written to STDERR"
_ABSL_INFO = re.compile(r"^I\d{4} ")
_NO_GPU_PROBE = ("failed call to cuInit", "Could not find cuda drivers")
_NOT_IMPROVED = re.compile(r"^Epoch \d+: \S+ did not improve from ")


def is_verbose() -> bool:
    return os.environ.get(VERBOSE_ENV) == "1"


def ray_init_logging_level(verbose: bool) -> int:
    """Ray's own logger in the driver: INFO ("Started a local Ray instance ...") only when verbose."""
    return logging.INFO if verbose else logging.WARNING


def train_logging_config(verbose: bool):
    """Ray Train's ``LoggingConfig`` for a run or a trial."""
    from ray.train import LoggingConfig

    return LoggingConfig(log_level="INFO" if verbose else "WARNING")


def tune_verbosity(verbose: bool) -> int:
    """``tune.RunConfig(verbose=...)``: Tune's own status blocks only when verbose (the table replaces them)."""
    return 2 if verbose else 0


# ------------------------------------------------------------------ worker side

def is_noise(line: str, gpu_assigned: bool) -> bool:
    """Whether a line TensorFlow wrote while loading is noise (INFO, or no-GPU probing on a CPU worker)."""
    if _ABSL_BANNER in line or _ABSL_INFO.match(line):
        return True
    return not gpu_assigned and any(text in line for text in _NO_GPU_PROBE)


def _gpu_assigned() -> bool:
    # Ray sets CUDA_VISIBLE_DEVICES for a worker that asked for GPUs.
    return bool(os.environ.get("CUDA_VISIBLE_DEVICES", "").strip())


def import_tensorflow():
    """Import TensorFlow (tf-keras), showing only the warnings and errors it logs while loading.

    The C++ lines logged before absl is initialised go straight to file
    descriptor 2 at every level, so the import and TensorFlow's first device
    probe run with that descriptor pointed at a temporary file; afterwards its
    lines that are not noise (:func:`is_noise`) are written to stderr. Verbose:
    a plain import.
    """
    use_tf_keras()
    if "tensorflow" in sys.modules or is_verbose():
        import tensorflow as tf
        return tf
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            import tensorflow as tf
            tf.config.list_physical_devices()  # the CUDA probe logs here, not at import
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            gpu = _gpu_assigned()
            kept = [line for line in capture.read().decode(errors="replace").splitlines()
                    if line.strip() and not is_noise(line, gpu)]
            if kept:
                sys.stderr.write("\n".join(kept) + "\n")
                sys.stderr.flush()
    _quiet_python_loggers()
    _no_blank_keras_lines()
    return tf


def _quiet_python_loggers() -> None:
    """INFO lines of TensorFlow's Python side and of Ray Train's per-report log, off; warnings stay.

    Ray Train's ``LoggingConfig`` filters the ``ray.train`` loggers, but the
    worker's "Reporting training result ..." line comes from a logger named by
    its file path (``logging.getLogger(__file__)`` in Ray 2.60's
    ``train/v2/_internal/execution/context.py``), which that filter does not
    match, and TensorFlow's "Sharding callback duration" goes through absl's.
    """
    import absl.logging

    absl.logging.set_verbosity(absl.logging.WARNING)
    logging.getLogger("tensorflow").setLevel(logging.WARNING)
    try:
        from ray.train.v2._internal.execution import context as train_context
    except ImportError:  # not a Ray Train V2 worker (e.g. another Ray version)
        return
    logging.getLogger(train_context.__file__).setLevel(logging.WARNING)


def _no_blank_keras_lines() -> None:
    """Keras's checkpoint and EarlyStopping messages without their leading newline, and no "did not improve".

    Keras starts them with one to end a progress bar's line; with one line per
    epoch there is none, and each would show as an empty worker line.
    ModelCheckpoint's "val_loss did not improve from ..." says that no
    checkpoint was written, which the epoch line's val_loss already shows; its
    "improved ..., saving model" lines stay.
    """
    from tf_keras.src.utils import io_utils

    if getattr(io_utils.print_msg, "_orchestrator", False):
        return
    original = io_utils.print_msg

    def print_msg(message, line_break=True):
        message = str(message).lstrip("\n")
        if not _NOT_IMPROVED.match(message):
            original(message, line_break)

    print_msg._orchestrator = True
    io_utils.print_msg = print_msg


# ------------------------------------------------------------------ driver side

def where_to_look(what: str, name: str, run_dir, dashboard: Optional[str], tensorboard_dir,
                  tensorboard_url: Optional[str] = None) -> str:
    """The first lines of a run or search: its directory, Ray's dashboard, and TensorBoard."""
    lines = [f"{what} {name}: {run_dir}",
             f"  ray dashboard: {dashboard or 'not available (Ray started without it)'}"]
    if tensorboard_url:
        lines.append(f"  tensorboard:   {tensorboard_url} (live, serving {tensorboard_dir})")
    elif "://" in str(tensorboard_dir):  # TensorBoard reads object storage through a local copy
        lines.append(f"  tensorboard:   orchestrator tensorboard {name} --storage {str(run_dir).rsplit('/', 1)[0]}")
    else:
        lines.append(f"  tensorboard:   tensorboard --logdir {tensorboard_dir}")
    return "\n".join(lines)
