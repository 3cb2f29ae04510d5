"""``python -m jobs.train_mnist [flags]``: ``orchestrator train`` for ``ray job submit``.

Takes exactly the flags of ``orchestrator train`` (see ``--help``).
"""

import sys

from jobs import refuse_storage_inside_the_job
from orchestrator.cli import train

if __name__ == "__main__":
    refuse_storage_inside_the_job(sys.argv[1:])
    train(sys.argv[1:], prog_name="python -m jobs.train_mnist")
