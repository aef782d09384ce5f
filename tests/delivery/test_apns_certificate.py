"""APNs certificate auth: the delivery client against the real APNs simulator server (in-process, TLS on 127.0.0.1)."""
from __future__ import annotations

import asyncio
import os
import ssl
import tempfile

import orjson
import pytest
from cryptography.hazmat.primitives import serialization

from devstack.credentials import make_credentials
from simulators.apns import ApnsSimulator
from simulators.server import Request, serve
from simulators.tls import ensure_certificates, issue_client_certificate, server_context
from workers.delivery import apns as apns_module
from workers.delivery.apns import ApnsClient, ApnsRequest, ApnsTokenSigner, certificate_context
from workers.delivery.outcomes import Outcome, classify_apns

TOPIC = "com.example.certified"
PAYLOAD = b'{"aps":{"alert":"x"}}'


def pems(certificate, key) -> tuple[str, str]:
    return (
        certificate.public_bytes(serialization.Encoding.PEM).decode(),
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode(),
    )


async def _exchange(cert_dir, *, client_certificate, topic=TOPIC, token_key=None, max_tls=None, sends=1):
    """Start the simulator asking for client certificates; send from a client (token auth with
    ``token_key``: AppCredentials); answer (answers, simulator)."""
    ca, cert, key = ensure_certificates(cert_dir)
    simulator = ApnsSimulator()
    signer = None
    if token_key is not None:
        key_json = {"key_id": token_key.key_id, "team_id": token_key.team_id, "public_key_pem": token_key.apns_public_pem}
        simulator.add_key(Request("POST", "/keys", {}, orjson.dumps(key_json), http2=False))
        signer = ApnsTokenSigner(key_id=token_key.key_id, team_id=token_key.team_id, private_key_pem=token_key.apns_key_pem)
    server = await serve(simulator.handle, "127.0.0.1", 0, ssl_context=server_context(cert, key, client_ca=ca))
    port = server.sockets[0].getsockname()[1]
    if client_certificate is None:
        context = ssl.create_default_context(cafile=str(ca))
        context.set_alpn_protocols(["h2"])
    else:
        certificate_pem, key_pem = pems(*client_certificate)
        context = certificate_context(ca_file=str(ca), certificate_pem=certificate_pem, private_key_pem=key_pem)
    if max_tls is not None:
        context.maximum_version = max_tls
    client = ApnsClient(origin=f"https://127.0.0.1:{port}", signer=signer, topic=topic, ssl_context=context, connections=1)
    try:
        answers = [await client.send(ApnsRequest(token=f"0{i:063x}", payload=PAYLOAD)) for i in range(sends)]
    finally:
        await client.close()
        server.close()
    return answers, simulator


def exchange(tmp_path, **options):
    return asyncio.run(_exchange(tmp_path, **options))


def test_a_certificate_from_the_ca_authenticates_without_an_authorization_header(tmp_path):
    answers, simulator = exchange(tmp_path, client_certificate=issue_client_certificate(tmp_path, TOPIC), sends=3)
    assert [a.status for a in answers] == [200, 200, 200]
    seen = simulator.recorder.received[f"0{0:063x}"][-1]
    assert seen["auth"] == "certificate" and seen["certificate_topic"] == TOPIC
    assert seen["headers"]["apns-topic"] == TOPIC


def test_another_topic_than_the_certificates_is_topic_disallowed(tmp_path):
    answers, _ = exchange(tmp_path, client_certificate=issue_client_certificate(tmp_path, TOPIC), topic="com.example.other")
    assert (answers[0].status, answers[0].reason) == (400, "TopicDisallowed")
    assert classify_apns(answers[0]) is Outcome.BAD_MESSAGE


def test_neither_certificate_nor_token_is_missing_provider_token(tmp_path):
    answers, _ = exchange(tmp_path, client_certificate=None)
    assert (answers[0].status, answers[0].reason) == (403, "MissingProviderToken")


def test_the_token_path_still_works_beside_optional_client_certificates(tmp_path):
    credentials = make_credentials("tok", fcm_origin="https://127.0.0.1:1")
    answers, simulator = exchange(tmp_path, client_certificate=None, token_key=credentials)
    assert answers[0].status == 200
    assert simulator.recorder.received[f"0{0:063x}"][-1]["auth"] == "token"


@pytest.mark.parametrize("max_tls", [None, ssl.TLSVersion.TLSv1_2], ids=["tls1.3", "tls1.2"])
def test_a_certificate_the_ca_did_not_sign_is_refused_at_tls_as_credentials(tmp_path, max_tls):
    answers, simulator = exchange(tmp_path, client_certificate=issue_client_certificate(None, TOPIC), max_tls=max_tls, sends=3)
    assert all(a.status == 403 and a.reason.startswith("BadCertificate") and "UNKNOWN_CA" in a.reason for a in answers)
    assert classify_apns(answers[0]) is Outcome.CREDENTIALS
    assert simulator.recorder.attempts_total == 0  # refused before any request reached it


def test_the_credentials_file_is_private_and_removed_once_loaded(tmp_path, monkeypatch):
    made = []
    real_mkstemp = tempfile.mkstemp

    def mkstemp(*args, **kwargs):
        descriptor, path = real_mkstemp(*args, **kwargs)
        made.append((path, os.stat(path).st_mode & 0o777))
        return descriptor, path

    monkeypatch.setattr(apns_module.tempfile, "mkstemp", mkstemp)
    ca, _cert, _key = ensure_certificates(tmp_path)
    certificate_pem, key_pem = pems(*issue_client_certificate(tmp_path, TOPIC))
    certificate_context(ca_file=str(ca), certificate_pem=certificate_pem, private_key_pem=key_pem)
    assert len(made) == 1
    path, mode = made[0]
    assert mode == 0o600 and not os.path.exists(path)
