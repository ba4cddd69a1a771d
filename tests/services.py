"""The team stack's services, started natively on loopback for tests (there is no Docker engine here).

The same topology as ``docker-compose.yaml``: PostgreSQL (Airflow's and MLflow's metadata, separate
databases), an S3-compatible endpoint (moto's server here, MinIO in compose) for the lake and the
MLflow artifacts, an MLflow tracking server on PostgreSQL with an S3 artifact store, and a Spark
standalone master and worker from the pyspark installation. Each service is a context manager that
starts it (installing Debian's package first where it is missing), waits until it answers and stops
it with everything it started.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.conftest import SPARK_TEST_CONF
from tests.standalone import free_port, stop_tree

BIN = Path(sys.executable).parent
S3_ACCESS_KEY = "recsys-test"
S3_SECRET_KEY = "recsys-test-secret"  # a throwaway credential of the loopback test endpoint

#: compose service -> what stands in for it in the native suite
NATIVE_SERVICES = {
    "postgres": "PostgreSQL from Debian's packages (initdb + pg_ctl)",
    "minio": "moto_server (S3 API) on loopback",
    "minio-init": "boto3 create_bucket",
    "mlflow": "mlflow server on PostgreSQL with an s3:// artifact destination",
    "spark-master": "spark-class org.apache.spark.deploy.master.Master",
    "spark-worker": "spark-class org.apache.spark.deploy.worker.Worker",
    "airflow-init": "airflow db migrate",
    "airflow-apiserver": "airflow dags test (the API server is exercised by the standalone tests)",
    "airflow-scheduler": "airflow dags test",
    "airflow-dag-processor": "airflow dags test",
    "airflow-triggerer": "airflow dags test",
}


def wait_until(check, timeout: float, what: str, log: Path | None = None) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except Exception:  # noqa: BLE001, S110 - not up yet
            pass
        time.sleep(1.0)
    tail = ""
    if log is not None and log.exists():
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-40:])
    pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}\n{tail}")


def ensure_debian_packages(binaries: dict[str, str]) -> None:
    """Install the Debian package of each missing binary (``{glob of the binary: package}``)."""
    missing = sorted(
        {pkg for pattern, pkg in binaries.items() if not glob.glob(pattern) and not shutil.which(pattern)}
    )
    if not missing:
        return
    if os.geteuid() != 0:
        pytest.fail(
            f"missing {', '.join(missing)}: install with `sudo apt-get install -y {' '.join(missing)}`"
        )
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (
        ["apt-get", "update", "-q"],
        ["apt-get", "install", "-y", "-q", "--no-install-recommends", *missing],
    ):
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
        if done.returncode != 0:
            pytest.fail(f"{' '.join(cmd)} failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")


def _spawn(cmd: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    handle = log.open("w")
    return subprocess.Popen(cmd, stdout=handle, stderr=subprocess.STDOUT, env=env, start_new_session=True)


# ---- PostgreSQL -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Postgres:
    port: int
    user: str
    password: str

    def url(self, database: str) -> str:
        return f"postgresql+psycopg2://{self.user}:{self.password}@127.0.0.1:{self.port}/{database}"

    def query(self, database: str, sql: str) -> list[tuple]:
        import psycopg2

        with (
            psycopg2.connect(
                host="127.0.0.1", port=self.port, user=self.user, password=self.password, dbname=database
            ) as conn,
            conn.cursor() as cur,
        ):
            cur.execute(sql)
            return cur.fetchall()


@contextmanager
def postgres(root: Path, databases: tuple[str, ...] = ("airflow", "mlflow")) -> Iterator[Postgres]:
    """A throwaway cluster on a free loopback port (as the ``postgres`` user when run as root)."""
    ensure_debian_packages({"/usr/lib/postgresql/*/bin/pg_ctl": "postgresql"})
    bindir = Path(sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))[-1]).parent
    import tempfile

    # pytest's temporary folders are private to their owner: the cluster gets its own folder, which
    # the postgres user can reach when the tests run as root (PostgreSQL refuses to run as root)
    root.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="recsys-pg-"))
    data, sockets = root / "pgdata", root / "pgsock"
    sockets.mkdir()
    as_postgres: list[str] = []
    if os.geteuid() == 0:
        as_postgres = ["runuser", "-u", "postgres", "--"]
        root.chmod(0o755)
        shutil.chown(root, "postgres")
        shutil.chown(sockets, "postgres")
    password = "recsys-test"
    pwfile = root / "pwfile"
    pwfile.write_text(password)
    if as_postgres:
        shutil.chown(pwfile, "postgres")
    port = free_port()
    run = lambda cmd: subprocess.run(as_postgres + cmd, capture_output=True, text=True, timeout=120)  # noqa: E731
    done = run(
        [
            str(bindir / "initdb"),
            "-D",
            str(data),
            "-U",
            "recsys",
            "--pwfile",
            str(pwfile),
            "-A",
            "scram-sha-256",
        ]
    )
    if done.returncode != 0:
        pytest.fail(f"initdb failed: {done.stderr[-2000:]}")
    log = root / "postgres.log"
    options = f"-p {port} -k {sockets} -c listen_addresses=127.0.0.1"
    done = run([str(bindir / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(log), "-w", "start"])
    if done.returncode != 0:
        pytest.fail(f"pg_ctl start failed: {done.stderr[-2000:]}\n{log.read_text(errors='replace')[-2000:]}")
    server = Postgres(port=port, user="recsys", password=password)
    try:
        for db in databases:
            server.query("postgres", "select 1")  # connection check
            import psycopg2

            conn = psycopg2.connect(
                host="127.0.0.1", port=port, user="recsys", password=password, dbname="postgres"
            )
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute(f"CREATE DATABASE {db}")
            conn.close()
        yield server
    finally:
        run([str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"])
        shutil.rmtree(root, ignore_errors=True)


# ---- S3 ---------------------------------------------------------------------------------------------


@contextmanager
def s3_server(root: Path, buckets: tuple[str, ...]) -> Iterator[str]:
    """moto's S3-compatible server on a free loopback port, with ``buckets`` created; yields its URL."""
    import boto3

    port = free_port()
    proc = _spawn([str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)], root / "s3.log")
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(
            lambda: httpx.get(f"{url}/moto-api/").status_code < 500, 60, "the S3 endpoint", root / "s3.log"
        )
        client = boto3.client(
            "s3",
            endpoint_url=url,
            aws_access_key_id=S3_ACCESS_KEY,
            aws_secret_access_key=S3_SECRET_KEY,
            region_name="us-east-1",
        )
        for bucket in buckets:
            client.create_bucket(Bucket=bucket)
        yield url
    finally:
        stop_tree(proc, grace=10)


def s3_env(url: str) -> dict[str, str]:
    """What boto3 (the lake) and MLflow (artifacts) need to reach the endpoint."""
    return {
        "AWS_ENDPOINT_URL": url,
        "MLFLOW_S3_ENDPOINT_URL": url,
        "AWS_ACCESS_KEY_ID": S3_ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": S3_SECRET_KEY,
        "AWS_DEFAULT_REGION": "us-east-1",
    }


# ---- MLflow -----------------------------------------------------------------------------------------


@contextmanager
def mlflow_server(root: Path, backend_uri: str, artifacts: str, env: dict[str, str]) -> Iterator[str]:
    port = free_port()
    log = root / "mlflow.log"
    cmd = [
        str(BIN / "mlflow"),
        "server",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
        "--backend-store-uri",
        backend_uri,
        "--artifacts-destination",
        artifacts,
    ]
    proc = _spawn(cmd, log, env)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: httpx.get(f"{url}/health").status_code == 200, 180, "the MLflow server", log)
        yield url
    finally:
        stop_tree(proc, grace=15)


# ---- Spark standalone -------------------------------------------------------------------------------


#: seconds for a history server answer: its first request for an application replays the event log
HISTORY_TIMEOUT = 180.0


@dataclass(frozen=True)
class SparkCluster:
    url: str  # spark://127.0.0.1:PORT, for RECSYS_SPARK_MASTER
    ui_url: str  # the master's web UI
    conf_dir: Path  # SPARK_CONF_DIR for drivers: spark-defaults.conf with the event log
    history_url: str  # the history server's REST API root (…/api/v1), over the event log

    def status(self) -> dict:
        """Workers and applications (running and completed), from the master's JSON view."""
        return httpx.get(f"{self.ui_url}/json/").json()

    def applications(self) -> list[dict]:
        """Completed applications as Spark's history server lists them (its REST API)."""
        url = f"{self.history_url}/applications"
        return httpx.get(url, params={"status": "completed"}, timeout=HISTORY_TIMEOUT).json()

    def executors_by_job_group(self, app_id: str) -> dict[str, set[str]]:
        """Job group -> the executors that ran its tasks (history server: jobs, stages, task lists)."""
        groups: dict[str, set[str]] = {}
        with httpx.Client(
            base_url=f"{self.history_url}/applications/{app_id}", timeout=HISTORY_TIMEOUT
        ) as api:
            for job in api.get("/jobs").json():
                ran = groups.setdefault(job.get("jobGroup") or "", set())
                for stage_id in job.get("stageIds", []):
                    attempts = api.get(f"/stages/{stage_id}")
                    if attempts.status_code != 200:  # a stage the job skipped (its output was reused)
                        continue
                    for attempt in attempts.json():
                        tasks = api.get(
                            f"/stages/{stage_id}/{attempt['attemptId']}/taskList", params={"length": 100000}
                        )
                        ran.update(str(t["executorId"]) for t in tasks.json())
        return groups


@contextmanager
def spark_standalone(root: Path, worker_memory: str = "2g", workers: int = 1) -> Iterator[SparkCluster]:
    """A Spark standalone master and ``workers`` workers from the pyspark installation (with more than
    one, a core each), drivers that log their events, and a history server that reads the log."""
    import pyspark

    spark_home = Path(pyspark.__file__).parent
    events = root / "spark-events"
    events.mkdir(parents=True, exist_ok=True)
    conf_dir = root / "spark-conf"
    conf_dir.mkdir(parents=True, exist_ok=True)
    (conf_dir / "spark-defaults.conf").write_text(
        # the suite's JVM options (tests/spark-conf), then the cluster's own
        (SPARK_TEST_CONF / "spark-defaults.conf").read_text(encoding="utf-8")
        + f"spark.eventLog.enabled true\nspark.eventLog.dir {events.as_uri()}\n"
        # a driver starts its jobs once every executor has registered, so each one gets tasks
        "spark.scheduler.minRegisteredResourcesRatio 1.0\n"
        "spark.scheduler.maxRegisteredResourcesWaitingTime 60s\n"
        # a two-core cluster: a few shuffle partitions, not Spark's 200 (still one per executor and more)
        "spark.sql.shuffle.partitions 4\n",
        encoding="utf-8",
    )
    env = {
        **os.environ,
        "SPARK_HOME": str(spark_home),
        "SPARK_LOCAL_IP": "127.0.0.1",
        "SPARK_LOG_DIR": str(root),
    }
    env.pop("PYSPARK_SUBMIT_ARGS", None)
    port, ui_port, history_port = free_port(), free_port(), free_port()
    spark_class = str(spark_home / "bin" / "spark-class")
    master = _spawn(
        [
            spark_class,
            "org.apache.spark.deploy.master.Master",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--webui-port",
            str(ui_port),
        ],
        root / "spark-master.log",
        env,
    )
    url = f"spark://127.0.0.1:{port}"
    started: list = []
    try:
        wait_until(
            lambda: httpx.get(f"http://127.0.0.1:{ui_port}/json/").status_code == 200,
            120,
            "the Spark master",
            root / "spark-master.log",
        )
        cores = "2" if workers == 1 else "1"
        for n in range(workers):
            started.append(
                _spawn(
                    [
                        spark_class,
                        "org.apache.spark.deploy.worker.Worker",
                        url,
                        "--host",
                        "127.0.0.1",
                        "--cores",
                        cores,
                        "--memory",
                        worker_memory,
                        "--webui-port",
                        str(free_port()),
                        "--work-dir",
                        str(root / f"spark-work-{n}"),
                    ],
                    root / f"spark-worker-{n}.log",
                    env,
                )
            )
        started.append(
            _spawn(
                [spark_class, "org.apache.spark.deploy.history.HistoryServer"],
                root / "spark-history.log",
                {
                    **env,
                    "SPARK_HISTORY_OPTS": f"-Dspark.history.fs.logDirectory={events.as_uri()} "
                    f"-Dspark.history.ui.port={history_port} -Dspark.history.fs.update.interval=2s",
                },
            )
        )
        wait_until(
            lambda: len(httpx.get(f"http://127.0.0.1:{ui_port}/json/").json().get("workers", [])) >= workers,
            120,
            f"{workers} Spark worker(s) to register with the master",
            root / "spark-worker-0.log",
        )
        history = f"http://127.0.0.1:{history_port}/api/v1"
        wait_until(
            lambda: httpx.get(f"{history}/version").status_code == 200,
            120,
            "the Spark history server",
            root / "spark-history.log",
        )
        yield SparkCluster(
            url=url, ui_url=f"http://127.0.0.1:{ui_port}", conf_dir=conf_dir, history_url=history
        )
    finally:
        for proc in reversed(started):
            stop_tree(proc, grace=15)
        stop_tree(master, grace=15)
