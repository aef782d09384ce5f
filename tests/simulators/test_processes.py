"""Several serving processes on one port: counts, shown, behaviour tokens, faults, requests and resets hold for all of them.

Each test opens 8 connections of the delivery workers' own HTTP/2 client and
checks (``spread``) that they landed on both processes before it asserts.
"""
from __future__ import annotations

import asyncio
import secrets

import orjson
import pytest

from tests.simulators.conftest import apns_headers, register_key, running, spread

PAYLOAD = b'{"aps":{"alert":"x"}}'
#: Connections per test: with 2 processes, all on one has odds 1 in 128.
CONNECTIONS = 8


def token(prefix: str = "0") -> str:
    return (prefix + secrets.token_hex(32))[:64]


@pytest.fixture(scope="module")
def apns(tmp_path_factory, credentials):
    with running("apns", tmp_path_factory.mktemp("certs"), "--processes", "2") as simulator:
        register_key(simulator, credentials)
        yield simulator


def send_on_each(apns, credentials, device: str, *, collapse_id: str | None = None, sequential: bool = False) -> list[int]:
    """One request for ``device`` on each of (at least) CONNECTIONS new connections; answers the statuses in order."""

    async def main() -> list[int]:
        connections = await apns.connections(CONNECTIONS)
        spread(apns, connections)
        extra = {"apns-collapse-id": collapse_id} if collapse_id else {}
        path, headers = apns_headers(credentials, device, **extra)
        try:
            if sequential:
                return [(await c.request("POST", path, headers, PAYLOAD, 10)).status for c in connections]
            return [a.status for a in await asyncio.gather(*(c.request("POST", path, headers, PAYLOAD, 10) for c in connections))]
        finally:
            for connection in connections:
                connection.close()

    return asyncio.run(main())


def test_counts_and_shown_are_summed_over_processes_and_a_collapse_id_shows_once(apns, credentials):
    collapsed, plain = token(), token()
    first = send_on_each(apns, credentials, collapsed, collapse_id="message-1.0")
    second = send_on_each(apns, credentials, plain)
    assert set(first) == set(second) == {200}
    n, m = len(first), len(second)
    # Delivered on both processes; the device presented one notification for the one collapse id.
    assert apns.get(f"/counts/{collapsed}") == {"delivered": n, "attempts": n, "shown": 1}
    assert apns.get(f"/counts/{plain}") == {"delivered": m, "attempts": m, "shown": m}
    counts = apns.get("/counts")
    assert counts["delivered"][collapsed] == n and counts["shown"][plain] == m
    stats = apns.get("/stats")
    assert len(stats["processes"]) == 2
    assert stats["attempts_total"] == sum(p["attempts_total"] for p in stats["processes"])


def test_behaviour_tokens_count_attempts_over_all_processes(apns, credentials):
    # f5033…: 503 for the token's first 3 attempts anywhere, then 200, whichever process serves them.
    statuses = send_on_each(apns, credentials, token("f5033"), sequential=True)
    assert statuses == [503, 503, 503] + [200] * (len(statuses) - 3)
    statuses = send_on_each(apns, credentials, token("f4292"), sequential=True)
    assert statuses == [429, 429] + [200] * (len(statuses) - 2)


def test_received_gathers_every_process_latest_last(apns, credentials):
    device = token()
    send_on_each(apns, credentials, device, sequential=True)
    received = apns.get(f"/received/{device}")
    assert len(received) == 5  # the last 5 of 8, from both processes
    assert [entry["at"] for entry in received] == sorted(entry["at"] for entry in received)
    assert all(entry["status"] == 200 and entry["auth"] == "token" and "authorization" not in entry["headers"] for entry in received)


def test_unavailable_reaches_every_process_and_reset_clears_them_all(apns, credentials):
    answer = apns.post("/faults", {"unavailable_seconds": 30})
    assert answer.status_code == 200
    try:
        assert set(send_on_each(apns, credentials, token())) == {503}
    finally:
        assert apns.post("/reset").status_code == 200
    assert apns.get("/stats")["attempts_total"] == 0  # every process's counts forgotten
    assert set(send_on_each(apns, credentials, token())) == {200}  # and the fault with them


def test_goaway_reaches_every_connection_of_every_process(apns, credentials):
    async def main() -> tuple[int, list[bool]]:
        connections = await apns.connections(CONNECTIONS)
        spread(apns, connections)
        path, headers = apns_headers(credentials, token())
        await asyncio.gather(*(c.request("POST", path, headers, PAYLOAD, 10) for c in connections))
        answer = await asyncio.to_thread(apns.post, "/faults", {"goaway": True})
        await asyncio.sleep(0.3)
        usable = [c.usable for c in connections]
        for connection in connections:
            connection.close()
        return answer.json()["goaway_connections"], usable

    closed, usable = asyncio.run(main())
    assert closed >= CONNECTIONS
    assert not any(usable)


def test_bad_control_input_is_refused_naming_the_field(apns):
    answer = apns.post("/faults", {"unavailable_seconds": "soon"})
    assert answer.status_code == 400 and answer.json()["field"] == "unavailable_seconds"
    answer = apns.post("/settings", {"latency": 5})
    assert answer.status_code == 400 and answer.json()["field"] == "latency"


def test_an_access_token_issued_by_one_process_works_on_all(tmp_path):
    from devstack.credentials import make_credentials  # noqa: PLC0415
    from shared.outbound import OutboundPolicy  # noqa: PLC0415
    from workers.delivery.fcm import FcmAuth  # noqa: PLC0415

    with running("fcm", tmp_path, "--processes", "2") as fcm:
        credentials = make_credentials("fcmsim", fcm_origin=f"https://127.0.0.1:{fcm.port}")
        assert fcm.post("/service-accounts", {"client_email": credentials.service_account["client_email"],
                                              "project_id": credentials.project_id,
                                              "public_key_pem": credentials.fcm_public_pem}).status_code == 200

        async def main() -> list[int]:
            access = await FcmAuth(service_account_info=credentials.service_account, ca_file=str(fcm.ca_file),
                                   outbound=OutboundPolicy.for_urls([credentials.service_account["token_uri"]])).token()
            connections = await fcm.connections(CONNECTIONS)
            spread(fcm, connections)
            headers = [("authorization", f"Bearer {access}"), ("content-type", "application/json")]
            body = orjson.dumps({"message": {"token": "fcm-" + secrets.token_hex(8), "data": {"k": "v"}}})
            path = f"/v1/projects/{credentials.project_id}/messages:send"
            answers = await asyncio.gather(*(c.request("POST", path, headers, body, 10) for c in connections))
            for connection in connections:
                connection.close()
            return [a.status for a in answers]

        assert set(asyncio.run(main())) == {200}
        assert fcm.get("/stats")["access_tokens_issued"] == 1


def test_a_dead_tokens_410_timestamp_is_its_first_410_on_every_process(apns, credentials):
    device = token("dead")

    async def main() -> list[int]:
        connections = await apns.connections(CONNECTIONS)
        spread(apns, connections)
        path, headers = apns_headers(credentials, device)
        try:
            answers = []
            for connection in connections:
                answer = await connection.request("POST", path, headers, PAYLOAD, 10)
                assert answer.status == 410
                answers.append(orjson.loads(answer.body)["timestamp"])
                await asyncio.sleep(0.005)  # a later answer made "now" would carry a later time
            return answers
        finally:
            for connection in connections:
                connection.close()

    timestamps = asyncio.run(main())
    assert len(set(timestamps)) == 1
