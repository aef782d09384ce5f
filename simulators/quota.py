"""A provider's quota: at most N requests per period per key (an FCM project, an HMS app, an APNs topic).

A token bucket per key holding one period's quota: a burst of up to N is
taken at once, and from then on requests are let through at N per period.
Above that the simulator answers as the provider does when its quota is
exhausted (FCM: 429 RESOURCE_EXHAUSTED / QUOTA_EXCEEDED with ``Retry-After``),
with the whole seconds until the bucket holds a request again. One bucket per
key for all the simulator's processes: it lives with the tally (simulators/ledger.py).
"""
from __future__ import annotations

import math
import time

#: Shortest ``Retry-After`` answered, in seconds (HTTP's unit is the whole second).
MIN_RETRY_AFTER_SECONDS = 1


class Quota:
    """Requests allowed per key.

    Parameters:
      limit: requests per period per key; None lets everything through.
      period_seconds: the period ``limit`` is counted over (1 or 60).
    """

    def __init__(self, *, limit: int | None = None, period_seconds: float = 60.0):
        self.configure(limit=limit, period_seconds=period_seconds)

    def configure(self, *, limit: int | None, period_seconds: float) -> None:
        if limit is not None and limit <= 0:
            raise ValueError("a quota must be a positive number of requests")
        self.limit = limit
        self.period_seconds = period_seconds
        self.reset()

    def reset(self) -> None:
        self.buckets: dict[str, tuple[float, float]] = {}  # key -> (requests left, at monotonic time)
        self.refused = 0

    def setting(self) -> dict:
        if self.limit is None:
            return {"quota_per_second": None, "quota_per_minute": None}
        if self.period_seconds == 1:
            return {"quota_per_second": self.limit, "quota_per_minute": None}
        return {"quota_per_second": None, "quota_per_minute": self.limit}

    def take(self, key: str, *, now: float | None = None) -> int | None:
        """Take one request for ``key``: None if allowed, else the ``Retry-After`` seconds."""
        if self.limit is None:
            return None
        now = time.monotonic() if now is None else now
        rate = self.limit / self.period_seconds
        left, at = self.buckets.get(key, (float(self.limit), now))
        left = min(float(self.limit), left + (now - at) * rate)
        if left >= 1:
            self.buckets[key] = (left - 1, now)
            return None
        self.buckets[key] = (left, now)
        self.refused += 1
        return max(MIN_RETRY_AFTER_SECONDS, math.ceil((1 - left) / rate))
