"""The answer latency (a WAN's round trip, without blocking other streams) and FCM's per-project quota."""
from __future__ import annotations

import asyncio
import secrets
import time

import orjson
import pytest

from devstack.credentials import make_credentials
from shared.outbound import OutboundPolicy
from tests.simulators.conftest import apns_headers, register_key, running, spread
from workers.delivery.fcm import FcmAuth

PAYLOAD = b'{"aps":{"alert":"x"}}'


def test_latency_delays_every_answer_without_serialising_streams(tmp_path, credentials):
    with running("apns", tmp_path, "--latency-ms", "300") as apns:
        register_key(apns, credentials)

        async def burst(count: int) -> tuple[list[int], float]:
            (connection,) = await apns.connections(1)
            path, headers = apns_headers(credentials, "0" * 64)
            started = time.monotonic()
            answers = await asyncio.gather(*(connection.request("POST", path, headers, PAYLOAD, 10) for _ in range(count)))
            elapsed = time.monotonic() - started
            connection.close()
            return [a.status for a in answers], elapsed

        statuses, elapsed = asyncio.run(burst(50))
        assert statuses == [200] * 50
        assert 0.3 <= elapsed < 2.0  # 50 streams waited side by side, not one after another (15 s)
        # Settable on the control port: off, then on again.
        assert apns.post("/settings", {"latency_ms": 0}).json()["latency_ms"] == 0
        _statuses, elapsed = asyncio.run(burst(10))
        assert elapsed < 0.3
        assert apns.post("/settings", {"latency_ms": 500}).status_code == 200
        assert apns.get("/settings")["latency_ms"] == 500
        _statuses, elapsed = asyncio.run(burst(10))
        assert elapsed >= 0.5


@pytest.fixture(scope="module")
def fcm(tmp_path_factory):
    with running("fcm", tmp_path_factory.mktemp("certs"), "--processes", "2") as simulator:
        yield simulator


def fcm_app(fcm, name: str):
    credentials = make_credentials(name, fcm_origin=f"https://127.0.0.1:{fcm.port}")
    answer = fcm.post("/service-accounts", {"client_email": credentials.service_account["client_email"],
                                            "project_id": credentials.project_id, "public_key_pem": credentials.fcm_public_pem})
    assert answer.status_code == 200
    return credentials


def send_burst(fcm, credentials, count: int, *, connections: int = 4) -> list:
    """``count`` sends of one project at once over ``connections`` connections; answers the answers."""

    async def main():
        access = await FcmAuth(service_account_info=credentials.service_account, ca_file=str(fcm.ca_file),
                               outbound=OutboundPolicy.for_urls([credentials.service_account["token_uri"]])).token()
        opened = await fcm.connections(connections)
        if connections > 1:
            spread(fcm, opened)
        headers = [("authorization", f"Bearer {access}"), ("content-type", "application/json")]
        path = f"/v1/projects/{credentials.project_id}/messages:send"

        def body() -> bytes:
            return orjson.dumps({"message": {"token": "fcm-" + secrets.token_hex(8), "data": {"k": "v"}}})

        answers = await asyncio.gather(*(opened[i % len(opened)].request("POST", path, headers, body(), 10) for i in range(count)))
        for connection in opened:
            connection.close()
        return answers

    return asyncio.run(main())


def test_fcm_quota_answers_429_above_it_for_all_processes_together(fcm):
    credentials, other = fcm_app(fcm, "quota-a"), fcm_app(fcm, "quota-b")
    assert fcm.post("/settings", {"quota_per_minute": 40}).status_code == 200
    try:
        throttled_before = fcm.get("/stats")["throttled_total"]
        answers = send_burst(fcm, credentials, 100)
        statuses = [a.status for a in answers]
        # 40 per minute for the project, whichever process each request reached (the bucket refills 0.67/s meanwhile).
        assert 40 <= statuses.count(200) <= 42
        refused = [a for a in answers if a.status == 429]
        assert len(refused) == 100 - statuses.count(200)
        error = orjson.loads(refused[0].body)["error"]
        assert error["status"] == "RESOURCE_EXHAUSTED"
        assert error["details"][0]["errorCode"] == "QUOTA_EXCEEDED"
        assert all(1 <= int(a.headers["retry-after"]) <= 60 for a in refused)
        assert fcm.get("/stats")["throttled_total"] - throttled_before == len(refused)
        # Per project: another project still has its own.
        assert [a.status for a in send_burst(fcm, other, 20)] == [200] * 20
    finally:
        fcm.post("/settings", {"quota_per_minute": None})


def test_fcm_below_its_quota_is_never_throttled(fcm):
    credentials = fcm_app(fcm, "quota-c")
    assert fcm.post("/settings", {"quota_per_second": 200}).json()["quota_per_second"] == 200
    try:
        for _ in range(3):  # 3 × 50 over 3 s: under 200/s
            assert [a.status for a in send_burst(fcm, credentials, 50)] == [200] * 50
            time.sleep(0.5)
    finally:
        fcm.post("/settings", {"quota_per_second": None})
    assert fcm.get("/settings")["quota_per_second"] is None


def test_quota_given_at_start(tmp_path):
    with running("fcm", tmp_path, "--quota-per-second", "5") as fcm:
        assert fcm.get("/settings") == {"latency_ms": 0.0, "quota_per_second": 5, "quota_per_minute": None}
        statuses = [a.status for a in send_burst(fcm, fcm_app(fcm, "quota-d"), 20, connections=1)]
        assert 5 <= statuses.count(200) <= 6 and statuses.count(429) == 20 - statuses.count(200)
