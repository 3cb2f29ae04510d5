"""Entry points for ``ray job submit``: the ``orchestrator`` commands as modules.

    export RAY_AUTH_MODE=token RAY_AUTH_TOKEN=$(ray get-auth-token)   # the cluster's token
    ray job submit --address http://127.0.0.1:8265 --working-dir . -- \
        python -m jobs.train_mnist --config jobs/configs/train_mnist.yaml \
        --storage /mnt/efs/orchestrator --name run1
    ray job submit --address http://127.0.0.1:8265 --working-dir . -- \
        python -m jobs.tune_mnist --config jobs/configs/tune_mnist.yaml --samples 16 \
        --storage /mnt/efs/orchestrator --name search1

Inside a job, ``RAY_ADDRESS`` is set, so they join the job's cluster. The job
runs in a temporary copy of the working dir that Ray deletes afterwards: the
storage must be an absolute path every node shares (NFS/EFS), or nothing of the
run survives it; a relative one is refused (s3:// URIs are not supported yet).
"""

from __future__ import annotations

import os
import sys
from typing import Optional

# Set by Ray's job supervisor in the environment of a submitted job's entrypoint.
_IN_RAY_JOB = "RAY_JOB_CONFIG_JSON_ENV_VAR"


def _flag(argv: list[str], name: str) -> Optional[str]:
    value = None
    for i, arg in enumerate(argv):
        if arg == name and i + 1 < len(argv):
            value = argv[i + 1]
        elif arg.startswith(name + "="):
            value = arg.split("=", 1)[1]
    return value


def refuse_storage_inside_the_job(argv: list[str]) -> None:
    """In a submitted job, exit 2 with one line when results would go into the job's temporary dir."""
    if _IN_RAY_JOB not in os.environ:
        return
    from orchestrator.errors import EXIT_USAGE, UserError
    from orchestrator.spec import ExperimentSpec, read_yaml

    storage = _flag(argv, "--storage")
    if storage is None and _flag(argv, "--config"):
        try:
            storage = read_yaml(_flag(argv, "--config")).get("storage")
        except UserError:
            return  # the command itself reports a bad config
    storage = str(storage or ExperimentSpec.model_fields["storage"].default)
    if "://" in storage or os.path.isabs(os.path.expanduser(storage)):
        return  # URIs: the command itself refuses them (not supported yet)
    print(f"error: storage: {storage!r} is relative, so inside `ray job submit` it lands in the job's "
          "temporary copy of the working dir, which Ray deletes; pass an absolute path that every node "
          "shares (valid example: `--storage /mnt/efs/orchestrator`)", file=sys.stderr)
    sys.exit(EXIT_USAGE)
