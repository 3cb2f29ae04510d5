"""Entry points for ``ray job submit``: the ``orchestrator`` commands as modules.

    ray job submit --address http://127.0.0.1:8265 --working-dir . -- \
        python -m jobs.train_mnist --config jobs/configs/train_mnist.yaml
    ray job submit --address http://127.0.0.1:8265 --working-dir . -- \
        python -m jobs.tune_mnist --config jobs/configs/tune_mnist.yaml --samples 16

Inside a job, ``RAY_ADDRESS`` is set, so they join the job's cluster.
"""
