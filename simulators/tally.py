"""What a simulator counts per device token, for all its processes together: attempts, deliveries, what is shown.

A process counts locally and hands its counts here in batches (``apply``), so
the hot path is process-local; only what decides an answer at request time
(the attempt number of a behaviour token, the quota) is asked of the holder
of this tally. "Shown" models the device's notification centre: every
delivered push counts, except one whose collapse identifier the device
already presented (also when another process delivered that one).
"""
from __future__ import annotations

import time
from collections import defaultdict


class Tally:
    """Per-token ``attempts``, ``delivered`` and ``shown``, and their totals."""

    def __init__(self):
        self.reset()

    def reset(self) -> None:
        self.attempts: dict[str, int] = defaultdict(int)
        self.delivered: dict[str, int] = defaultdict(int)
        self.shown: dict[str, int] = defaultdict(int)
        #: Per token, the hash of the collapse identifier it presented (a set once there are several).
        self.presented: dict[str, int | set[int]] = {}
        self.attempts_total = 0
        self.delivered_total = 0
        self.shown_total = 0
        self.first_at: float | None = None
        self.last_delivered_at: float | None = None
        #: APNs: per dead token, when it was first answered 410 (ms): Apple's ``timestamp``, the same on every answer.
        self.invalid_since: dict[str, int] = {}

    def attempt(self, token: str, *, at: float | None = None) -> int:
        """Count an attempt; answer its number for this token (1 for the first)."""
        self.attempts_total += 1
        if self.first_at is None:
            self.first_at = at or time.time()
        self.attempts[token] += 1
        return self.attempts[token]

    def invalidated(self, token: str) -> int:
        """When ``token`` stopped being valid (ms): the time of its first 410, the same on every process's answer."""
        return self.invalid_since.setdefault(token, int(time.time() * 1000))

    def deliver(self, token: str, collapse_id: str | None, *, at: float | None = None) -> None:
        """Count a 200 that went out, and what the device shows of it."""
        self.delivered[token] += 1
        self.delivered_total += 1
        at = at or time.time()
        if self.last_delivered_at is None or at > self.last_delivered_at:
            self.last_delivered_at = at
        if collapse_id is None or self._first_presentation(token, hash(collapse_id)):
            self.shown[token] += 1
            self.shown_total += 1

    def apply(self, batch: dict) -> None:
        """Add a process's batch: ``{"attempts": [token…], "delivered": [[token, collapse id|None]…], "first_at", "last_at"}``."""
        first_at, last_at = batch.get("first_at"), batch.get("last_at")
        for token in batch.get("attempts", ()):
            self.attempt(token, at=first_at)
        for token, collapse_id in batch.get("delivered", ()):
            self.deliver(token, collapse_id, at=last_at)

    def _first_presentation(self, token: str, key: int) -> bool:
        presented = self.presented.get(token)
        if presented is None:
            self.presented[token] = key
            return True
        if isinstance(presented, int):
            if presented == key:
                return False
            self.presented[token] = {presented, key}
            return True
        if key in presented:
            return False
        presented.add(key)
        return True

    def counts(self) -> dict:
        return {"delivered": self.delivered, "attempts": self.attempts, "shown": self.shown}

    def counts_of(self, token: str) -> dict:
        return {"delivered": self.delivered.get(token, 0), "attempts": self.attempts.get(token, 0), "shown": self.shown.get(token, 0)}

    def stats(self) -> dict:
        return {
            "attempts_total": self.attempts_total,
            "delivered_total": self.delivered_total,
            "shown_total": self.shown_total,
            "tokens": len(self.attempts),
            "first_at": self.first_at,
            "last_delivered_at": self.last_delivered_at,
        }
