"""Entry points for ``ray job submit``: the ``orchestrator`` commands as modules.

    export RAY_AUTH_MODE=token RAY_AUTH_TOKEN=$(ray get-auth-token)   # the cluster's token
    ray job submit --address http://127.0.0.1:8265 --working-dir . -- \
        python -m jobs.train_mnist --config jobs/configs/train_mnist.yaml \
        --storage s3://my-bucket/orchestrator --name run1
    ray job submit --address http://127.0.0.1:8265 --working-dir . -- \
        python -m jobs.tune_mnist --config jobs/configs/tune_mnist.yaml --samples 16 \
        --storage s3://my-bucket/orchestrator --name search1

Inside a job, ``RAY_ADDRESS`` is set, so they join the job's cluster. The job
runs in a temporary copy of the working dir that Ray deletes afterwards: the
storage must be object storage (``s3://...``, see orchestrator/storage.py) or an
absolute path every node shares (NFS/EFS), or nothing of the run survives it; a
relative one is refused in one line (``engine.train.storage_root``).
"""

