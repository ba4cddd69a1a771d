"""Every environment-specific value (paths, URIs, names, secrets) is read here and nowhere else.

Each setting is an environment variable with a documented default, so the same code runs on a
laptop (embedded defaults: local lake, SQLite MLflow store, ``local[*]`` Spark) and on the team
stack (S3, MLflow server, Spark master) by changing the environment only.

=============================== ========================================== ==============================
variable                        default                                    meaning
=============================== ========================================== ==============================
RECSYS_HOME                     ``./var`` (current directory)              root of all local state
RECSYS_LAKE_DIR                 ``$RECSYS_HOME/lake``                      data lake (raw .. recommendations)
RECSYS_LAKE_URI                 (none: the lake is the local folder)       ``s3://bucket/prefix``: the lake
                                                                           in S3, read and written in place
                                                                           (``recsys.io.lakefs``)
MLFLOW_TRACKING_URI             ``sqlite:///$RECSYS_HOME/mlflow/mlflow.db`` MLflow tracking + registry store
RECSYS_MLFLOW_ARTIFACT_ROOT     ``$RECSYS_HOME/mlflow/artifacts``          artifact root of new experiments
                                (none with an http(s) tracking server:     (local path or s3://...)
                                the server's ``--artifacts-destination``)
RECSYS_MLFLOW_EXPERIMENT        ``weekly_retrain``                         experiment of the training runs
RECSYS_MODEL_NAME               ``recsys_als``                             registered model name
RECSYS_SPARK_MASTER             ``local[*]``                               Spark master URL
RECSYS_SPARK_DRIVER_MEMORY      ``auto``                                   Spark driver memory (auto: RAM / 4, 1g-8g)
RECSYS_PSEUDONYM_KEY            (none: required by the anonymize stage)    HMAC key for user pseudonyms
RECSYS_DATA_DIR                 ``../shared/data`` if it exists            MovieLens datasets (optional)
RECSYS_CONFIG                   (none: built-in defaults)                  JSON file of stage configs
RECSYS_NOTIFY                   ``log``                                    where notifications go
                                                                           (``recsys.airflow.notify``), e.g.
                                                                           ``log,email:ops@example.com``
RECSYS_MLFLOW_PUBLIC_URL        http(s) tracking URI, else 127.0.0.1:5000  MLflow UI address in the links
                                                                           of the Airflow UI
=============================== ========================================== ==============================
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from recsys.core.errors import ConfigError

PSEUDONYM_KEY_ENV = "RECSYS_PSEUDONYM_KEY"
MIN_KEY_BYTES = 16
#: where `make ui` serves the MLflow UI: the links' default when tracking is not over http(s)
DEFAULT_MLFLOW_PUBLIC_URL = "http://127.0.0.1:5000"


@dataclass(frozen=True)
class Settings:
    home: Path
    lake_dir: Path
    mlflow_tracking_uri: str
    mlflow_artifact_root: str
    mlflow_experiment: str
    model_name: str
    spark_master: str
    spark_driver_memory: str
    data_dir: Path | None
    config_file: Path | None = None
    lake_uri: str | None = None  # s3://bucket/prefix: the lake lives in S3 (through boto3)
    # the MLflow UI as a browser reaches it (links from the Airflow UI to runs and model versions)
    mlflow_public_url: str = DEFAULT_MLFLOW_PUBLIC_URL

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Settings:
        env = dict(os.environ if env is None else env)
        home = Path(env.get("RECSYS_HOME") or Path.cwd() / "var").expanduser().resolve()
        lake = Path(env.get("RECSYS_LAKE_DIR") or home / "lake").expanduser().resolve()
        lake_uri = (env.get("RECSYS_LAKE_URI") or "").strip()
        if lake_uri.startswith("file://"):  # a lake on this machine's (or a shared) filesystem, as a URI
            if urlsplit(lake_uri).netloc not in ("", "localhost") or not urlsplit(lake_uri).path.startswith(
                "/"
            ):
                raise ConfigError(f"RECSYS_LAKE_URI={lake_uri!r}: expected file:///absolute/path")
            lake, lake_uri = Path(urlsplit(lake_uri).path).resolve(), ""
        mlflow_dir = home / "mlflow"
        tracking = env.get("MLFLOW_TRACKING_URI") or f"sqlite:///{mlflow_dir / 'mlflow.db'}"
        # a tracking server (http/https) keeps artifacts where it is configured to: "" leaves it to it
        remote = tracking.startswith(("http://", "https://"))
        artifacts = env.get("RECSYS_MLFLOW_ARTIFACT_ROOT") or (
            "" if remote else str(mlflow_dir / "artifacts")
        )
        data_dir_raw = env.get("RECSYS_DATA_DIR")
        if data_dir_raw:
            data_dir: Path | None = Path(data_dir_raw).expanduser().resolve()
        else:
            default = Path(__file__).resolve().parents[2] / "shared" / "data"
            data_dir = default if default.is_dir() else None
        model_name = env.get("RECSYS_MODEL_NAME") or "recsys_als"
        if not model_name.replace("_", "").replace("-", "").isalnum():
            raise ConfigError(f"RECSYS_MODEL_NAME={model_name!r}: use letters, digits, '_' or '-'")
        return cls(
            home=home,
            lake_dir=lake,
            mlflow_tracking_uri=tracking,
            mlflow_artifact_root=artifacts,
            mlflow_experiment=env.get("RECSYS_MLFLOW_EXPERIMENT") or "weekly_retrain",
            model_name=model_name,
            spark_master=env.get("RECSYS_SPARK_MASTER") or "local[*]",
            spark_driver_memory=_driver_memory(env.get("RECSYS_SPARK_DRIVER_MEMORY")),
            data_dir=data_dir,
            config_file=Path(env["RECSYS_CONFIG"]).expanduser().resolve()
            if env.get("RECSYS_CONFIG")
            else None,
            lake_uri=_lake_uri(lake_uri),
            mlflow_public_url=(
                env.get("RECSYS_MLFLOW_PUBLIC_URL")
                or (_without_credentials(tracking) if remote else DEFAULT_MLFLOW_PUBLIC_URL)
            ).rstrip("/"),
        )


def _driver_memory(raw: str | None) -> str:
    value = (raw or "auto").strip().lower()
    if value != "auto" and not re.fullmatch(r"[1-9][0-9]*[kmgt]?", value):
        raise ConfigError(
            f"RECSYS_SPARK_DRIVER_MEMORY={raw!r}: expected auto or a JVM size such as 2g or 4096m"
        )
    return value


def _lake_uri(raw: str | None) -> str | None:
    if not raw:
        return None
    uri = raw.strip().rstrip("/")
    if not uri.startswith("s3://") or len(uri) <= len("s3://") or uri.startswith("s3:///"):
        raise ConfigError(
            f"RECSYS_LAKE_URI={raw!r}: expected s3://bucket, s3://bucket/prefix or file:///absolute/path"
        )
    return uri


def _without_credentials(uri: str) -> str:
    """``uri`` without ``user:password@``: a link a browser follows must not carry a login."""
    parts = urlsplit(uri)
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


def pseudonym_key(env: dict[str, str] | None = None) -> bytes:
    """The HMAC key for user pseudonyms, from the environment only (never from code or config files).

    Raises ConfigError with a clear message when it is missing or too short.
    """
    env = os.environ if env is None else env
    raw = env.get(PSEUDONYM_KEY_ENV, "")
    if not raw:
        raise ConfigError(
            f"{PSEUDONYM_KEY_ENV} is not set (nor, under Airflow, the Variable recsys_pseudonym_secret): "
            "the anonymize stage needs a secret key "
            f"(e.g. `export {PSEUDONYM_KEY_ENV}=$(python -c 'import secrets; print(secrets.token_hex(32))')`)"
        )
    key = raw.encode("utf-8")
    if len(key) < MIN_KEY_BYTES:
        raise ConfigError(f"{PSEUDONYM_KEY_ENV} is too short: use at least {MIN_KEY_BYTES} characters")
    return key


NOTIFY_ENV = "RECSYS_NOTIFY"


def notify_spec(env: dict[str, str] | None = None) -> str:
    """Where notifications go (``RECSYS_NOTIFY``, default ``log``), parsed by :mod:`recsys.airflow.notify`.

    Apart from :class:`Settings`, so a failure notification still goes out when another setting is bad.
    """
    env = os.environ if env is None else env
    return (env.get(NOTIFY_ENV) or "").strip() or "log"
