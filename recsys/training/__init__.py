"""Training: Spark ALS, its hyper-parameter tuning and the hybrid's blend weights."""
