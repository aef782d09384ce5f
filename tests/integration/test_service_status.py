"""The status routes report a MongoDB that answers but cannot write as down, and do not check per call.

A second API runs against its own nx-27017, whose SQLite file the test locks
with ``BEGIN EXCLUSIVE`` (as a disk-full or read-only server would refuse
writes): pings and reads still answer, writes hang. Before the status check
wrote, ``/push/service/status`` said UP throughout.
"""
from __future__ import annotations

import sqlite3
import time

import pytest
import requests

from devstack.stack import Ports, Stack, free_port
from shared.settings import load
from tests import waiting
from tests.integration.tcp_proxy import TcpProxy

#: Seconds the API reuses one live check (short, so the test sees the lock and its release quickly).
CACHE_SECONDS = "0.5"


@pytest.fixture(scope="module")
def own_mongo(tmp_path_factory):
    """A separate nx-27017 (its own file and port): (the stack running it, its database file)."""
    var_dir = tmp_path_factory.mktemp("status-mongo")
    mongo = Stack(var_dir=var_dir, ports=Ports(mongo=free_port()))
    mongo.start_mongo()
    yield mongo, var_dir / "mongo.db"
    mongo.stop_all()


@pytest.fixture(scope="module")
def amqp_proxy():
    """The API's way to RabbitMQ, counting the connections opened through it."""
    port = int(load().amqp_url.rsplit(":", 1)[1].split("/")[0])
    proxy = TcpProxy(("127.0.0.1", port))
    proxy.start()
    yield proxy
    proxy.cut()


@pytest.fixture(scope="module")
def status_api(stack, own_mongo, amqp_proxy):
    mongo, _ = own_mongo
    env = {
        "PUSH_MONGO_URI": mongo.mongo_uri,
        "PUSH_AMQP_URL": f"amqp://guest:guest@127.0.0.1:{amqp_proxy.port}/%2F",
        "PUSH_HEALTH_CHECK_CACHE_SECONDS": CACHE_SECONDS,
    }
    url = stack.start_api(name="api-status", port=free_port(), env=env)
    yield url
    stack.stop("api-status")


def status(url: str) -> tuple[int, dict]:
    answer = requests.get(f"{url}/push/service/status", timeout=30)
    return answer.status_code, answer.json()["responseObject"]


def test_a_mongodb_that_cannot_write_is_down_until_it_can(status_api, own_mongo):
    _, db_file = own_mongo
    assert status(status_api)[0] == 200
    lock = sqlite3.connect(db_file, timeout=5, isolation_level=None)
    try:
        lock.execute("BEGIN EXCLUSIVE")
        time.sleep(float(CACHE_SECONDS))
        code, body = status(status_api)
        assert (code, body["mongodb"], body["rabbitmq"]) == (503, "DOWN", "UP"), body
        assert "MongoDB" in body["message"]
        health = requests.get(f"{status_api}/health", params={"format": "json"}, timeout=30)
        assert health.status_code == 503 and health.json()["mongodb"] == "DOWN"
    finally:
        lock.execute("ROLLBACK")
        lock.close()
    waiting.wait_for(lambda: status(status_api)[0] == 200, timeout=30, what="status UP again")


def test_a_burst_of_status_calls_opens_no_amqp_connection_per_call(status_api, amqp_proxy):
    """Unauthenticated calls share one live check per period: 50 calls, not 50 AMQP connections (and MongoDB writes)."""
    time.sleep(float(CACHE_SECONDS))
    before = len(amqp_proxy.connections) // 2  # the proxy keeps both ends of each connection it forwarded
    for _ in range(50):
        assert status(status_api)[0] == 200
    opened = len(amqp_proxy.connections) // 2 - before
    assert 1 <= opened <= 10, opened  # 2 API processes, one check per CACHE_SECONDS each
