"""The order of writes: taken from MongoDB before the API acknowledges a write, so no host's clock can reorder it.

Workers apply writes to one entity (a device, an app's credentials, a session,
a client) in whatever order RabbitMQ and their threads give them, and keep the
one with the highest order (last writer wins). That order used to be the API
host's wall clock (``received_at``): an API host 120 s behind answered 200 to a
device delete that then lost to the registration it followed.

The order is now a number from one counter document in MongoDB. Each write
command's ``order`` is claimed with one atomic ``$max``: the counter moves to
the candidate only if it is higher than every order claimed before, else the
write retries with the counter's value plus one. So an order is strictly
greater than every order claimed before it, by any API process, and a write
whose request began after another's answer (which was given after its order
was claimed) always has the higher order. Comparisons across entities (an
activation taken off older registrations, read-all marking the messages posted
before it, a token's newest owner) hold for the same reason: one counter.

The candidate is the API host's ``time.time_ns()``, so orders stay close to
nanoseconds since the epoch (a host whose clock is ahead moves the counter
ahead; the others then count up from there). That keeps them comparable with
the ``received_at`` of commands an older API version queued and with the
``ts`` stored before the upgrade: such a command is ordered by its
``received_at`` (README "Security").
"""
from __future__ import annotations

import time
from collections.abc import Callable

from pymongo import ReturnDocument
from pymongo.database import Database
from pymongo.errors import DuplicateKeyError

#: The collection holding the counter, and its one document.
CLOCKS = "write_clocks"
CLOCK_ID = "writes"
#: Tries of one claim while other API processes keep claiming ahead of it (each failed try means another succeeded).
MAX_CLAIM_TRIES = 100


def order_of(cmd: dict) -> int:
    """The order of a write command: its ``order``, or for one queued by an older version its ``received_at``."""
    return cmd.get("order", cmd["received_at"])


class WriteClock:
    """Claims write orders: integers strictly greater than every order claimed before, by any process.

    Parameters:
      db: the MongoDB database holding the counter.
      clock: the candidate for the next order (nanoseconds since the epoch by default).
    """

    def __init__(self, db: Database, *, clock: Callable[[], int] = time.time_ns):
        self.counter = db[CLOCKS]
        self.clock = clock
        self.last = 0

    def next(self) -> int:
        """A new order; raises pymongo's errors when MongoDB is unreachable (nothing was claimed then)."""
        candidate = max(self.clock(), self.last + 1)
        for _ in range(MAX_CLAIM_TRIES):
            try:
                before = self.counter.find_one_and_update(
                    {"_id": CLOCK_ID}, {"$max": {"n": candidate}}, upsert=True, return_document=ReturnDocument.BEFORE
                )
            except DuplicateKeyError:
                continue  # two first claims raced to create the counter: the other one made it, claim again
            current = before["n"] if before else 0
            if current < candidate:
                self.last = candidate
                return candidate
            candidate = current + 1
        raise RuntimeError(f"no write order claimed in {MAX_CLAIM_TRIES} tries")
