"""``train_loop_per_worker``: one Ray Train worker's whole life.

Ray Train starts one process per worker, sets ``TF_CONFIG`` for them, and calls
this function in each with the same :class:`~orchestrator.contract.WorkerConfig`
(the spec, the task, an object-store reference to the task's arrays, where
TensorBoard writes, and the trial, if any).

Each worker loads the task, builds its model inside ``MultiWorkerMirroredStrategy.scope()``
(mirroring over all of its local GPUs, if it has any; see :func:`_strategy`
for a run of one worker), restores the checkpoint of the last epoch whose
report completed when Ray Train restarts the group after a failure (see
:mod:`orchestrator.worker.resume`), and trains with
the tutorial's callbacks, reporting every epoch to Ray. A task that cannot
train (see :mod:`orchestrator.worker.preflight`) is reported as
``task_error`` by every worker before the first epoch, and nothing trains.
"""

from __future__ import annotations

import os
import shutil

import orchestrator.worker  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow)

import ray
import ray.train
import tensorflow as tf

from orchestrator import process
from orchestrator.contract import CONFIG_KEY, WorkerConfig
from orchestrator.layout import RunLayout
from orchestrator.results import write_text_atomic
from orchestrator.scratch import scratch_dir
from orchestrator.tasks import load
from orchestrator.console import is_verbose
from orchestrator.worker.callbacks.epoch_line import EpochLine
from orchestrator.worker.callbacks.early_stopping import ResumableEarlyStopping
from orchestrator.worker.callbacks.lr_schedule import ScheduledLearningRate
from orchestrator.checkpoint_files import BEST_WEIGHTS
from orchestrator.worker.callbacks.report import ReportToRayTrain, read_state, restore_train_state
from orchestrator.worker.callbacks.tensorboard import chief_tensorboard
from orchestrator.worker.callbacks.tensorboard_sync import SyncTensorBoard
from orchestrator.storage import LocalMirror, location
from orchestrator.worker.datasets import split_datasets
from orchestrator.worker.model import TaskError, build_compiled_model, build_step_state
from orchestrator.worker.preflight import check_task
from orchestrator.worker.resume import ResumePoint
from orchestrator.worker.session import RayTrainSession
from orchestrator.worker.tensorboard_rewind import rewind as rewind_tensorboard


def _limit_threads(cpus: float) -> None:
    """Match TensorFlow's thread pools to the CPUs Ray gave this worker.

    Left alone, every worker sizes its pools to the whole machine and workers
    sharing a node fight over cores.
    """
    threads = max(1, int(cpus))
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)


def _strategy(workers: int) -> tf.distribute.Strategy:
    """The data-parallel strategy of this worker: every local GPU is a replica.

    Several workers: ``MultiWorkerMirroredStrategy`` (Ray Train's ``TF_CONFIG``
    names them). One worker with several GPUs: ``MirroredStrategy`` over them.
    One worker, one device: TensorFlow's default strategy, as a plain Keras
    script runs; there is nothing to mirror, and either mirrored strategy makes
    epochs longer for nothing (README, Benchmark).
    """
    if workers > 1:
        return tf.distribute.MultiWorkerMirroredStrategy()
    if len(tf.config.list_logical_devices("GPU")) > 1:
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


def train_loop_per_worker(config: dict, session=None) -> None:
    """Train one worker's part of a run.

    Args:
        config: Ray Train's ``train_loop_config``: the :class:`WorkerConfig` under ``CONFIG_KEY``.
        session: who this worker is, where its epochs are reported and where it resumes
            (:mod:`orchestrator.worker.session`); default: a Ray Train worker.
    """
    run: WorkerConfig = config[CONFIG_KEY]
    spec = run.spec
    process.exit_on_sigterm_in_finalizers()
    session = session if session is not None else RayTrainSession()
    is_chief = session.world_rank == 0
    _limit_threads(spec.scaling.cpus_per_worker)

    strategy = _strategy(session.world_size)
    tf.keras.utils.set_random_seed(spec.seed)
    task = load(run.task)
    params = task.parse_params(spec.task.params, spec.task.name)
    arrays = ray.get(run.data) if isinstance(run.data, ray.ObjectRef) else run.data

    global_batch = spec.global_batch_size(strategy.num_replicas_in_sync)
    try:
        with strategy.scope():
            model = build_compiled_model(spec, task, params)
        problem, steps, sample = check_task(task, spec.task.name, params, model, arrays,
                                            workers=session.world_size, replicas=strategy.num_replicas_in_sync,
                                            global_batch=global_batch)
    except TaskError as err:  # build_model raised, or returned no Keras model
        problem = str(err)
    if problem:
        # Every worker reaches the same verdict; reporting (not raising) keeps Ray
        # Train from restarting the group to fail the same way again.
        # The chief writes it down too: Ray Train V2 keeps a report's metrics only with a checkpoint.
        if is_chief:
            write_text_atomic(RunLayout(location(run.run_dir)).task_error, problem)
        # With the metric Tune ranks by (a search's, the trial's monitor): Tune refuses a result without it.
        session.report({"task_error": problem, spec.checkpoint.monitor: float("nan")})
        return
    with strategy.scope():
        build_step_state(model, *sample)
    train_data, val_data, train_steps = split_datasets(strategy, task, params, arrays, global_batch, spec.seed)

    staging = scratch_dir("best")  # swept by a later run when Ray kills this process
    best_weights_path = str(staging / BEST_WEIGHTS)
    start_epoch, history, early_state, best_value = 0, [], None, None
    resumed_from: list[int] = []  # the epochs this run restarted from: a record of its interruptions
    identity = {"world_rank": session.world_rank, "world_size": session.world_size,
                "replicas": strategy.num_replicas_in_sync, "node_id": ray.get_runtime_context().get_node_id(),
                "pid": os.getpid()}
    resume = session.resume_point()  # every rank, at once: the last epoch whose report completed
    if resume.checkpoint is None and run.start_checkpoint is not None:
        resume = ResumePoint(run.start_checkpoint)  # a new run told where to start (a PBT member)
    if resume.checkpoint is not None:
        with resume.checkpoint.as_directory() as directory:
            state = read_state(directory)
            restore_train_state(model, directory)
            if os.path.exists(os.path.join(directory, BEST_WEIGHTS)):
                shutil.copyfile(os.path.join(directory, BEST_WEIGHTS), best_weights_path)
        start_epoch, history = state["epoch"], state["history"]
        early_state, best_value = state.get("early_stopping"), state.get("best_value")
        if resume.checkpoint is not run.start_checkpoint:  # its own checkpoint, not a PBT donor's
            resumed_from = [*state.get("resumed_from_epochs", []), start_epoch]
        if not resume.registered:
            session.report_again(resume, state, identity)
        if state.get("stop_reason"):
            return  # the run had already finished when it was checkpointed
        if is_chief:
            print(f"[orchestrator] resuming from the checkpoint of epoch {start_epoch}"
                  + ("" if resume.registered else " (found on storage; its report had been lost)"), flush=True)
    mirror = None
    if is_chief:
        # TensorFlow writes events locally; on object storage they are copied up each epoch.
        mirror = LocalMirror(run.tensorboard_dir)
        # Events the dead attempt wrote for epochs trained again from here are dropped.
        rewind_tensorboard(mirror.local, start_epoch, int(model.optimizer.iterations.numpy()))
        mirror.sync()

    callbacks: list = [ScheduledLearningRate(spec.lr_schedule, spec.optimizer.learning_rate)]
    keras_verbose = spec.training.verbose if is_chief else 0
    # A trial's workers print nothing of their own unless verbose: the search's table
    # says how each trial goes, and several trials' lines would interleave.
    quiet_trial = run.trial is not None and not is_verbose()
    if quiet_trial:
        keras_verbose = 0
    if keras_verbose == 2 and not is_verbose():
        # After the LR callback, which adds learning_rate to the logs; before the
        # checkpoint and EarlyStopping messages about the same epoch.
        callbacks.append(EpochLine(spec.training.epochs))
        keras_verbose = 0
    early_stopping = None
    if spec.early_stopping.enabled:
        early_stopping = ResumableEarlyStopping(
            monitor=spec.early_stopping.monitor, patience=spec.early_stopping.patience,
            min_delta=spec.early_stopping.min_delta, verbose=1 if is_chief and not quiet_trial else 0)
        if early_state:
            early_stopping.restore(early_state)
        callbacks.append(early_stopping)

    # Every worker checkpoints (saving all-reduces metric variables); Keras sends
    # non-chief copies to a temporary directory and deletes them.
    best_checkpoint = tf.keras.callbacks.ModelCheckpoint(
        best_weights_path, monitor=spec.checkpoint.monitor, mode=spec.checkpoint.mode,
        save_best_only=True, save_weights_only=True, verbose=1 if is_chief and not quiet_trial else 0,
        initial_value_threshold=best_value)
    callbacks.append(best_checkpoint)
    if is_chief:
        board = chief_tensorboard(  # one graph per run: written on a fresh start only
            str(mirror.local), spec.tensorboard.histogram_freq,
            spec.tensorboard.write_graph and start_epoch == 0,
            hparams=run.trial.hparams if run.trial else None, trial_id=run.trial.label if run.trial else None,
            history=history, monitor=spec.checkpoint.monitor, mode=spec.checkpoint.mode)
        callbacks += board
        if mirror.remote:
            callbacks.append(SyncTensorBoard(mirror, board))

    def extra_state() -> dict:
        return {
            "early_stopping": early_stopping.state() if early_stopping else None,
            "best_value": float(best_checkpoint.best),
            "resumed_from_epochs": resumed_from,
        }

    callbacks.append(ReportToRayTrain(
        is_chief=is_chief, max_epochs=spec.training.epochs, best_weights_path=best_weights_path,
        extra_state=extra_state, history=history,
        examples_per_epoch=len(arrays.y_train) if arrays is not None else 0,
        monitor=spec.checkpoint.monitor, mode=spec.checkpoint.mode,
        identity={**identity, **getattr(session, "identity", {})}, report=session.report))

    try:
        model.fit(train_data, validation_data=val_data, epochs=spec.training.epochs,
                  steps_per_epoch=steps.get("train", train_steps), validation_steps=steps.get("validation"),
                  initial_epoch=start_epoch, callbacks=callbacks,
                  verbose=keras_verbose)
    finally:
        # A trial Tune stops (ASHA) leaves fit() from inside a report, skipping on_train_end:
        # its event files are closed here, as a process that lives on runs the next trial.
        for callback in callbacks:
            if hasattr(callback, "_close_writers"):
                callback._close_writers()
        shutil.rmtree(staging, ignore_errors=True)
