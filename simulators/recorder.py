"""What one serving process of a simulator records and knows: its ledger, the last requests per token, its faults.

Every provider handler goes through a :class:`Recorder`: it admits a request
(counts the attempt; for behaviour tokens and under a quota, asks the hub),
counts a delivery once its 200 went out, and keeps the last requests of
recent tokens for ``/received`` (kept in the process that served them; the
control port gathers them from every process).
"""
from __future__ import annotations

import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable

import orjson

from simulators.ledger import Admission, LocalLedger, RemoteLedger
from simulators.server import Request

#: Tokens whose last requests are kept for ``/received``; the oldest are forgotten.
RECEIVED_TOKENS = 20_000
#: Requests kept per token for ``/received``.
RECEIVED_PER_TOKEN = 5


class RequestLog:
    """The last ``RECEIVED_PER_TOKEN`` requests of the last ``RECEIVED_TOKENS`` tokens.

    Requests are kept as they came and shaped only when read (``log[token]``:
    ``[{headers (without authorization), body (JSON, else text), status, at, …}]``),
    so keeping one costs the hot path next to nothing.
    """

    def __init__(self):
        self.kept: OrderedDict[str, deque] = OrderedDict()

    def add(self, token: str, request: Request, status: int, extra: dict) -> None:
        kept = self.kept.get(token)
        if kept is None:
            kept = self.kept[token] = deque(maxlen=RECEIVED_PER_TOKEN)
            if len(self.kept) > RECEIVED_TOKENS:
                self.kept.popitem(last=False)
        kept.append((request.headers, request.body, status, time.time(), extra))

    def __contains__(self, token: str) -> bool:
        return token in self.kept

    def __getitem__(self, token: str) -> list[dict]:
        return [_shaped(*entry) for entry in self.kept[token]]

    def get(self, token: str, default=()) -> list[dict]:
        return self[token] if token in self.kept else list(default)


def _shaped(headers: dict, body: bytes, status: int, at: float, extra: dict) -> dict:
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        parsed = body.decode("utf-8", "replace")
    return {"headers": {k: v for k, v in headers.items() if k != "authorization"}, "body": parsed, "status": status, "at": at, **extra}


class Recorder:
    """The counts, request log and fault switches of one serving process.

    Parameters:
      ledger: where counts go (default: a hub of this process's own).
    """

    def __init__(self, ledger: LocalLedger | RemoteLedger | None = None):
        self.ledger = ledger or LocalLedger()
        #: Answer 503 to everything until this ``time.monotonic()`` (system-wide on Linux, so the same in every process).
        self.unavailable_until = 0.0
        #: Whether a quota is set (the hub holds its buckets).
        self.quota_on = False
        self.reset()

    def reset(self) -> None:
        self.received = RequestLog()
        #: Requests this process admitted, and 429s it answered.
        self.attempts_total = 0
        self.throttled_total = 0
        self.unavailable_until = 0.0
        self.ledger.drop()

    def admit(self, token: str, *, numbered: bool = False, quota_key: str | None = None) -> Admission | Awaitable[Admission]:
        """Count an attempt for ``token``; answer (its global number if ``numbered``, the quota's Retry-After or None).

        An awaitable when the hub is another process's and it must be asked.
        """
        self.attempts_total += 1
        return self.ledger.admit(token, numbered=numbered, quota_key=quota_key if self.quota_on else None)

    def deliverer(self, token: str, collapse_id: str | None = None) -> Callable[[], None]:
        """What runs once the 200 went out: count the delivery (and what the device shows)."""
        deliver = self.ledger.deliver
        return lambda: deliver(token, collapse_id)

    def invalid_since(self, token: str) -> int | Awaitable[int]:
        """When a dead token stopped being valid (ms), the same whichever process answers; an awaitable when asked of the hub."""
        return self.ledger.invalid_since(token)

    def keep(self, token: str, request: Request, status: int, **extra) -> None:
        """Keep the request for ``/received`` (without its ``authorization``); ``extra`` adds what the simulator saw."""
        if status == 429:
            self.throttled_total += 1
        self.received.add(token, request, status, extra)

    def unavailable(self) -> bool:
        return self.unavailable_until and time.monotonic() < self.unavailable_until
