"""The Keras side: what runs inside each Ray Train worker process.

Everything under this package imports TensorFlow, and must see
``TF_USE_LEGACY_KERAS=1`` first: TF 2.21's default Keras 3 fails under
``MultiWorkerMirroredStrategy`` inside Ray Train (``PerReplica`` conversion
error), tf-keras does not. Importing this package sets it, so
``from orchestrator.worker.loop import train_loop_per_worker`` is safe in any
process. The driver never needs to import it.
"""

import os

os.environ["TF_USE_LEGACY_KERAS"] = "1"

from orchestrator.console import import_tensorflow  # noqa: E402

import_tensorflow()  # quietly, unless verbose: see orchestrator/console.py
