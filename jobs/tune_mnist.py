"""``python -m jobs.tune_mnist --config FILE [flags]``: ``orchestrator tune`` for ``ray job submit``.

Takes exactly the flags of ``orchestrator tune`` (see ``--help``).
"""

import sys

from orchestrator.cli import tune

if __name__ == "__main__":
    tune(sys.argv[1:], prog_name="python -m jobs.tune_mnist")
