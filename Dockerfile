# syntax=docker/dockerfile:1
#
# One image for the whole production-like stack (docker-compose.yml): every
# Airflow component, the Celery workers and the MLflow tracking server run it.
#
#   docker compose build            # or: docker build -t recsys:local .
#
# Layout inside the image:
#   /opt/venv              Python environment from requirements.lock + recsys (root-owned, read-only at run time)
#   /opt/airflow           AIRFLOW_HOME: dags/, plugins/, expectations/ baked in; logs/ and auth/ are volumes
#   /var/lib/recsys        RECSYS_HOME: run folders and batch outputs (a volume shared by every worker)
#   /var/lib/mlflow        MLflow server's artifact destination (a volume on the mlflow service only)

ARG PYTHON_IMAGE=python:3.11-slim-bookworm
FROM ${PYTHON_IMAGE}

# 50000 with group 0 is the convention of the official Airflow image; group 0 lets
# platforms that run containers under an arbitrary uid (OpenShift) still write.
ARG AIRFLOW_UID=50000

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    AIRFLOW_HOME=/opt/airflow \
    RECSYS_HOME=/var/lib/recsys \
    PYSPARK_PYTHON=/opt/venv/bin/python

# curl answers the HTTP health checks; tini is PID 1, forwards SIGTERM to the one
# child (Celery's warm shutdown depends on it) and reaps zombie task processes.
# Java 17 runs Spark (RECSYS_ENGINE=spark): the driver inside Airflow tasks, and
# the spark-master / spark-worker services, whose Spark is pyspark's own (the
# client, its jars and spark-class come with the lock's pyspark).
RUN apt-get update \
    && apt-get install -y --no-install-recommends curl tini openjdk-17-jre-headless procps \
    && rm -rf /var/lib/apt/lists/*

RUN useradd --uid "${AIRFLOW_UID}" --gid 0 --home-dir "${AIRFLOW_HOME}" --create-home \
        --shell /bin/bash airflow \
    && mkdir -p "${AIRFLOW_HOME}/logs" "${AIRFLOW_HOME}/auth" "${RECSYS_HOME}" /var/lib/mlflow/artifacts \
    && chown -R "${AIRFLOW_UID}:0" "${AIRFLOW_HOME}" "${RECSYS_HOME}" /var/lib/mlflow \
    && chmod -R g+rwX "${AIRFLOW_HOME}" "${RECSYS_HOME}" /var/lib/mlflow

# Dependencies first, in their own layer: it is rebuilt only when the lock changes.
# The lock is universal (environment markers pick tensorflow-cpu on Linux x86_64,
# tensorflow elsewhere); --only-binary keeps compilers out of a slim image and
# fails loudly if a pinned version has no wheel for the target platform.
COPY requirements.lock /tmp/requirements.lock
RUN python -m venv "${VIRTUAL_ENV}" \
    && pip install --only-binary=:all: -r /tmp/requirements.lock \
    && rm /tmp/requirements.lock

# The package itself; its dependencies are already pinned above.
COPY pyproject.toml README.md /tmp/recsys-src/
COPY recsys /tmp/recsys-src/recsys
RUN pip install --no-deps /tmp/recsys-src \
    && rm -rf /tmp/recsys-src

# DAGs and plugins stay root-owned, so task code cannot rewrite them; GX may save
# suites, so expectations/ belongs to the runtime user.
COPY dags/ ${AIRFLOW_HOME}/dags/
COPY plugins/ ${AIRFLOW_HOME}/plugins/
COPY --chown=${AIRFLOW_UID}:0 expectations/ ${AIRFLOW_HOME}/expectations/

USER ${AIRFLOW_UID}:0
WORKDIR ${AIRFLOW_HOME}

# api-server, MLflow, worker and triggerer log servers, scheduler health check;
# Spark master (7077, UI 8080) and worker (UI 8081)
EXPOSE 8080 5000 8793 8794 8974 7077 8081

ENTRYPOINT ["/usr/bin/tini", "--"]
CMD ["airflow", "version"]
