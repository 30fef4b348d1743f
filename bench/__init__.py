"""Benchmarks: our supervisor and the naive loop, side by side, against the simulator.

``python -m bench`` (``make bench``) runs them all; see docs/benchmarks.md.
"""
