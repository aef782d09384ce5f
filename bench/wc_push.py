"""WalletConnect push server API: deduplicated sends per second, half of them repeats.

Every notification id is sent twice to its client (the order shuffled, from
concurrent senders), so half the requests are repeats. Figures:

- ``dedupe_sends_per_s``: requests answered per second (202 first sends and 200 repeats together);
- ``dedupe_repeats_delivered``: share of the repeats that reached a simulator (must be 0).

Runnable alone: ``python -m bench.wc_push [--clients N] [--ids N]``.
"""
from __future__ import annotations

import argparse
import io
import json
import random
import secrets
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import requests

from api.app import create_app as create_api
from bench.harness import bench_stack
from devstack.credentials import make_credentials, register_with_simulators
from devstack.stack import Stack
from shared.settings import load

#: Concurrent senders (threads, each with its own HTTP session).
SENDERS = 20
#: Seconds to wait for every first send to reach the simulators.
DELIVERY_TIMEOUT_SECONDS = 300
#: Seconds to keep looking for extra (duplicate) deliveries after the expected ones arrived.
SETTLE_SECONDS = 2.0
PAYLOAD = {"topic": "bench-topic", "flags": 1 | 16, "blob": "ZW5jcnlwdGVkIGJlbmNo"}


def create_tenant(stack: Stack, tenant_id: str) -> None:
    """Create a tenant with simulator credentials through an in-process API that has an admin token."""
    admin_token = secrets.token_hex(16)
    admin = create_api(load(stack.settings_env(), wc_push_admin_token=admin_token)).test_client()
    headers = {"Authorization": f"Bearer {admin_token}"}
    credentials = make_credentials(tenant_id, fcm_origin=f"https://127.0.0.1:{stack.ports.fcm}", key_id=f"B{secrets.token_hex(4)}".upper())
    register_with_simulators(
        credentials,
        apns_control=f"http://127.0.0.1:{stack.ports.apns_control}",
        fcm_control=f"http://127.0.0.1:{stack.ports.fcm_control}",
    )
    for path, data in (
        ("/tenants", None),
        (
            f"/tenants/{tenant_id}/apns",
            {
                "apns_topic": credentials.bundle,
                "apns_key_id": credentials.key_id,
                "apns_team_id": credentials.team_id,
                "apns_pkcs8_pem": (io.BytesIO(credentials.apns_key_pem.encode()), "AuthKey.p8"),
            },
        ),
        (f"/tenants/{tenant_id}/fcm_v1", {"credentials": (io.BytesIO(json.dumps(credentials.service_account).encode()), "sa.json")}),
    ):
        if data is None:
            answer = admin.post(path, json={"id": tenant_id}, headers=headers)
        else:
            answer = admin.post(path, data=data, headers=headers, content_type="multipart/form-data")
        if answer.status_code != 200:
            raise RuntimeError(f"{path} answered {answer.status_code}: {answer.get_data(as_text=True)}")


def register_clients(stack: Stack, tenant_id: str, count: int) -> list[tuple[str, str, str]]:
    """(client id, token, platform) of ``count`` clients, half APNs, half FCM."""
    clients = []
    for i in range(count):
        if i % 2 == 0:
            clients.append((f"bench-{uuid.uuid4().hex[:12]}", secrets.token_hex(32), "apns"))
        else:
            clients.append((f"bench-{uuid.uuid4().hex[:12]}", f"bench-{secrets.token_urlsafe(30)}", "fcm"))
    local = threading.local()

    def register(client: tuple[str, str, str]) -> None:
        session = getattr(local, "session", None) or requests.Session()
        local.session = session
        client_id, token, platform = client
        answer = session.post(f"{stack.api_url}/{tenant_id}/clients", json={"client_id": client_id, "type": platform, "token": token}, timeout=60)
        answer.raise_for_status()

    with ThreadPoolExecutor(SENDERS) as pool:
        list(pool.map(register, clients))
    return clients


def delivered_counts(stack: Stack) -> dict[str, int]:
    counts: dict[str, int] = {}
    for port in (stack.ports.apns_control, stack.ports.fcm_control):
        counts.update(requests.get(f"http://127.0.0.1:{port}/counts", timeout=60).json()["delivered"])
    return counts


def measure_dedupe(stack: Stack, *, clients: int = 100, ids_per_client: int = 20, senders: int = SENDERS) -> dict:
    """Send every (client, id) twice in shuffled order from ``senders`` threads; answer rate and repeats delivered."""
    tenant_id = f"bench-{uuid.uuid4().hex[:8]}"
    create_tenant(stack, tenant_id)
    targets = register_clients(stack, tenant_id, clients)
    work = [(client_id, f"n-{uuid.uuid4().hex}") for client_id, _, _ in targets for _ in range(ids_per_client)]
    requests_to_send = work * 2
    random.Random(7).shuffle(requests_to_send)
    parts = [requests_to_send[i::senders] for i in range(senders)]
    statuses: Counter = Counter()
    lock = threading.Lock()

    def send(part: list[tuple[str, str]]) -> None:
        session = requests.Session()
        mine: Counter = Counter()
        for client_id, notification_id in part:
            answer = session.post(
                f"{stack.api_url}/{tenant_id}/clients/{client_id}", json={"id": notification_id, "payload": PAYLOAD}, timeout=120
            )
            mine[answer.status_code] += 1
        with lock:
            statuses.update(mine)

    start = time.perf_counter()
    with ThreadPoolExecutor(senders) as pool:
        list(pool.map(send, parts))
    elapsed = time.perf_counter() - start

    expected = {token: ids_per_client for _, token, _ in targets}
    deadline = time.monotonic() + DELIVERY_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        counts = delivered_counts(stack)
        if all(counts.get(token, 0) >= n for token, n in expected.items()):
            break
        time.sleep(0.5)
    time.sleep(SETTLE_SECONDS)
    counts = delivered_counts(stack)
    extra = sum(max(0, counts.get(token, 0) - n) for token, n in expected.items())
    missing = sum(max(0, n - counts.get(token, 0)) for token, n in expected.items())
    return {
        "dedupe_sends_per_s": len(requests_to_send) / elapsed,
        "dedupe_repeats_delivered": extra / len(work),
        "dedupe_first_sends_missing": missing,
        "dedupe_answers_202": statuses[202],
        "dedupe_answers_200": statuses[200],
        "dedupe_answers_other": sum(n for status, n in statuses.items() if status not in (200, 202)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--ids", type=int, default=20, help="notification ids per client (each sent twice)")
    args = parser.parse_args()
    stack = bench_stack()
    try:
        stack.start()
        for name, value in measure_dedupe(stack, clients=args.clients, ids_per_client=args.ids).items():
            print(f"{name}: {value:.3f}" if isinstance(value, float) else f"{name}: {value}", flush=True)
    finally:
        stack.stop_all()


if __name__ == "__main__":
    main()
