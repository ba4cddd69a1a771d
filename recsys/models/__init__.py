"""Recommenders: their contract (protocol), the factor model, content, hybrid, reranker, page rows and
the MLflow serving wrapper."""
