"""Benchmarks and the evaluation report (``python -m bench.report``)."""
