"""recsys-retrain: weekly retraining of a Spark ALS recommender, orchestrated by Airflow, tracked by MLflow."""

__version__ = "0.1.0"
