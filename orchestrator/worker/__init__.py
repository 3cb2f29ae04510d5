"""The Keras side: what runs inside each Ray Train worker process.

Everything under this package imports TensorFlow, with tf-keras selected
first (``orchestrator.process.use_tf_keras``): importing this package is the
documented entry point that does it, so
``from orchestrator.worker.loop import train_loop_per_worker`` is safe in any
process. The driver never needs to import it.
"""

from orchestrator.process import use_tf_keras

use_tf_keras()

from orchestrator.console import import_tensorflow  # noqa: E402

import_tensorflow()  # quietly, unless verbose: see orchestrator/console.py
