"""Benchmarks of triofetch side by side with its peers (run ``python -m benchmarks``).

Benchmarks are measurements, never timed assertions: nothing here is part of the test suite.
See ``benchmarks/README.md``.
"""
