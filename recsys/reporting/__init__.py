"""Reports people read: the model report, the data profile, the Airflow UI pages."""
