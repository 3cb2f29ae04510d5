"""``python -m jobs.train_mnist [flags]``: ``orchestrator train`` for ``ray job submit``.

Takes exactly the flags of ``orchestrator train`` (see ``--help``).
"""

import sys

from orchestrator.cli import train

if __name__ == "__main__":
    train(sys.argv[1:], prog_name="python -m jobs.train_mnist")
