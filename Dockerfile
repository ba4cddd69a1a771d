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
# Spark reads an s3:// lake in place through Hadoop's S3A connector, which pyspark does not ship: add the
# hadoop-aws release matching pyspark's Hadoop client (jars/hadoop-client-api-3.5.0.jar) and the AWS SDK v2
# bundle it is built against. Without them a Spark stage on an S3 lake stops with a one-line error.
ARG HADOOP_AWS_VERSION=3.5.0
ARG AWS_SDK_BUNDLE_VERSION=2.35.4
RUN jars="$(python -c 'import os, pyspark; print(os.path.join(os.path.dirname(pyspark.__file__), "jars"))')" \
 && curl -fsSL -o "$jars/hadoop-aws-${HADOOP_AWS_VERSION}.jar" \
    "https://repo1.maven.org/maven2/org/apache/hadoop/hadoop-aws/${HADOOP_AWS_VERSION}/hadoop-aws-${HADOOP_AWS_VERSION}.jar" \
 && curl -fsSL -o "$jars/bundle-${AWS_SDK_BUNDLE_VERSION}.jar" \
    "https://repo1.maven.org/maven2/software/amazon/awssdk/bundle/${AWS_SDK_BUNDLE_VERSION}/bundle-${AWS_SDK_BUNDLE_VERSION}.jar"
