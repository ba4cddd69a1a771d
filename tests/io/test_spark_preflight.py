"""A ``spark://`` master that does not accept connections is refused in one line within seconds,
before a JVM is started (Spark itself retries it for over a minute and ends in ~200 lines)."""

from __future__ import annotations

import socket
import time

import pytest

from recsys.core.errors import ConfigError, ServiceUnavailable
from recsys.core.settings import Settings
from recsys.io.spark import check_master, get_spark
from tests.standalone import free_port


def test_unreachable_master_is_refused_before_a_session_is_made(tmp_path):
    master = f"spark://127.0.0.1:{free_port()}"
    settings = Settings.from_env({"RECSYS_HOME": str(tmp_path), "RECSYS_SPARK_MASTER": master})
    started = time.monotonic()
    with pytest.raises(ServiceUnavailable) as info:
        get_spark(settings)
    assert time.monotonic() - started < 30
    message = str(info.value)
    assert f"Spark master {master} is not reachable" in message and "RECSYS_SPARK_MASTER" in message
    assert "Connection refused" in message and "\n" not in message and info.value.retryable


def test_any_listening_master_of_a_list_is_enough():
    closed = free_port()
    with socket.create_server(("127.0.0.1", 0)) as listening:
        port = listening.getsockname()[1]
        check_master(f"spark://127.0.0.1:{closed},127.0.0.1:{port}", timeout=2)
    with pytest.raises(ServiceUnavailable, match=f"127.0.0.1:{closed}: Connection refused"):
        check_master(f"spark://127.0.0.1:{closed},127.0.0.1:{port}", timeout=2)


def test_other_masters_are_left_to_spark_and_a_bad_url_is_a_config_error():
    for master in ("local[*]", "local[2]", "yarn", "k8s://https://127.0.0.1:1"):
        check_master(master)
    with pytest.raises(ConfigError, match="expected spark://host:port"):
        check_master("spark://just-a-host")
