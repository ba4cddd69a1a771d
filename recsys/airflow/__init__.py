"""Airflow glue: task callables and notifiers used by the DAG files."""
