"""Benchmarks of the engine and the event streams: `python -m bench`.

Figures are printed, never asserted (see docs/performance.md).
"""
