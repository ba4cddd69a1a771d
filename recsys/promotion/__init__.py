"""Promotion: evaluation gates and the MLflow model registry."""
