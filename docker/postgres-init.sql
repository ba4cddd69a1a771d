-- A separate database for MLflow beside Airflow's (the owner is the POSTGRES_USER of .env).
CREATE DATABASE mlflow;
