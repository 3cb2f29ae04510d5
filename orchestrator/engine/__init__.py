"""The Ray side: connect to a cluster, check it can run the spec, wire Train and Tune.

Nothing here imports TensorFlow: the driver launches runs and searches with
Ray alone; TensorFlow lives in the worker processes (``orchestrator.worker``).
"""
