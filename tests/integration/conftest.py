"""The real stack for integration tests: RabbitMQ (the machine's), nx-27017, simulators, workers, API.

One stack per test session, on free ports, with a unique queue prefix so
parallel runs on one broker never share a queue; its queues are deleted at
the end.
"""
from __future__ import annotations

import secrets
import socket
import uuid

import pytest
import requests

from devstack.credentials import SimulatorControls, provision_app
from shared.sealed_credentials import new_key_entry
from tests.stacks import running_stack

#: How many loopback ports the tests' own HTTP receivers (webhook targets) may take.
RECEIVER_PORT_COUNT = 8


def _reserve_ports(count: int) -> list[socket.socket]:
    """Bound sockets holding free loopback ports until a receiver takes one (so no other process takes it first)."""
    held = []
    for _ in range(count):
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        held.append(sock)
    return held


_RESERVED = _reserve_ports(RECEIVER_PORT_COUNT)
#: The receivers' ports: besides the FCM simulator, the only loopback targets outbound requests may reach.
RECEIVER_PORTS = tuple(sock.getsockname()[1] for sock in _RESERVED)


def take_receiver_port() -> int:
    """A port of :data:`RECEIVER_PORTS` for a receiver to listen on (or to leave closed: an allowed, refusing target)."""
    sock = _RESERVED.pop()
    port = sock.getsockname()[1]
    sock.close()
    return port


#: Settings that make crash recovery quick enough for a test.
TEST_SETTINGS = {
    "PUSH_DELIVERY_LEASE_SECONDS": "4",
    "PUSH_API_SYNC_WAIT_SECONDS": "60",
    # Small batches, so a test campaign of a few hundred users crosses several (and resumes mid-way).
    "PUSH_CAMPAIGN_USERS_PER_BATCH": "100",
    # Provider credentials sealed, as in production (shared/sealed_credentials.py).
    "PUSH_CREDENTIAL_KEYS": new_key_entry(),
    # Outbound requests (bridge webhooks) as in production (public addresses only), plus the tests' receivers.
    "PUSH_OUTBOUND_ALLOWED_TARGETS": ",".join(f"{host}:{port}" for port in RECEIVER_PORTS for host in ("127.0.0.1", "localhost")),
}


@pytest.fixture(scope="session")
def stack(tmp_path_factory):
    with running_stack(tmp_path_factory.mktemp("var"), "test", TEST_SETTINGS) as stack:
        yield stack


class Api:
    """A small client of the stack's API."""

    def __init__(self, base_url: str):
        self.base_url = base_url
        self.session = requests.Session()

    def post(self, path: str, request_object=None, *, raw=None, method: str = "POST", timeout: float = 120):
        body = raw if raw is not None else ({"requestObject": request_object} if request_object is not None else None)
        return self.session.request(method, self.base_url + path, json=body, timeout=timeout)

    def get(self, path: str, **params):
        return self.session.get(self.base_url + path, params=params, timeout=60)

    def ok(self, path: str, request_object=None, **kwargs) -> dict:
        answer = self.post(path, request_object, **kwargs)
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["status"] == "OK", body
        return body


class Simulator:
    """The control endpoint of one simulator."""

    def __init__(self, base_url: str):
        self.base_url = base_url

    def counts(self, token: str) -> dict:
        return requests.get(f"{self.base_url}/counts/{token}", timeout=10).json()

    def delivered(self, token: str) -> int:
        return self.counts(token)["delivered"]

    def all_counts(self) -> dict:
        return requests.get(f"{self.base_url}/counts", timeout=30).json()

    def received(self, token: str) -> list:
        return requests.get(f"{self.base_url}/received/{token}", timeout=10).json()


@pytest.fixture(scope="session")
def api(stack) -> Api:
    return Api(stack.api_url)


@pytest.fixture(scope="session")
def apns_sim(stack) -> Simulator:
    return Simulator(f"http://127.0.0.1:{stack.ports.apns_control}")


@pytest.fixture(scope="session")
def fcm_sim(stack) -> Simulator:
    return Simulator(f"http://127.0.0.1:{stack.ports.fcm_control}")


@pytest.fixture(scope="session")
def hms_sim(stack) -> Simulator:
    return Simulator(f"http://127.0.0.1:{stack.ports.hms_control}")


@pytest.fixture
def new_app(stack, apns_sim, fcm_sim, hms_sim):
    """Create an app with working credentials for the three simulators (APNs, FCM, HMS); answers its id."""

    def make(app_id: str | None = None, **options) -> str:
        app_id = app_id or f"app-{uuid.uuid4().hex[:8]}"
        controls = SimulatorControls(stack.ports.fcm, apns_sim.base_url, fcm_sim.base_url, hms_sim.base_url)
        provision_app(stack.api_url, app_id, controls, **options)
        return app_id

    return make


def apns_token(prefix: str = "") -> str:
    """A 64-hex APNs token; the simulator's behaviour is chosen by ``prefix``."""
    # Without a prefix, start with "0": no behaviour prefix of the simulator starts so.
    return ((prefix or "0") + secrets.token_hex(32))[:64]


def fcm_token(prefix: str = "") -> str:
    return prefix + secrets.token_urlsafe(40)


def hms_token(prefix: str = "") -> str:
    """An HMS push token; the simulator's behaviour is chosen by ``prefix`` (dead…, flowN-, internalN-, delayN-)."""
    return prefix + "0" + secrets.token_hex(30)


def register(api: Api, app_id: str, token: str, platform: str, user_id: str, activation_id: str | None = None) -> None:
    request_object = {"appId": app_id, "token": token, "platform": platform, "userId": user_id}
    if activation_id:
        request_object["activationId"] = activation_id
    api.ok("/push/device/create", request_object)
