"""What the API does with a validated request: publish commands, wait, read.

Knows nothing of Flask: the blueprints turn HTTP into calls here and the
results into HTTP.
"""
from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property

import dramatiq
import pika
import pika.exceptions
import pymongo.errors
from pymongo.database import Database

from api.errors import unavailable
from api.outcome_waiter import OutcomeWaiter, WaiterFull
from shared import commands, ledger, queue_cap
from shared import db as mongo
from shared.broker import connection_parameters
from shared.commands import Publisher
from shared.outbound import OutboundPolicy
from shared.sealed_credentials import CredentialKeys
from shared.settings import Settings
from shared.write_order import WriteClock

log = logging.getLogger(__name__)

#: First and longest pause between two looks at MongoDB while waiting (seconds).
POLL_FIRST_SECONDS = 0.002
POLL_LONGEST_SECONDS = 0.02
#: Delivery states whose outcome is final (shared/ledger.py owns them).
FINAL_STATES = ledger.FINAL_STATES
#: Messages of the old format (rows in ``deliveries``) with at most this many deliveries are counted by reading them:
#: nx-27017 counts the whole collection before every ``aggregate``.
COUNT_BY_FIND_UP_TO = 50
#: Final states counted as failed in PowerAuth's result.
FAILED_STATES = ledger.FAILED_STATES

#: Seconds the database check may take before MongoDB counts as down (a server that cannot write hangs writers).
DATABASE_CHECK_SECONDS = 3.0
#: The document the database check writes.
HEALTH_PROBE_ID = "api-status"
#: Exceptions that mean the broker could not confirm a message.
BROKER_ERRORS = (dramatiq.errors.BrokerConnectionError, pika.exceptions.AMQPError, OSError)


def poll(check, *, timeout: float):
    """Call ``check`` until it answers something truthy or ``timeout`` passes; answer its last value."""
    deadline = time.monotonic() + timeout
    pause = POLL_FIRST_SECONDS
    while True:
        value = check()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(pause)
        pause = min(pause * 2, POLL_LONGEST_SECONDS)


@dataclass
class Services:
    """The API's adapters: broker publisher, MongoDB, settings; the process's outcome waiter.

    Parameters:
      settings, broker, db: the adapters.
      on_unapplied: told the id of a write RabbitMQ confirmed that was not seen applied (the API answers it 202).
      waiter: the SYNCHRONOUS sends' outcome waiter (one per process; made here when not given).
    """

    settings: Settings
    broker: dramatiq.Broker
    db: Database
    on_unapplied: Callable[[str], None] | None = None
    waiter: OutcomeWaiter | None = field(default=None, repr=False)

    def __post_init__(self):
        if self.waiter is None:
            self.waiter = OutcomeWaiter(self.message_counts_many, capacity=self.settings.api_sync_waiters)

    @property
    def publisher(self) -> Publisher:
        return Publisher(self.broker, self.settings)

    @cached_property
    def write_clock(self) -> WriteClock:
        """Where writes get their order (shared/write_order.py): one counter in MongoDB, not this host's clock."""
        return WriteClock(self.db)

    @cached_property
    def credential_keys(self) -> CredentialKeys:
        """The keys provider credentials are sealed with before they are published (shared/sealed_credentials.py)."""
        return CredentialKeys.from_settings(self.settings)

    @cached_property
    def outbound(self) -> OutboundPolicy:
        """What URLs given to the server may reach (webhooks, token endpoints): shared/outbound.py."""
        return OutboundPolicy.from_settings(self.settings)

    @cached_property
    def waiting_counts(self) -> queue_cap.WaitingCounts:
        """Deliveries waiting per app, read at most every ``queued_cache_seconds`` (shared/queue_cap.py: the cap per app)."""
        return queue_cap.WaitingCounts(self.db, seconds=self.settings.queued_cache_seconds)

    def waiting_deliveries(self, app_id: str) -> int:
        return self.guarded_read(lambda: self.waiting_counts.of(app_id))

    # --- publishing ---------------------------------------------------------------------------

    def publish(self, actor_name: str, payload: dict) -> None:
        """Publish and return once RabbitMQ confirmed; broker trouble becomes a 503."""
        try:
            self.publisher.publish(actor_name, payload)
        except BROKER_ERRORS as error:
            log.warning("enqueue failed: %s", error)
            raise unavailable("the message broker") from None

    def write(self, command: dict) -> dict | None:
        """Order a write, publish it, and wait (bounded) until a worker applied it: read-your-writes.

        The order is claimed from MongoDB first (unreachable: a 503, nothing published). Once RabbitMQ
        confirmed the write it is durable and is never answered as failed: answers the applied record
        (``{"_id", "at", "result"?}``), or None when it was not seen applied within the wait, MongoDB
        being slow or unreachable (``on_unapplied`` is told; the API answers 202).
        """
        command["order"] = self.guarded_read(self.write_clock.next)
        self.publish(commands.APPLY_WRITE, command)
        try:
            applied = poll(
                lambda: self.db[mongo.COMMANDS].find_one({"_id": command["id"]}),
                timeout=self.settings.api_apply_wait_seconds,
            )
        except pymongo.errors.PyMongoError as error:
            log.warning("write %s is queued; MongoDB failed while waiting for it to apply: %s", command["id"], error)
            applied = None
        if not applied:
            log.warning("write %s not seen applied within %.1fs (accepted)", command["id"], self.settings.api_apply_wait_seconds)
            if self.on_unapplied is not None:
                self.on_unapplied(command["id"])
        return applied

    # --- reading ------------------------------------------------------------------------------

    def guarded_read(self, read):
        """Run a MongoDB read; an unreachable database becomes a 503."""
        try:
            return read()
        except pymongo.errors.ConnectionFailure:
            raise unavailable("the database") from None

    def find_one(self, collection: str, query: dict, projection: dict | None = None):
        return self.guarded_read(lambda: self.db[collection].find_one(query, projection))

    def message_counts(self, message_id: str) -> dict | None:
        """Per platform ``{sent, pending, failed, total}`` of a message, or None before it is expanded."""
        return self.message_counts_many([message_id])[message_id]

    def message_counts_many(self, message_ids: list[str]) -> dict[str, dict | None]:
        """:meth:`message_counts` of several messages: ``{id: counts | None}``.

        Two queries by ``_id`` whatever their size: the messages (each the summary: totals, chunks), then their
        ledger chunks' state strings (shared/ledger.py). Messages of the old format are counted from their rows.
        """
        messages = {
            m["_id"]: m
            for m in self.db[mongo.MESSAGES].find(
                {"_id": {"$in": list(message_ids)}}, {"expanded": 1, "totals": 1, "chunks": 1, "summary": 1}
            )
        }
        expanded = [m for m in messages.values() if m.get("expanded")]
        by_state = ledger.counts_of_messages(self.db, [m for m in expanded if ledger.is_ledger_message(m)])
        answer: dict[str, dict | None] = {}
        for message_id in message_ids:
            message = messages.get(message_id)
            if not message or not message.get("expanded"):
                answer[message_id] = None
            elif message_id in by_state:
                answer[message_id] = _result_counts(message["totals"], by_state[message_id])
            else:
                answer[message_id] = self._counts_v1(message_id, message)
        return answer

    def _counts_v1(self, message_id: str, message: dict) -> dict:
        """Counts of an old-format message (one row per delivery in ``deliveries``)."""
        counts = {platform: {"sent": 0, "pending": 0, "failed": 0, "total": total} for platform, total in message["totals"].items()}
        deliveries = self.db[mongo.DELIVERIES]
        if sum(message["totals"].values()) <= COUNT_BY_FIND_UP_TO:
            by_state = Counter(d["ps"] for d in deliveries.find({"message_id": message_id}, {"ps": 1, "_id": 0}))
            rows = [{"_id": ps, "n": n} for ps, n in by_state.items()]
        else:
            rows = deliveries.aggregate([{"$match": {"message_id": message_id}}, {"$group": {"_id": "$ps", "n": {"$sum": 1}}}])
        for row in rows:
            platform, state = row["_id"].split(":", 1)
            if state == ledger.SENT:
                counts[platform]["sent"] += row["n"]
            elif state in FAILED_STATES:
                counts[platform]["failed"] += row["n"]
        for platform_counts in counts.values():
            platform_counts["pending"] = platform_counts["total"] - platform_counts["sent"] - platform_counts["failed"]
        return counts

    def wait_for_outcome(self, message_id: str) -> dict | None:
        """Wait (bounded) until every delivery of the message has an outcome; answer the counts.

        The wait blocks this thread on the process's :class:`~api.outcome_waiter.OutcomeWaiter`,
        which reads every waiting message's counts together; with every waiting place taken,
        it answers the counts as they are now (still pending), as a wait that ran out of time does.
        """
        try:
            return self.guarded_read(lambda: self.waiter.wait(message_id, self.settings.api_sync_wait_seconds))
        except WaiterFull:
            log.warning("%d SYNCHRONOUS sends already wait in this process: %s answers without waiting",
                        self.waiter.capacity, message_id)
            return self.guarded_read(lambda: self.message_counts(message_id))

    # --- health -------------------------------------------------------------------------------

    @cached_property
    def health_checks(self) -> HealthChecks:
        return HealthChecks(self.check_broker, self.check_database, cache_seconds=self.settings.health_check_cache_seconds)

    def health(self) -> tuple[bool, bool]:
        """(RabbitMQ up, MongoDB writable), from a live check at most ``health_check_cache_seconds`` old."""
        return self.health_checks.answer()

    def check_broker(self) -> bool:
        """A live check: a fresh AMQP connection (fail-fast parameters; any node of a cluster) opened and closed."""
        try:
            connection = pika.BlockingConnection(connection_parameters(self.settings.amqp_url))
        except BROKER_ERRORS:
            return False
        try:
            connection.close()
        except BROKER_ERRORS:
            pass
        return True

    def check_database(self) -> bool:
        """A live check that MongoDB takes a write (a reachable server that cannot write is down), bounded in time."""
        try:
            with pymongo.timeout(DATABASE_CHECK_SECONDS):
                self.db[mongo.HEALTH].update_one(
                    {"_id": HEALTH_PROBE_ID}, {"$set": {"at": datetime.now(UTC)}}, upsert=True
                )
            return True
        except pymongo.errors.PyMongoError:
            return False


class HealthChecks:
    """Live checks shared by the status routes of one process: at most one run per ``cache_seconds``.

    The status routes need no key (load balancers and probes call them), so an
    answer is reused for ``cache_seconds`` and concurrent callers wait for the one
    check in flight instead of each opening an AMQP connection and writing to MongoDB.

    Parameters:
      broker, database: the checks, each answering whether its dependency is up.
      cache_seconds: how long one run's answer is reused.
      clock: monotonic seconds.
    """

    def __init__(self, broker: Callable[[], bool], database: Callable[[], bool], *, cache_seconds: float,
                 clock: Callable[[], float] = time.monotonic):
        self.broker = broker
        self.database = database
        self.cache_seconds = cache_seconds
        self.clock = clock
        self.lock = threading.Lock()
        self.last: tuple[float, tuple[bool, bool]] | None = None

    def answer(self) -> tuple[bool, bool]:
        with self.lock:
            if self.last is None or self.clock() - self.last[0] >= self.cache_seconds:
                self.last = (self.clock(), (self.broker(), self.database()))
            return self.last[1]


def _result_counts(totals: dict, by_state: dict) -> dict:
    """``{platform: {sent, pending, failed, total}}`` from the totals and the states counted per platform."""
    counts = {}
    for platform, total in totals.items():
        states = by_state.get(platform, {})
        sent = states.get(ledger.SENT, 0)
        failed = sum(states.get(s, 0) for s in FAILED_STATES)
        counts[platform] = {"sent": sent, "pending": total - sent - failed, "failed": failed, "total": total}
    return counts
