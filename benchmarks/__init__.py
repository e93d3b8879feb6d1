"""Benchmark scripts, run from the repository root as ``python -m benchmarks.<name>`` (see NOTES.md)."""
