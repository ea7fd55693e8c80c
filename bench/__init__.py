"""Benchmarks: `python -m bench run [--lane ...] [--quick]`; see docs/benchmarks.md."""
