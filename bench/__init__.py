"""Benchmarks of recsys-retrain against what a user would otherwise run (see docs/benchmarks.md)."""
