"""Simulators as separate processes on free ports, and clients of them: the project's own HTTP/2 connections."""
from __future__ import annotations

import os
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import jwt
import pytest
import requests

from devstack.credentials import make_credentials
from devstack.stack import ROOT, free_port
from workers.delivery.http2 import Http2Connection

#: Seconds a simulator may take to say "ready".
READY_SECONDS = 30
#: Connections a test opens at most to reach every serving process.
MAX_CONNECTIONS = 64


@dataclass
class Simulator:
    """A running simulator: its provider port, control URL and CA file."""

    port: int
    control: str
    ca_file: Path
    process: subprocess.Popen

    def get(self, path: str):
        answer = requests.get(self.control + path, timeout=30)
        answer.raise_for_status()
        return answer.json()

    def post(self, path: str, body=None) -> requests.Response:
        return requests.post(self.control + path, json=body, timeout=30)

    def context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.ca_file))
        context.set_alpn_protocols(["h2"])
        return context

    async def connections(self, count: int) -> list[Http2Connection]:
        """``count`` HTTP/2 connections of the delivery workers' own kind (SO_REUSEPORT spreads them over the processes).

        Asked for several, with several processes, more are opened (up to ``MAX_CONNECTIONS``) while they all sit on one
        (the kernel picks by address hash), so a test across processes never depends on the draw.
        """
        opened = [await Http2Connection.open("127.0.0.1", self.port, self.context()) for _ in range(count)]
        while count > 1 and len(self.get("/stats")["processes"]) > 1 and len(_busy(self)) < 2 and len(opened) < MAX_CONNECTIONS:
            opened.append(await Http2Connection.open("127.0.0.1", self.port, self.context()))
        return opened


@contextmanager
def running(module: str, cert_dir: Path, *options: str) -> Iterator[Simulator]:
    port, control = free_port(), free_port()
    argv = [sys.executable, "-m", f"simulators.{module}", "--port", str(port), "--control-port", str(control),
            "--cert-dir", str(cert_dir), *options]
    process = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, start_new_session=True,
                               env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        deadline = time.monotonic() + READY_SECONDS
        for line in process.stdout:
            if b"ready" in line or time.monotonic() > deadline:
                break
        assert process.poll() is None, f"{module} simulator exited with {process.returncode}"
        yield Simulator(port, f"http://127.0.0.1:{control}", cert_dir / "ca.pem", process)
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(10)


@pytest.fixture(scope="module")
def credentials():
    return make_credentials("simtest", fcm_origin="https://127.0.0.1:1", key_id="SIMTEST001")


def register_key(simulator: Simulator, credentials) -> None:
    answer = simulator.post("/keys", {"key_id": credentials.key_id, "team_id": credentials.team_id,
                                      "public_key_pem": credentials.apns_public_pem})
    assert answer.status_code == 200, answer.text


def provider_token(credentials) -> str:
    return jwt.encode({"iss": credentials.team_id, "iat": int(time.time())}, credentials.apns_key_pem, algorithm="ES256",
                      headers={"kid": credentials.key_id})


def apns_headers(credentials, token: str, **extra: str) -> tuple[str, list[tuple[str, str]]]:
    headers = [("authorization", f"bearer {provider_token(credentials)}"), ("apns-topic", credentials.bundle),
               ("apns-push-type", "alert"), *extra.items()]
    return f"/3/device/{token}", headers


def _busy(simulator: Simulator) -> list[dict]:
    return [p for p in simulator.get("/stats")["processes"] if p["connections"]]


def spread(simulator: Simulator, connections: list) -> None:
    """Assert the connections reached more than one serving process (else the test proves nothing)."""
    busy = _busy(simulator)
    assert len(busy) > 1, f"every connection landed on one process: {busy}"
