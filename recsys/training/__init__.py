"""Training: Spark ALS and its hyper-parameter tuning."""
