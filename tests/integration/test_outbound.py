"""Sending through the outbound check (shared/outbound.py) on real sockets: real HTTP and TLS servers on loopback.

The policy's resolver stands in for DNS (names map to 127.0.0.1 here); the
requests session, its connection pool, TLS and the servers are all real.
"""
from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests

from shared.outbound import OutboundPolicy, OutboundRefused, OutboundSession, parse_allow_list
from simulators.tls import ensure_certificates, server_context


class Counting(ThreadingHTTPServer):
    """An HTTP server on 127.0.0.1 recording every request (method, path, headers); ``redirect_to`` answers 302 there."""

    def __init__(self, redirect_to: str | None = None, redirect_status: int = 302):
        self.requests: list[tuple[str, str, dict]] = []
        self.redirect_to = redirect_to
        self.redirect_status = redirect_status
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's naming
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                server.requests.append(("POST", self.path, dict(self.headers)))
                self.send_response(server.redirect_status if server.redirect_to else 200)
                if server.redirect_to:
                    self.send_header("Location", server.redirect_to)
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_GET = do_POST  # noqa: N815 - http.server's naming

            def log_message(self, *args):
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def port(self) -> int:
        return self.server_address[1]


@contextmanager
def counting(**options) -> Iterator[Counting]:
    server = Counting(**options)
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def resolving_once(table: dict[str, str], calls: list[str]):
    def resolver(host: str, port: int) -> list[str]:
        calls.append(host)
        return [table[host]]

    return resolver


@pytest.fixture
def no_system_dns(monkeypatch):
    """Fail any system resolution of the test's names: the request must go to the address the policy checked."""
    real = socket.getaddrinfo

    def getaddrinfo(host, *args, **kwargs):
        if isinstance(host, str) and host.endswith(".test"):
            raise AssertionError(f"{host} resolved a second time, by the connection")
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


def test_the_request_goes_to_the_checked_address_with_the_urls_name_as_host(no_system_dns):
    calls: list[str] = []
    with counting() as server:
        policy = OutboundPolicy(allowed=parse_allow_list(f"hook.test:{server.port}"),
                                resolver=resolving_once({"hook.test": "127.0.0.1"}, calls))
        answer = OutboundSession(policy).post(f"http://hook.test:{server.port}/push", json={"a": 1}, timeout=10)
    assert answer.status_code == 200
    assert calls == ["hook.test"]  # resolved once, by the check
    [(method, path, headers)] = server.requests
    assert (method, path, headers["Host"]) == ("POST", "/push", f"hook.test:{server.port}")


def test_tls_verifies_the_urls_name_not_the_address_connected_to(tmp_path, no_system_dns):
    _, cert_file, key_file = ensure_certificates(tmp_path)
    ca_file = tmp_path / "ca.pem"
    server = Counting()
    server.socket = server_context(cert_file, key_file).wrap_socket(server.socket, server_side=True)
    try:
        # The certificate names fcm-simulator and 127.0.0.1, not other.test: verified on the IP, both would pass.
        table = {"fcm-simulator.test": "127.0.0.1", "other.test": "127.0.0.1"}
        policy = OutboundPolicy(allowed=parse_allow_list(f"fcm-simulator.test:{server.port},other.test:{server.port}"),
                                resolver=resolving_once(table, []))
        session = OutboundSession(policy)
        with pytest.raises(requests.exceptions.SSLError):
            session.get(f"https://other.test:{server.port}/token", verify=str(ca_file), timeout=10)
        assert server.requests == []
    finally:
        server.shutdown()
        server.server_close()


def test_sni_carries_the_urls_name(tmp_path, no_system_dns):
    _, cert_file, key_file = ensure_certificates(tmp_path)
    seen: list[str | None] = []
    context = server_context(cert_file, key_file)
    context.sni_callback = lambda sock, name, ctx: seen.append(name)
    server = Counting()
    server.socket = context.wrap_socket(server.socket, server_side=True)
    try:
        # fcm-simulator is a name of the simulators' certificate: the request succeeds only if it is what TLS checks.
        policy = OutboundPolicy(allowed=parse_allow_list(f"fcm-simulator:{server.port}"),
                                resolver=resolving_once({"fcm-simulator": "127.0.0.1"}, []))
        answer = OutboundSession(policy).get(f"https://fcm-simulator:{server.port}/token", verify=str(tmp_path / "ca.pem"), timeout=10)
    finally:
        server.shutdown()
        server.server_close()
    assert answer.status_code == 200 and seen == ["fcm-simulator"]


@pytest.mark.parametrize("status", [302, 307])
def test_a_redirect_is_answered_not_followed(status):
    with counting() as elsewhere, counting(redirect_to=f"http://127.0.0.1:{elsewhere.port}/stolen", redirect_status=status) as server:
        policy = OutboundPolicy(allowed=parse_allow_list(f"127.0.0.1:{server.port},127.0.0.1:{elsewhere.port}"))
        answer = OutboundSession(policy).post(f"http://127.0.0.1:{server.port}/push", json={}, timeout=10)
        assert answer.status_code == status
        assert len(server.requests) == 1 and elsewhere.requests == []


def test_userinfo_is_refused_before_anything_is_sent():
    with counting() as server:
        policy = OutboundPolicy(allowed=parse_allow_list(f"127.0.0.1:{server.port}"))
        with pytest.raises(OutboundRefused, match="user name"):
            OutboundSession(policy).post(f"http://admin:secret@127.0.0.1:{server.port}/", json={}, timeout=10)
        assert server.requests == []


def test_an_unlisted_loopback_target_is_refused_before_anything_is_sent():
    with counting() as server:
        for url in (f"http://127.0.0.1:{server.port}/", f"http://2130706433:{server.port}/", f"http://0x7f.1:{server.port}/",
                    f"http://127.1:{server.port}/", f"http://[::ffff:127.0.0.1]:{server.port}/"):
            with pytest.raises(OutboundRefused):
                OutboundSession(OutboundPolicy()).post(url, json={}, timeout=10)
        assert server.requests == []


def test_environment_proxies_are_not_used(monkeypatch):
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")  # nothing listens there: a used proxy fails the request
    with counting() as server:
        policy = OutboundPolicy(allowed=parse_allow_list(f"127.0.0.1:{server.port}"))
        answer = OutboundSession(policy).post(f"http://127.0.0.1:{server.port}/", json={}, timeout=10)
    assert answer.status_code == 200 and len(server.requests) == 1
