"""Metrics, model evaluation on a holdout, and drift statistics."""
