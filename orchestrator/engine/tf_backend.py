"""``TF_CONFIG`` for Ray Train workers, set up without importing TensorFlow.

Ray's ``TensorflowTrainer`` is a ``DataParallelTrainer`` whose backend does one
thing: before the training function runs, it gives every worker the addresses
of all workers and its own index in ``TF_CONFIG``, which
``tf.distribute.MultiWorkerMirroredStrategy`` reads::

    {"cluster": {"worker": ["10.0.0.5:41231", "10.0.0.6:39817"]},
     "task": {"type": "worker", "index": 1}}

That backend lives in the ``ray.train.tensorflow`` package, whose ``__init__``
imports TensorFlow. Using it costs a TensorFlow import (2-3 s on 2 cores) in the
driver, again in Ray Train's controller (which unpickles the backend config), and
in every trial of a search, all on the path to the first epoch; Ray's state
export then also imports Keras 3 in worker 0 to record its version. This is the
same backend without those imports: TensorFlow is imported only where a model runs.
"""

from __future__ import annotations

import json
import os
import socket
from dataclasses import dataclass

import ray
from ray.train.backend import Backend, BackendConfig


def _worker_address() -> str:
    """``host:port`` of a free port on this worker's node, for TensorFlow's gRPC server."""
    host = ray.util.get_node_ip_address()
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.bind(("", 0))
        port = probe.getsockname()[1]
    return f"[{host}]:{port}" if family == socket.AF_INET6 else f"{host}:{port}"


def set_tf_config(worker_addresses: list[str], index: int) -> None:
    """This process is worker ``index`` of ``worker_addresses`` (what MWMS reads at construction)."""
    os.environ["TF_CONFIG"] = json.dumps({
        "cluster": {"worker": worker_addresses},
        "task": {"type": "worker", "index": index},
    })


class _TFConfigBackend(Backend):
    def on_start(self, worker_group, backend_config: "TFConfigBackendConfig") -> None:
        addresses = worker_group.execute(_worker_address)
        # One call per worker (its own index); ray.get surfaces any failure.
        ray.get([worker_group.execute_single_async(i, set_tf_config, worker_addresses=addresses, index=i)
                 for i in range(len(worker_group))])


@dataclass
class TFConfigBackendConfig(BackendConfig):
    """Ray Train backend that writes ``TF_CONFIG`` on every worker (as ``TensorflowConfig`` does)."""

    @property
    def backend_cls(self):
        return _TFConfigBackend
