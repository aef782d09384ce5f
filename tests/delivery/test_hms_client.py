"""HmsAuth and HmsClient against the real HMS simulator (its processes, TLS, token endpoint and result codes)."""
from __future__ import annotations

import asyncio
import secrets
import ssl
import time

import pytest

from devstack.credentials import make_hms_credentials, register_with_hms_simulator
from shared.outbound import OutboundPolicy
from shared.payload import Body, HmsTemplate, hms_message
from tests.simulators.conftest import running
from workers.delivery.hms import HmsAuth, HmsClient
from workers.delivery.outcomes import Outcome, classify_hms


@pytest.fixture(scope="module")
def hms(tmp_path_factory):
    with running("hms", tmp_path_factory.mktemp("certs"), "--processes", "2") as simulator:
        yield simulator


@pytest.fixture(scope="module")
def app(hms):
    credentials = make_hms_credentials("hmsclient")
    register_with_hms_simulator(credentials, hms_control=hms.control)
    return credentials


def token_url(hms) -> str:
    return f"https://127.0.0.1:{hms.port}/oauth2/v3/token"


def client(hms, app, *, secret: str | None = None, outbound: OutboundPolicy | None = None) -> HmsClient:
    auth = HmsAuth(token_url=token_url(hms), client_id=app.client_id, client_secret=secret or app.client_secret,
                   outbound=outbound or OutboundPolicy.for_urls([token_url(hms)]), ca_file=str(hms.ca_file))
    context = ssl.create_default_context(cafile=str(hms.ca_file))
    context.set_alpn_protocols(["h2"])
    return HmsClient(origin=f"https://127.0.0.1:{hms.port}", project_id=app.project_id, auth=auth, ssl_context=context)


def body(token: str) -> bytes:
    return HmsTemplate(hms_message(Body(title="t"), silent=False, high_priority=True, display="m.0"), ttl_seconds=60).request_body(token)


def device() -> str:
    return "0" + secrets.token_hex(30)


def issued(hms) -> int:
    return hms.get("/stats")["access_tokens_issued"]


def run(coroutine_function):
    return asyncio.run(coroutine_function())


def test_the_token_is_fetched_once_and_reused(hms, app):
    before = issued(hms)

    async def main():
        sender = client(hms, app)
        answers = [await sender.send(body(token), token) for token in (device(), device(), device())]
        await sender.close()
        return sender, answers

    sender, answers = run(main)
    assert [classify_hms(a) for a in answers] == [Outcome.SENT] * 3
    assert all(a.provider_id for a in answers)  # HMS's requestId
    assert sender.auth.refreshes == 1 and issued(hms) == before + 1


def test_an_expired_token_is_refreshed_once_and_the_send_goes_through(hms, app):
    async def main():
        sender = client(hms, app)
        first = device()
        assert classify_hms(await sender.send(body(first), first)) is Outcome.SENT
        # The simulator now holds the client's cached token as expired (80200003), as HMS does after its hour.
        expired = hms.post("/_access-tokens", {"token": sender.auth._token, "project_id": app.project_id, "expires_at": time.time() - 1})
        assert expired.status_code == 200
        second = device()
        answer = await sender.send(body(second), second)
        await sender.close()
        return sender, second, answer

    sender, second, answer = run(main)
    assert classify_hms(answer) is Outcome.SENT
    assert sender.auth.refreshes == 2
    assert hms.get(f"/counts/{second}") == {"delivered": 1, "attempts": 2, "shown": 1}  # 80200003, then delivered


def test_a_refused_client_secret_is_a_credentials_outcome(hms, app):
    async def main():
        sender = client(hms, app, secret="wrong")
        token = device()
        answer = await sender.send(body(token), token)
        await sender.close()
        return token, answer

    token, answer = run(main)
    assert classify_hms(answer) is Outcome.CREDENTIALS
    assert "invalid client_secret" in answer.reason
    assert hms.get(f"/counts/{token}")["attempts"] == 0  # nothing sent without a token


def test_a_token_endpoint_the_outbound_policy_refuses_is_never_requested(hms, app):
    before = issued(hms)

    async def main():
        sender = client(hms, app, outbound=OutboundPolicy.for_urls(["https://127.0.0.1:1/"]))
        token = device()
        answer = await sender.send(body(token), token)
        await sender.close()
        return answer

    answer = run(main)
    assert classify_hms(answer) is Outcome.CREDENTIALS and "not allowed" in answer.reason
    assert issued(hms) == before


def test_result_codes_reach_the_table(hms, app):
    async def main():
        sender = client(hms, app)
        answers = {}
        for name, token in (("dead", "dead" + device()), ("flow", "flow1-" + device()), ("internal", "internal1-" + device())):
            answers[name] = await sender.send(body(token), token)
        await sender.close()
        return answers

    answers = run(main)
    assert classify_hms(answers["dead"]) is Outcome.DEAD_TOKEN and answers["dead"].code == "80300007"
    assert classify_hms(answers["flow"]) is Outcome.THROTTLED and answers["flow"].status == 503
    assert classify_hms(answers["internal"]) is Outcome.TRANSIENT and answers["internal"].code == "81000001"
