"""The throttled figure (issue 15): workers learn an FCM quota below the app's budget from the provider's 429s.

An app whose FCM budget is set above the quota the FCM simulator enforces
(``quota_per_second``: it answers 429 RESOURCE_EXHAUSTED with ``Retry-After`` above
it, as FCM does) sends to FCM devices from both deliver worker processes. Printed:

- ``throttled_429_total``: 429s the simulator answered during the run;
- ``throttled_429_percent_of_sends``: of the notifications sent (target < 1 %);
- ``throttled_settled_per_s``: the FCM delivery rate over the run's second half, and
  ``ratio_throttled_settled_to_quota`` (target within 5 % of 1).

Only the current tree runs it: the code before issue 15 has no shared budget.
"""
from __future__ import annotations

import time
import uuid

import requests

from bench.delivered import POLL_SECONDS, STALL_SECONDS, Stalled
from bench.harness import create_app, seed_devices
from bench.pipeline import post_batches
from devstack.stack import Stack

#: The quota the simulator enforces (per second) and the app's configured budget (per minute: twice the quota).
QUOTA_PER_SECOND = 1_000
BUDGET_PER_MINUTE = 2 * QUOTA_PER_SECOND * 60


def _fcm_stats(stack: Stack) -> dict:
    return requests.get(f"http://127.0.0.1:{stack.ports.fcm_control}/stats", timeout=30).json()


def measure_throttle(stack: Stack, *, notifications: int) -> dict:
    app_id = create_app(stack, f"bench-throttle-{uuid.uuid4().hex[:6]}")
    requests.post(f"{stack.api_url}/admin/app/budget", timeout=30,
                  json={"requestObject": {"appId": app_id, "platform": "fcm", "perMinute": BUDGET_PER_MINUTE}}).raise_for_status()
    users = [f"bt-{i}-{uuid.uuid4().hex[:6]}" for i in range(notifications)]
    seed_devices(stack, app_id, users, [f"fcm-{uuid.uuid4().hex}{i}" for i in range(notifications)], ["fcm"] * notifications)
    control = f"http://127.0.0.1:{stack.ports.fcm_control}"
    requests.post(control + "/settings", json={"quota_per_second": QUOTA_PER_SECOND}, timeout=30).raise_for_status()
    try:
        before = _fcm_stats(stack)
        post_batches(stack, app_id, users)
        samples = []  # (monotonic time, delivered since the start)
        deadline = time.monotonic() + 4 * notifications / QUOTA_PER_SECOND + 60
        while time.monotonic() < deadline:
            stats = _fcm_stats(stack)
            delivered = stats["delivered_total"] - before["delivered_total"]
            samples.append((time.monotonic(), delivered))
            if delivered >= notifications:
                break
            if len(samples) > 1 and delivered == samples[0][1] and samples[-1][0] - samples[0][0] > STALL_SECONDS:
                raise Stalled(f"throttle: nothing delivered in {STALL_SECONDS:.0f} s (see {stack.var_dir}/logs)")
            time.sleep(POLL_SECONDS * 5)
        throttled = _fcm_stats(stack)["throttled_total"] - before["throttled_total"]
    finally:
        requests.post(control + "/settings", json={"quota_per_second": None}, timeout=30).raise_for_status()
    half = [s for s in samples if s[1] >= notifications / 2 and s[1] < notifications] or samples[-2:]
    settled = (half[-1][1] - half[0][1]) / (half[-1][0] - half[0][0]) if len(half) > 1 and half[-1][0] > half[0][0] else None
    return {
        "throttled_429_total": throttled,
        "throttled_429_percent_of_sends": 100.0 * throttled / notifications,
        "throttled_settled_per_s": settled,
        "throttled_quota_per_s": QUOTA_PER_SECOND,
        "ratio_throttled_settled_to_quota": settled / QUOTA_PER_SECOND if settled else None,
    }
