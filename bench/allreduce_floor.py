"""The floor under (c): what one synchronous step costs with 2 MWMS workers here, without Ray or Keras's loop.

    python -m bench.allreduce_floor                      # prints one JSON object
    python -m bench.allreduce_floor --global-batch 256

Starts 2 local processes joined by ``TF_CONFIG`` (``MultiWorkerMirroredStrategy``
over gRPC, 1 intra-op and 1 inter-op thread each, as the orchestrator's workers
with 1 CPU) and times, each inside one ``tf.function`` of ``--repeats`` rounds:

    compute     forward + backward pass of the tutorial's MLP on one worker's half
                of the global batch, no communication
    all_reduce  one all-reduce of a gradient-sized float32 tensor (every weight
                of the MLP), the communication each synchronous step needs

``compute + all_reduce`` is the least a data-parallel step can cost on this
machine, whatever runs the loop; ``floor_samples_per_s`` is the throughput that
implies (global batch / step floor). ``bench.run`` records it next to (c).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _worker(rank: int, ports: list[int], global_batch: int, repeats: int, task_name: str) -> None:
    from orchestrator.engine.tf_backend import set_tf_config

    set_tf_config([f"127.0.0.1:{p}" for p in ports], rank)
    import orchestrator.worker  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow)
    import tensorflow as tf

    from orchestrator.spec import build_spec
    from orchestrator.tasks import resolve

    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    task = resolve(build_spec({"task": {"name": task_name}}).task)
    with strategy.scope():
        model = task.task.build_model(task.params)
    weights = model.trainable_variables
    size = sum(int(tf.size(w)) for w in weights)
    x = tf.random.uniform((global_batch // len(ports), *model.input_shape[1:]))
    y = tf.zeros((global_batch // len(ports),), tf.int64)
    loss_fn = tf.keras.losses.SparseCategoricalCrossentropy(reduction="sum")

    @tf.function
    def compute():
        def rounds():
            total = tf.constant(0.0)
            for _ in range(repeats):
                with tf.GradientTape() as tape:
                    loss = loss_fn(y, model(x, training=True))
                grads = tape.gradient(loss, weights)
                total += tf.add_n([tf.reduce_sum(g) for g in grads])
            return total
        return strategy.run(rounds)

    @tf.function
    def all_reduce():
        def rounds():
            flat = tf.ones([size])
            context = tf.distribute.get_replica_context()
            for _ in range(repeats):
                flat = context.all_reduce(tf.distribute.ReduceOp.SUM, flat) * 0.5
            return flat[0]
        return strategy.run(rounds)

    figures = {}
    for name, fn in (("compute", compute), ("all_reduce", all_reduce)):
        fn()  # trace, and the first collective's group setup
        started = time.perf_counter()
        fn()
        figures[f"{name}_ms"] = (time.perf_counter() - started) / repeats * 1000
    if rank == 0:
        step_ms = figures["compute_ms"] + figures["all_reduce_ms"]
        print(json.dumps({"workers": len(ports), "global_batch": global_batch, "values_all_reduced": size,
                          **figures, "step_floor_ms": step_ms,
                          "floor_samples_per_s": global_batch / step_ms * 1000}), flush=True)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--global-batch", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=100)
    parser.add_argument("--task", default="mnist_mlp", help="the task whose model is timed (default: the tutorial's MLP)")
    parser.add_argument("--timeout", type=float, default=300)
    parser.add_argument("--rank", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--ports", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.rank is not None:
        _worker(args.rank, [int(p) for p in args.ports.split(",")], args.global_batch, args.repeats, args.task)
        return

    ports = ",".join(str(p) for p in _free_ports(2))
    env = {**os.environ, "TF_USE_LEGACY_KERAS": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}
    env.pop("TF_CONFIG", None)
    common = [sys.executable, "-m", "bench.allreduce_floor", "--ports", ports,
              "--global-batch", str(args.global_batch), "--repeats", str(args.repeats), "--task", args.task]
    peer = subprocess.Popen(common + ["--rank", "1"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        chief = subprocess.run(common + ["--rank", "0"], env=env, capture_output=True, text=True,
                               timeout=args.timeout)
    finally:
        peer.kill()
        peer.wait()
    if chief.returncode != 0:
        sys.exit(f"bench.allreduce_floor: the chief failed: {chief.stderr.strip().splitlines()[-1:]}")
    print(chief.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    main()
