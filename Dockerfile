# Image for the Airflow services of docker-compose.yaml: Airflow 3.3 plus this project's pinned stack.
FROM apache/airflow:3.3.2-python3.11
USER root
RUN apt-get update \
 && apt-get install -y --no-install-recommends openjdk-17-jre-headless libopenblas0-pthread \
 && rm -rf /var/lib/apt/lists/*
USER airflow
COPY --chown=airflow:root requirements.txt pyproject.toml README.md /opt/recsys/
COPY --chown=airflow:root recsys /opt/recsys/recsys
RUN pip install --no-cache-dir -r /opt/recsys/requirements.txt \
 && pip install --no-cache-dir --no-deps /opt/recsys
