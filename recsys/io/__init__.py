"""Where data and runs live: the lake's storage, S3 sync, the Spark session, MLflow tracking setup."""
