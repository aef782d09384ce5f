"""One real stack for the fault tests, whose API and workers reach RabbitMQ through a TCP proxy.

RabbitMQ is the machine's service and others use it, so "RabbitMQ down" is the
proxy cut: to the API and the workers that is exactly a broker gone away.
The stack has its own var dir, ports and queue prefix; its queues are deleted
at the end.
"""
from __future__ import annotations

import pytest

from shared.sealed_credentials import new_key_entry
from shared.settings import load
from tests.faults.harness import FaultRun
from tests.integration.tcp_proxy import TcpProxy
from tests.stacks import running_stack

#: Crash recovery quick enough for a test (the lease decides when a killed worker's claims are retried).
FAULT_SETTINGS = {
    # Provider credentials sealed, as in production (shared/sealed_credentials.py).
    "PUSH_CREDENTIAL_KEYS": new_key_entry(),
    "PUSH_DELIVERY_LEASE_SECONDS": "4",
    "PUSH_API_SYNC_WAIT_SECONDS": "60",
    # A 30 s provider outage must not run into the re-enqueue backoff's longer waits.
    "PUSH_DELIVERY_MAX_BACKOFF": "5",
    # Faults, not auth, are tested here (tests/integration/test_auth_limits.py tries to get past auth).
    "PUSH_AUTH_ENABLED": "false",
}


@pytest.fixture(scope="session")
def broker_proxy():
    amqp_url = load().amqp_url
    port = int(amqp_url.rsplit(":", 1)[1].split("/")[0])
    proxy = TcpProxy(("127.0.0.1", port))
    proxy.start()
    yield proxy
    proxy.cut()


@pytest.fixture(scope="session")
def stack(tmp_path_factory, broker_proxy):
    env = dict(FAULT_SETTINGS, PUSH_AMQP_URL=f"amqp://guest:guest@127.0.0.1:{broker_proxy.port}/%2F")
    with running_stack(tmp_path_factory.mktemp("faults-var"), "faults", env) as stack:
        yield stack


@pytest.fixture
def run(stack, request):
    """A fresh app with its own 20,000 devices, and the means to send to them and count."""
    return FaultRun(stack, name=request.node.name)
