"""MirroredStrategy over 2 logical devices cut from one physical device, vs 1 replica.

On a GPU machine this splits GPU 0 into two logical GPUs (each with half of
``--memory-mb``) and trains the project's own model, data pipeline and
callbacks with 2 replicas, then with 1, at the same global batch::

    python bench/logical_gpus.py                      # GPU 0 split in two
    python bench/logical_gpus.py --device cpu         # the same on 2 logical CPUs (no GPU needed)
    python bench/logical_gpus.py --json out.json

It prints one line per setting (replicas, epoch seconds, samples/s,
validation accuracy) and writes them as JSON. It needs no Ray: it checks the
in-worker half of "a worker with K GPUs mirrors over all K".
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=["gpu", "cpu"], default="gpu")
    parser.add_argument("--memory-mb", type=int, default=8192, help="GPU memory for the two logical GPUs together")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--global-batch", type=int, default=256)
    parser.add_argument("--train-examples", type=int, default=None)
    parser.add_argument("--data", default=None, help="mnist.npz (default: the Keras cache)")
    parser.add_argument("--json", default=None, help="write the results here")
    args = parser.parse_args(argv)

    import tensorflow as tf

    kind = args.device.upper()
    physical = tf.config.list_physical_devices(kind)
    if not physical:
        sys.exit(f"error: no {kind} found; use --device cpu on a machine without a GPU")
    if kind == "GPU":
        half = args.memory_mb // 2
        config = [tf.config.LogicalDeviceConfiguration(memory_limit=half)] * 2
    else:
        config = [tf.config.LogicalDeviceConfiguration()] * 2
    tf.config.set_logical_device_configuration(physical[0], config)
    logical = [d.name for d in tf.config.list_logical_devices(kind)]

    from orchestrator.spec import build_spec
    from orchestrator.tasks import resolve
    from orchestrator.worker.callbacks.lr_schedule import ScheduledLearningRate
    from orchestrator.worker.datasets import batched_dataset
    from orchestrator.worker.model import build_compiled_model

    spec = build_spec({"training": {"epochs": args.epochs}, "task": {"path": args.data},
                       "data": {"train_examples": args.train_examples}})
    task = resolve(spec.task)
    splits = task.task.arrays(task.params, spec.data.caps(), spec.task.name)
    results = []
    for devices in (logical[:2], logical[:1]):
        strategy = tf.distribute.MirroredStrategy(devices=devices)
        tf.keras.utils.set_random_seed(spec.seed)
        with strategy.scope():
            model = build_compiled_model(spec, task.task, task.params)
        train = batched_dataset(splits.x_train, splits.y_train, args.global_batch, shuffle_seed=spec.seed,
                                preprocess=task.task.preprocess)
        val = batched_dataset(splits.x_val, splits.y_val, args.global_batch, preprocess=task.task.preprocess)
        epoch_seconds = []

        class Timer(tf.keras.callbacks.Callback):
            def on_epoch_begin(self, epoch, logs=None):
                self.start = time.perf_counter()

            def on_epoch_end(self, epoch, logs=None):
                epoch_seconds.append(time.perf_counter() - self.start)

        history = model.fit(train, validation_data=val, epochs=args.epochs, verbose=0,
                            callbacks=[ScheduledLearningRate(spec.lr_schedule, spec.optimizer.learning_rate),
                                       Timer()])
        steady = epoch_seconds[1:] or epoch_seconds
        row = {"replicas": strategy.num_replicas_in_sync, "devices": devices,
               "first_epoch_seconds": epoch_seconds[0],
               "steady_epoch_seconds": sum(steady) / len(steady),
               "samples_per_second": len(splits.y_train) / (sum(steady) / len(steady)),
               "val_accuracy": float(history.history["val_accuracy"][-1])}
        results.append(row)
        print(f"{row['replicas']} replica(s) on {kind}: {row['steady_epoch_seconds']:.2f} s/epoch, "
              f"{row['samples_per_second']:.0f} samples/s, val_accuracy {row['val_accuracy']:.4f}", flush=True)
    out = {"device": kind, "physical": physical[0].name, "global_batch": args.global_batch,
           "epochs": args.epochs, "tensorflow": tf.__version__, "results": results,
           "speedup_2_vs_1": results[1]["steady_epoch_seconds"] / results[0]["steady_epoch_seconds"]}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)
    return out


if __name__ == "__main__":
    main()
