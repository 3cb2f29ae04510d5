"""Distributed Keras training and search on Ray; read results with :func:`open_run` / :func:`open_search`.

Importing this package stays light (no Ray, no TensorFlow, no pandas): the
result readers are loaded on first use.
"""

from __future__ import annotations

from typing import Any

__all__ = ["open_run", "open_search"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from orchestrator import api

        return getattr(api, name)
    raise AttributeError(f"module 'orchestrator' has no attribute {name!r}")
