"""(f) KerasTuner's Hyperband on the orchestrator's search space, under Keras 3.

    python -m bench.kt_hyperband --config bench/out/runs/tune.yaml --target 0.98 --out /tmp/kt.json

KerasTuner refuses tf-keras models, so this process runs plain Keras 3 (it must
NOT have ``TF_USE_LEGACY_KERAS=1``). The space, data, model, optimizer, batch,
LR schedules and EarlyStopping come from the same tune config that
``orchestrator tune`` gets in the benchmark (read with
``orchestrator.search_space.load_search``, pure data), translated to KerasTuner
hyperparameters: ``uniform`` -> ``Float``, ``loguniform`` -> ``Float(log)``,
``randint`` -> ``Int`` (inclusive bounds, as in the orchestrator), ``choice`` ->
``Choice``; the schedule family is a ``Choice`` with its parameters in a
conditional scope. Hyperband's ``max_epochs`` is ``training.epochs`` and its
objective the search's metric (``val_loss``, min).

The search stops at the end of the first epoch whose ``val_accuracy`` reaches
``--target`` (or after ``--max-seconds``) and writes when that was, wall clock.
"""

from __future__ import annotations

import time

STARTED_AT = time.time()  # before TensorFlow is imported

import argparse
import json
import os
import shutil
import sys


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="the tune YAML given to `orchestrator tune`")
    parser.add_argument("--target", type=float, default=0.98, help="val_accuracy to reach")
    parser.add_argument("--max-seconds", type=float, default=300.0)
    parser.add_argument("--factor", type=int, default=3, help="Hyperband's reduction factor")
    parser.add_argument("--directory", required=True, help="KerasTuner's working directory (replaced)")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    if os.environ.get("TF_USE_LEGACY_KERAS") == "1":
        sys.exit("bench.kt_hyperband runs Keras 3: unset TF_USE_LEGACY_KERAS")
    # TensorFlow binds tf.keras on first use, to tf-keras where this is "1".
    os.environ["TF_USE_LEGACY_KERAS"] = "0"

    import keras
    import keras_tuner as kt

    import tensorflow as tf

    # The orchestrator's modules select tf-keras for the process (process.use_tf_keras), but
    # tf.keras binds on first use: bound here first, the task's tf.keras models stay Keras 3.
    assert tf.keras.Sequential is keras.Sequential

    from orchestrator.search_space import Domain, load_search
    from orchestrator.spec import read_yaml
    from orchestrator.tasks import resolve

    search = load_search(read_yaml(args.config))
    base = search.base
    # The search's task builds the model (here under Keras 3) and loads the data, as in the orchestrator.
    task = resolve(base.task)
    splits = task.task.arrays(task.params, base.data.caps(), base.task.name)
    os.environ["TF_USE_LEGACY_KERAS"] = "0"

    def prepared(x):
        return task.task.preprocess(tf.constant(x)).numpy() if task.task.preprocess else x

    x_train, x_val = prepared(splits.x_train), prepared(splits.x_val)
    batch = base.global_batch_size(base.scaling.workers * max(1, base.scaling.gpus_per_worker))

    def sample(hp, name: str, value):
        if not isinstance(value, Domain):
            return hp.Fixed(name, value)
        lo_hi = value.args
        if value.kind == "uniform":
            return hp.Float(name, lo_hi[0], lo_hi[1])
        if value.kind == "loguniform":
            return hp.Float(name, lo_hi[0], lo_hi[1], sampling="log")
        if value.kind == "randint":
            return hp.Int(name, lo_hi[0], lo_hi[1])
        return hp.Choice(name, list(value.args))  # choice (grid: every value is a choice here)

    def trial_config(hp) -> dict:
        config = {key: sample(hp, key, value) for key, value in search.fields.items()}
        if search.schedules:
            family = hp.Choice("lr_schedule", list(search.schedules))
            config["lr_schedule"] = family
            params = {}
            for name, value in search.schedules[family].items():
                with hp.conditional_scope("lr_schedule", [family]):
                    params[name] = sample(hp, f"{family}.{name}", value)
            config["schedule_params"] = {family: params}
        return config

    class Reached(kt.errors.FatalError):
        """Ends the whole search (KerasTuner re-raises FatalError out of ``search``)."""

    found: dict = {}
    counters = {"epochs": 0, "trials": 0}

    class Watch(keras.callbacks.Callback):
        def __init__(self, trial_id: str):
            super().__init__()
            self.trial_id = trial_id

        def on_epoch_end(self, epoch, logs=None):
            counters["epochs"] += 1
            accuracy = float((logs or {}).get("val_accuracy", 0.0))
            if accuracy >= args.target:
                found.update(reached_at=time.time(), trial=self.trial_id, epoch=epoch + 1,
                             val_accuracy=accuracy, val_loss=float(logs.get("val_loss", float("nan"))))
                raise Reached("target reached")
            if time.time() - STARTED_AT > args.max_seconds:
                raise Reached("time budget spent")

    class MnistHyperModel(kt.HyperModel):
        def build(self, hp):
            spec = search.trial_spec(trial_config(hp))
            trial_task = resolve(spec.task)
            model = trial_task.task.build_model(trial_task.params)
            opt = spec.optimizer
            optimizer = (keras.optimizers.SGD(opt.learning_rate, momentum=opt.momentum) if opt.name == "sgd"
                         else keras.optimizers.Adam(opt.learning_rate))
            model.compile(optimizer=optimizer, loss=trial_task.task.loss, metrics=list(trial_task.task.metrics),
                          steps_per_execution=spec.training.steps_per_execution)
            return model

        def fit(self, hp, model, *fit_args, callbacks=None, **fit_kwargs):
            spec = search.trial_spec(trial_config(hp))
            base_lr = spec.optimizer.learning_rate
            callbacks = list(callbacks or [])
            callbacks.append(keras.callbacks.LearningRateScheduler(
                lambda epoch, _lr: spec.lr_schedule(epoch, base_lr)))
            if spec.early_stopping.enabled:
                callbacks.append(keras.callbacks.EarlyStopping(
                    monitor=spec.early_stopping.monitor, patience=spec.early_stopping.patience,
                    min_delta=spec.early_stopping.min_delta))
            counters["trials"] += 1
            callbacks.append(Watch(hp_trial_id()))
            return model.fit(*fit_args, callbacks=callbacks, **fit_kwargs)

    shutil.rmtree(args.directory, ignore_errors=True)
    tuner = kt.Hyperband(
        MnistHyperModel(), objective=kt.Objective(search.search.metric, search.search.mode),
        max_epochs=base.training.epochs, factor=args.factor, hyperband_iterations=1, seed=base.seed,
        directory=args.directory, project_name="mnist", overwrite=True)

    def hp_trial_id() -> str:
        running = [t for t in tuner.oracle.trials.values() if t.status == "RUNNING"]
        return running[-1].trial_id if running else "?"

    search_started_at = time.time()
    stopped = "search finished"
    try:
        tuner.search(x_train, splits.y_train, validation_data=(x_val, splits.y_val), batch_size=batch,
                     verbose=2)
    except Reached as exc:
        stopped = str(exc)
    with open(args.out, "w") as f:
        json.dump({"process_started_at": STARTED_AT, "search_started_at": search_started_at,
                   "finished_at": time.time(), "stopped": stopped, "target": args.target,
                   "found": found or None, "epochs_trained": counters["epochs"], "trials_started": counters["trials"],
                   "batch": batch, "max_epochs": base.training.epochs, "factor": args.factor,
                   "keras": keras.__version__, "keras_tuner": kt.__version__}, f, indent=1)


if __name__ == "__main__":
    main()
