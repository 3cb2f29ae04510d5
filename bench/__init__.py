"""Benchmarks: ``python -m bench.run`` (see ``bench/run.py`` for what it measures and how)."""
