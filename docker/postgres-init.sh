#!/bin/bash
# A separate database for MLflow beside Airflow's (POSTGRES_DB); both owned by POSTGRES_USER.
set -euo pipefail
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
  -c "CREATE DATABASE \"${MLFLOW_DB:-mlflow}\" OWNER \"$POSTGRES_USER\""
