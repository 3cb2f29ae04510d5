"""(a) The baseline: the tutorial's MLP trained with plain tf-keras ``fit`` in one process.

    TF_USE_LEGACY_KERAS=1 python -m bench.baseline --epochs 3 --global-batch 128 --out /tmp/a.json

No Ray, no distribution strategy, no callbacks but a timer: what a user gets
from the tutorial script on this machine. Same data split as the orchestrator
(``orchestrator.mnist.load_splits``: first 50k of MNIST's train split to train,
last 10k to validate), same model (ModelSpec defaults), same optimizer (Adam
1e-3), same global batch. Epoch time is measured exactly as the orchestrator's
``ReportToRayTrain`` does: ``on_epoch_begin`` -> ``on_epoch_end``, validation
included. Run by ``bench.run`` in its own subprocess.

``bench.gap`` also runs it with parts of what a worker adds, to tell where the
gap between (b) and (a') goes:

    --input orchestrator      the worker's tf.data pipeline (raw arrays, shuffled positions,
                              preprocessed per batch) and thread pools sized to the CPUs
    --callbacks orchestrator  the worker's callbacks: LR schedule, EarlyStopping, best-weights
                              ModelCheckpoint, TensorBoard with histograms and graph
    --in-ray                  the fit in a task of a local Ray (with its dashboard), as a worker runs
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
    parser.add_argument("--input", choices=["arrays", "orchestrator"], default="arrays")
    parser.add_argument("--callbacks", choices=["timer", "orchestrator"], default="timer")
    parser.add_argument("--in-ray", action="store_true")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    if os.environ.get("TF_USE_LEGACY_KERAS") != "1":
        sys.exit("bench.baseline needs TF_USE_LEGACY_KERAS=1 (tf-keras, as the orchestrator's workers)")
    if args.in_ray:
        import ray

        cpus = os.cpu_count()
        ray.init(num_cpus=cpus, include_dashboard=True, configure_logging=False, log_to_driver=True,
                 runtime_env={"env_vars": {"TF_USE_LEGACY_KERAS": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}})
        result = ray.get(ray.remote(num_cpus=cpus)(fit).remote(args))
        ray.shutdown()
    else:
        result = fit(args)
    with open(args.out, "w") as f:
        json.dump({"process_started_at": STARTED_AT, "process_pid": os.getpid(), **result}, f, indent=1)


def fit(args) -> dict:
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

    if args.input == "orchestrator":
        from orchestrator.worker.datasets import split_datasets
        from orchestrator.worker.loop import _limit_threads

        _limit_threads(os.cpu_count())
        train, validation, steps = split_datasets(tf.distribute.get_strategy(), task.task, task.params, splits,
                                                  args.global_batch, args.seed)
        fit_data = {"x": train, "validation_data": validation, "steps_per_epoch": steps}
    else:
        fit_data = {"x": prepared(splits.x_train), "y": splits.y_train, "batch_size": args.global_batch,
                    "shuffle": True, "validation_data": (prepared(splits.x_val), splits.y_val)}
    examples = len(splits.y_train)

    tf.keras.utils.set_random_seed(args.seed)
    model = task.task.build_model(task.params)
    model.compile(optimizer=tf.keras.optimizers.Adam(learning_rate=defaults.optimizer.learning_rate),
                  loss=task.task.loss, metrics=list(task.task.metrics),
                  steps_per_execution=args.steps_per_execution)

    history: list[dict] = []
    callbacks = orchestrator_callbacks(defaults) if args.callbacks == "orchestrator" else []

    class EpochTimer(tf.keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self._wall, self._t0 = time.time(), time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            seconds = time.perf_counter() - self._t0
            history.append({"epoch": epoch + 1, "started_at": self._wall, "epoch_seconds": seconds,
                            "samples_per_second": examples / seconds,
                            **{k: float(v) for k, v in (logs or {}).items()}})

    # The timer comes last, as the worker's report does: the epoch includes the other callbacks' work.
    model.fit(**fit_data, epochs=args.epochs, verbose=2, callbacks=[*callbacks, EpochTimer()])
    test_loss, test_accuracy = model.evaluate(prepared(splits.x_test), splits.y_test,
                                              batch_size=args.global_batch, verbose=0)
    return {"history": history, "train_examples": examples, "fit_pid": os.getpid(),
            "callbacks": [type(c).__name__ for c in callbacks], "test_accuracy": float(test_accuracy),
            "threads": {"intra_op": tf.config.threading.get_intra_op_parallelism_threads(),
                        "inter_op": tf.config.threading.get_inter_op_parallelism_threads()}}


def orchestrator_callbacks(spec) -> list:
    """The callbacks a run's chief worker adds to ``fit`` (``orchestrator.worker.loop``), bar its report."""
    import atexit
    import shutil
    import tempfile

    from orchestrator.worker.callbacks.early_stopping import ResumableEarlyStopping
    from orchestrator.worker.callbacks.lr_schedule import ScheduledLearningRate
    from orchestrator.worker.callbacks.tensorboard import chief_tensorboard
    import tensorflow as tf

    staging = tempfile.mkdtemp(prefix="bench-baseline-")
    atexit.register(shutil.rmtree, staging, True)  # the files only cost what a worker's cost; none are kept
    return [ScheduledLearningRate(spec.lr_schedule, spec.optimizer.learning_rate),
            ResumableEarlyStopping(monitor=spec.early_stopping.monitor, patience=spec.early_stopping.patience,
                                   min_delta=spec.early_stopping.min_delta),
            tf.keras.callbacks.ModelCheckpoint(os.path.join(staging, "best.weights.h5"),
                                               monitor=spec.checkpoint.monitor, mode=spec.checkpoint.mode,
                                               save_best_only=True, save_weights_only=True),
            *chief_tensorboard(os.path.join(staging, "tensorboard"), spec.tensorboard.histogram_freq,
                               spec.tensorboard.write_graph)]


if __name__ == "__main__":
    main()
