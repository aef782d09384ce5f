"""Where a serving process's counts go, and what it asks before answering: one process, or several.

:class:`Hub` holds what is global to a simulator: the :class:`~simulators.tally.Tally`
and the :class:`~simulators.quota.Quota`. A process that serves the provider
port reaches it through a ledger: :class:`LocalLedger` when the hub is in the
same process (one process, or the in-process servers of the tests),
:class:`RemoteLedger` when it is the coordinator's (``--processes N``).

The remote ledger keeps the hot path local: attempts and deliveries are
buffered and sent in batches (every ``FLUSH_SECONDS``, and whenever the
coordinator asks before it answers a read), so an ordinary request costs no
round trip. Only two things are asked at request time, in one round trip:
the global attempt number of a token whose behaviour depends on it
(``f503N…``: the N-th attempt of the token on any process) and the quota.
"""
from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable

from simulators.channel import Channel
from simulators.quota import Quota
from simulators.tally import Tally

#: Seconds a remote ledger keeps counts before sending them to the coordinator.
FLUSH_SECONDS = 0.05
#: Counts a remote ledger keeps at most before it sends them anyway.
FLUSH_EVENTS = 2_000

#: What an admission answers: the token's attempt number (0 when not asked for) and the quota's Retry-After (None: allowed).
Admission = tuple[int, int | None]


class Hub:
    """The tally and the quota of one simulator, for all its processes.

    Parameters:
      quota: the per-key quota (none by default).
    """

    def __init__(self, *, quota: Quota | None = None):
        self.tally = Tally()
        self.quota = quota or Quota()

    def admit(self, token: str, *, numbered: bool, quota_key: str | None) -> Admission:
        attempt = self.tally.attempt(token) if numbered else 0
        retry_after = self.quota.take(quota_key) if quota_key is not None else None
        return attempt, retry_after

    def invalid_since(self, token: str) -> int:
        return self.tally.invalidated(token)

    def reset(self) -> None:
        self.tally.reset()
        self.quota.reset()


class LocalLedger:
    """A ledger whose hub is in this process."""

    def __init__(self, hub: Hub | None = None):
        self.hub = hub or Hub()

    def admit(self, token: str, *, numbered: bool, quota_key: str | None) -> Admission:
        if not numbered:
            self.hub.tally.attempt(token)
        return self.hub.admit(token, numbered=numbered, quota_key=quota_key)

    def deliver(self, token: str, collapse_id: str | None) -> None:
        self.hub.tally.deliver(token, collapse_id)

    def invalid_since(self, token: str) -> int:
        return self.hub.invalid_since(token)

    def flush(self) -> None:
        """Nothing waits: counts are the hub's at once."""

    def drop(self) -> None:
        """Nothing is held here."""

    async def replicate(self, request: dict) -> None:
        """Only this process holds state: nothing to copy."""


class RemoteLedger:
    """A ledger whose hub is the coordinator's, reached through ``channel``.

    Parameters:
      channel: the connection to the coordinator.
    """

    def __init__(self, channel: Channel):
        self.channel = channel
        self.attempts: list[str] = []
        self.delivered: list[tuple[str, str | None]] = []
        self.first_at: float | None = None
        self.last_at: float | None = None
        self.flush_timer: asyncio.TimerHandle | None = None

    def admit(self, token: str, *, numbered: bool, quota_key: str | None) -> Admission | Awaitable[Admission]:
        if not numbered:
            if self.first_at is None:
                self.first_at = time.time()
            self.attempts.append(token)
            self._note()
            if quota_key is None:
                return 0, None
        return self._ask(token, numbered, quota_key)

    async def _ask(self, token: str, numbered: bool, quota_key: str | None) -> Admission:
        attempt, retry_after = await self.channel.request({"op": "admit", "token": token, "numbered": numbered, "quota_key": quota_key})
        return attempt, retry_after

    async def invalid_since(self, token: str) -> int:
        """The token's first-410 time, held by the coordinator so every process answers the same."""
        return await self.channel.request({"op": "invalid_since", "token": token})

    def deliver(self, token: str, collapse_id: str | None) -> None:
        self.delivered.append((token, collapse_id))
        self.last_at = time.time()
        self._note()

    def _note(self) -> None:
        if len(self.attempts) + len(self.delivered) >= FLUSH_EVENTS:
            self.flush()
        elif self.flush_timer is None:
            self.flush_timer = asyncio.get_running_loop().call_later(FLUSH_SECONDS, self.flush)

    def flush(self) -> None:
        """Send what was counted since the last flush (the channel keeps the order)."""
        if self.flush_timer is not None:
            self.flush_timer.cancel()
            self.flush_timer = None
        if self.attempts or self.delivered:
            batch = {"attempts": self.attempts, "delivered": self.delivered, "first_at": self.first_at, "last_at": self.last_at}
            self.channel.send({"op": "counts", "batch": batch})
        self.attempts, self.delivered = [], []
        self.first_at = self.last_at = None

    def drop(self) -> None:
        """Forget what was not sent yet (a reset)."""
        self.attempts, self.delivered = [], []
        self.first_at = self.last_at = None

    async def replicate(self, request: dict) -> None:
        """Have every other process apply ``request`` (a control request) before this answers."""
        await self.channel.request({"op": "replicate", "request": request})
