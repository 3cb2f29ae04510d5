"""(a) The baseline: the tutorial's MLP trained with plain tf-keras ``fit`` in one process.

    TF_USE_LEGACY_KERAS=1 python -m bench.baseline --epochs 3 --global-batch 128 --out /tmp/a.json

No Ray, no distribution strategy, no callbacks but a timer: what a user gets
from the tutorial script on this machine. Same data split as the orchestrator
(``orchestrator.mnist.load_splits``: first 50k of MNIST's train split to train,
last 10k to validate), same model (ModelSpec defaults), same optimizer (Adam
1e-3), same global batch. Epoch time is measured exactly as the orchestrator's
``ReportToRayTrain`` does: ``on_epoch_begin`` -> ``on_epoch_end``, validation
included. Run by ``bench.run`` in its own subprocess.
"""

from __future__ import annotations

import time

STARTED_AT = time.time()  # before TensorFlow is imported: this process's cold start

import argparse
import json
import os
import sys


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--global-batch", type=int, default=128)
    parser.add_argument("--train-examples", type=int, default=None)
    parser.add_argument("--steps-per-execution", type=int, default=1)
    parser.add_argument("--data", default=None)
    parser.add_argument("--task", default="mnist_mlp", help="the task whose model and data are timed")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    if os.environ.get("TF_USE_LEGACY_KERAS") != "1":
        sys.exit("bench.baseline needs TF_USE_LEGACY_KERAS=1 (tf-keras, as the orchestrator's workers)")

    import numpy as np
    import tensorflow as tf

    from orchestrator.spec import build_spec
    from orchestrator.tasks import resolve

    # The model and data of the task, as the orchestrator's workers get them; the fit is plain Keras.
    defaults = build_spec({"task": {"name": args.task, **({"path": args.data} if args.data else {})},
                           "data": {"train_examples": args.train_examples}})
    task = resolve(defaults.task)
    splits = task.task.arrays(task.params, defaults.data.caps(), args.task)

    def prepared(x):
        return task.task.preprocess(tf.constant(x)).numpy() if task.task.preprocess else x

    x_train, x_val = prepared(splits.x_train), prepared(splits.x_val)

    tf.keras.utils.set_random_seed(args.seed)
    model = task.task.build_model(task.params)
    model.compile(optimizer=tf.keras.optimizers.Adam(learning_rate=defaults.optimizer.learning_rate),
                  loss=task.task.loss, metrics=list(task.task.metrics),
                  steps_per_execution=args.steps_per_execution)

    history: list[dict] = []

    class EpochTimer(tf.keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self._wall, self._t0 = time.time(), time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            seconds = time.perf_counter() - self._t0
            history.append({"epoch": epoch + 1, "started_at": self._wall, "epoch_seconds": seconds,
                            "samples_per_second": len(x_train) / seconds,
                            **{k: float(v) for k, v in (logs or {}).items()}})

    model.fit(x_train, splits.y_train, batch_size=args.global_batch, epochs=args.epochs,
              validation_data=(x_val, splits.y_val), shuffle=True, verbose=2, callbacks=[EpochTimer()])
    test_loss, test_accuracy = model.evaluate(prepared(splits.x_test), splits.y_test,
                                              batch_size=args.global_batch, verbose=0)
    with open(args.out, "w") as f:
        json.dump({"process_started_at": STARTED_AT, "history": history, "train_examples": len(x_train),
                   "test_accuracy": float(test_accuracy), "threads": {
                       "intra_op": tf.config.threading.get_intra_op_parallelism_threads(),
                       "inter_op": tf.config.threading.get_inter_op_parallelism_threads()}}, f, indent=1)


if __name__ == "__main__":
    main()
