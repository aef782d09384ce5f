"""The delivery ledger: the one owner of a delivery's state (issue 20).

A delivery is one notification to one device. Deliveries are kept, inserted,
claimed, leased and recorded per **chunk** (up to ``delivery_chunk_size`` of
them): one document per chunk in the ``ledger`` collection, with a natural
``_id`` made of the message id, the provider and the chunk's index::

    {_id: "<message>:<provider>:<index>", m: message id, p: provider, app: app id,
     d: [[device id, token, entry, environment], ...],   # the chunk's deliveries, in order: kept apart in
                          # ``ledger_devices`` (same ``_id``, written once; ``insert_chunks``, ``with_devices``),
                          # except in a chunk of at most ``INLINE_DEVICES`` (a transactional send's)
     s: "ppsf...",        # one state character per delivery (``CHAR``)
     r: {"<i>": reason},  # why delivery i failed, waits or gave up (absent when sent)
     t: {"<i>": seconds}, # when the provider's answer of failed delivery i came (failures list, outcome feed)
     c: claim id | None,  # the run that holds the chunk
     hb: int,             # the holder's heartbeat: the lease (``LeaseWatch``)
     o: bool,             # some delivery still open (pending or retry)
     u: seconds,          # outcomes last written at
     at: seconds}         # inserted at (retention)

Insert is one ``insert_many`` per message and provider (idempotent on ``_id``);
claim one compare-and-set per chunk; outcomes one update per flush per chunk,
guarded by the claim (workers/recorder.py). The message document (``messages``)
is the per-message summary: ``totals`` by provider, ``chunks`` by provider
(the chunks to read, ``0..n-1``), and after the retention purge ``summary``
(the counts, kept for good).

The old format (``deliveries``, one row per delivery, ``ledger_v1``) is still
read: messages expanded by an older version have no ``chunks``.
"""
from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from pymongo import ReturnDocument
from pymongo.database import Database
from pymongo.errors import BulkWriteError, PyMongoError

from shared import db as mongo
from shared import db_counters
from shared.commands import BULK

log = logging.getLogger(__name__)

# --- states -----------------------------------------------------------------------------------

PENDING = "pending"
RETRY = "retry"
#: Not stored: an open delivery of a chunk that a run holds (shown by :func:`rows`, the old format stored it).
SENDING = "sending"
SENT = "sent"
FAILED = "failed"
DEAD_TOKEN = "dead_token"
EXPIRED = "expired"
DEAD_LETTER = "dead_letter"
#: Not sent because its message or campaign was cancelled (shared/halt.py).
CANCELLED = "cancelled"

#: Delivery states that are final (the outcome is known and recorded).
FINAL_STATES = (SENT, FAILED, DEAD_TOKEN, EXPIRED, DEAD_LETTER, CANCELLED)
#: Final states counted as failed in the counts the API answers.
FAILED_STATES = (FAILED, DEAD_TOKEN, EXPIRED, DEAD_LETTER, CANCELLED)
#: States that still await an outcome, and those a run may claim.
OPEN_STATES = (PENDING, SENDING, RETRY)
CLAIMABLE = (PENDING, RETRY)

#: State → its character in a chunk's ``s``, and back.
CHAR = {PENDING: "p", RETRY: "r", SENT: "s", FAILED: "f", DEAD_TOKEN: "d", EXPIRED: "e", DEAD_LETTER: "l", CANCELLED: "c"}
STATE = {c: s for s, c in CHAR.items()}
OPEN_CHARS = CHAR[PENDING] + CHAR[RETRY]

#: Format of a deliver-queue message naming a ledger chunk (an old one has no ``v``: :mod:`workers.deliver_v1`).
FORMAT = 2
#: MongoDB's duplicate-key error: an insert that already happened.
DUPLICATE_KEY = 11000


@dataclass(frozen=True)
class Delivery:
    """One notification to one device."""

    id: str
    device_id: str
    token: str
    entry: int
    environment: str | None

    def as_list(self) -> list:
        """The old deliver-message form (``ledger_v1``) and a dead letter's ``delivery``."""
        return [self.id, self.device_id, self.token, self.entry, self.environment]

    def compact(self) -> list:
        """A chunk document's form (the id is made again from the message id)."""
        return [self.device_id, self.token, self.entry, self.environment]


def delivery_id(message_id: str, entry: int, token: str) -> str:
    return f"{message_id}:{entry}:{token}"


def chunk_id(message_id: str, provider: str, index: int) -> str:
    return f"{message_id}:{provider}:{index}"


def deliveries_of(doc: Mapping) -> list[Delivery]:
    """A chunk document's deliveries, in order (index ``i`` is ``s[i]``); the document has its ``d`` (:func:`with_devices`)."""
    message_id = doc["m"]
    return [Delivery(delivery_id(message_id, entry, token), device, token, entry, env) for device, token, entry, env in doc["d"]]


def with_devices(db: Database, docs: list[dict]) -> list[dict]:
    """The chunk documents with their ``d`` (read from ``ledger_devices``, one trip for all; a chunk written before
    the split keeps its own ``d``)."""
    wanted = [doc["_id"] for doc in docs if "d" not in doc]
    if wanted:
        db_counters.count(trips=1)
        found = {d["_id"]: d["d"] for d in db[mongo.LEDGER_DEVICES].find({"_id": {"$in": wanted}}, {"d": 1})}
        for doc in docs:
            if "d" not in doc:
                if doc["_id"] not in found:  # inserted before its state document: only a purge removes it
                    log.warning("chunk %s has no device list (purged?): nothing of it is sent", doc["_id"])
                doc["d"] = found.get(doc["_id"], [])
    return docs


#: Deliveries of a chunk small enough to keep its device list in its own document: one insert instead of two, and its
#: claim reads it back with the state (a SYNCHRONOUS send's chunk: two database round trips fewer on its path).
INLINE_DEVICES = 16


def insert_chunks(db: Database, docs: list[dict]) -> None:
    """Insert chunk documents (made by :func:`chunk_document`, with their ``d``), idempotent on ``_id``: the device list
    into ``ledger_devices`` first (written once, never changed), then the rest into ``ledger``, which every outcome
    flush rewrites: kept small, so a flush costs the database a few hundred bytes per chunk, not the whole list.
    A chunk of at most :data:`INLINE_DEVICES` keeps its list (a few hundred bytes) in ``ledger``."""
    apart = [doc for doc in docs if len(doc["d"]) > INLINE_DEVICES]
    insert_ignoring_duplicates(db[mongo.LEDGER_DEVICES], [{"_id": doc["_id"], "m": doc["m"], "d": doc["d"], "at": doc["at"]}
                                                         for doc in apart])
    insert_ignoring_duplicates(db[mongo.LEDGER], [{k: v for k, v in doc.items() if k != "d" or len(v) <= INLINE_DEVICES}
                                                  for doc in docs])


def insert_ignoring_duplicates(collection, documents: list[dict]) -> None:
    """``insert_many`` that treats documents already there as inserted (idempotent replays)."""
    if not documents:
        return
    db_counters.count(written=len(documents))
    try:
        collection.insert_many(documents, ordered=False)
    except BulkWriteError as error:
        if any(e["code"] != DUPLICATE_KEY for e in error.details["writeErrors"]):
            raise


# --- building and publishing chunks -----------------------------------------------------------

#: ``k`` of a campaign's chunks.
CAMPAIGN_KIND = "c"


def chunk_document(message_id: str, app_id: str, provider: str, index: int, deliveries: list[Delivery], *, now: float,
                   lane: str | None = None, kind: str | None = None) -> dict:
    """A chunk's document; ``l`` names its lane when not bulk (the per-app backlog, shared/backlog.py), ``k`` marks a
    campaign's (:data:`CAMPAIGN_KIND`: the pacing of an app's other bulk sends leaves them out, shared/pacing.py)."""
    doc = {
        "_id": chunk_id(message_id, provider, index), "m": message_id, "p": provider, "app": app_id, "i": index,
        "d": [d.compact() for d in deliveries], "s": CHAR[PENDING] * len(deliveries), "r": {},
        "c": None, "hb": 0, "o": bool(deliveries), "at": now,
    }
    if lane and lane != BULK:
        doc["l"] = lane
    if kind:
        doc["k"] = kind
    return doc


def chunk_message(message_id: str, app_id: str, provider: str, index: int, entries: Mapping[str, dict], used: Iterable[int], *,
                  first_attempt_at: float, attempts: dict | None = None, watch: list | None = None,
                  lane: str | None = None) -> dict:
    """A deliver-queue message naming one ledger chunk, with only the entries its deliveries use (keyed by index).

    ``lane`` (shared/commands.py) picks the deliver queue; the message keeps it when it is re-enqueued.
    """
    message = {
        "v": FORMAT, "lane": lane or BULK, "chunk": chunk_id(message_id, provider, index), "message_id": message_id, "app_id": app_id,
        "entries": {key: entries[key] for key in sorted({str(e) for e in used})},
        "first_attempt_at": first_attempt_at, "attempts": attempts or {},
    }
    if watch is not None:
        message["watch"] = watch
    return message


def write_chunks(db: Database, message_id: str, app_id: str, provider: str, deliveries: list[Delivery], *,
                 chunk_size: int, first_index: int = 0, now: float | None = None) -> list[dict]:
    """Insert the chunks of these deliveries (one insert, idempotent); answer the documents, in order."""
    now = time.time() if now is None else now
    docs = [
        chunk_document(message_id, app_id, provider, first_index + n, deliveries[start:start + chunk_size], now=now)
        for n, start in enumerate(range(0, len(deliveries), chunk_size))
    ]
    insert_chunks(db, docs)
    return docs


def publish_chunks(publisher, actor_by_provider: Mapping[str, str], docs: list[dict], entries: Mapping[str, dict], *,
                   first_attempt_at: float, lane: str | None = None) -> None:
    """Publish one deliver message per chunk document, in its send's lane."""
    for doc in docs:
        publisher.publish(
            actor_by_provider[doc["p"]],
            chunk_message(doc["m"], doc["app"], doc["p"], doc["i"], entries, (e for _, _, e, _ in doc["d"]), first_attempt_at=first_attempt_at,
                          lane=lane),
        )


# --- claims and leases ------------------------------------------------------------------------


class LeaseWatch:
    """Whether a chunk's holder is gone, without comparing clocks across hosts.

    The holder bumps the chunk's heartbeat ``hb`` while it works (every flush and
    at least every third of the lease). A run that finds the chunk held notes
    ``(claim, hb)`` in the deliver message it re-enqueues with a delay of one lease;
    when that message comes back and the chunk still shows the same pair, the
    heartbeat has not moved for a whole lease (measured by the broker's delay,
    a duration, not by comparing two hosts' clocks) and the run takes the chunk over
    with a compare-and-set on that pair.
    """

    @staticmethod
    def seen(doc: Mapping) -> list:
        return [doc.get("c"), doc.get("hb", 0)]

    @staticmethod
    def stale(doc: Mapping, watch: list | None) -> bool:
        return watch is not None and LeaseWatch.seen(doc) == list(watch)


def claim(db: Database, cid: str, claim_id: str, watch: list | None) -> tuple[dict | None, dict | None]:
    """Take chunk ``cid`` for ``claim_id``: answer (the claimed document, None) or (None, the document as found).

    A free chunk is taken at once; a held one only when ``watch`` shows its heartbeat
    has not moved for a lease (:class:`LeaseWatch`). (None, None): no such chunk.
    """
    ledger = db[mongo.LEDGER]
    grab = {"$set": {"c": claim_id, "hb": 0}}
    db_counters.count(trips=1, written=1)
    doc = ledger.find_one_and_update({"_id": cid, "c": None}, grab, return_document=ReturnDocument.AFTER)
    if doc is not None:
        return with_devices(db, [doc])[0], None
    db_counters.count(trips=1)
    found = ledger.find_one({"_id": cid}, {"c": 1, "hb": 1, "o": 1})
    if found is None:
        return None, None
    if LeaseWatch.stale(found, watch):
        db_counters.count(trips=1, written=1)
        doc = ledger.find_one_and_update({"_id": cid, "c": found["c"], "hb": found.get("hb", 0)}, grab,
                                         return_document=ReturnDocument.AFTER)
        if doc is not None:
            log.info("chunk %s taken over from %s (heartbeat still for a lease)", cid, found["c"])
            return with_devices(db, [doc])[0], None
        found = ledger.find_one({"_id": cid}, {"c": 1, "hb": 1, "o": 1}) or found
    return None, found


def release(db: Database, cid: str, claim_id: str) -> None:
    db_counters.count(trips=1, written=1)
    db[mongo.LEDGER].update_one({"_id": cid, "c": claim_id}, {"$set": {"c": None}})


def outcome_update(states: str, reasons: Mapping[int, str | None], *, release_claim: bool = False,
                   times: Mapping[int, float] | None = None) -> dict:
    """The update that records a chunk's states (the whole string: idempotent), the reasons that changed and, for
    deliveries not sent, when the provider answered (``t``: index → unix time; readers fall back to ``u``)."""
    fields: dict = {"s": states, "o": any(ch in OPEN_CHARS for ch in states), "u": time.time()}
    for index, reason in reasons.items():
        fields[f"r.{index}"] = reason
    for index, at in (times or {}).items():
        fields[f"t.{index}"] = at
    if release_claim:
        fields["c"] = None
    return {"$set": fields, "$inc": {"hb": 1}}


def change_free_chunk(db: Database, cid: str, changes: Mapping[int, tuple[str, str | None]], *, only_from: str,
                      tries: int = 5) -> list[int]:
    """Set deliveries of a chunk no run holds: ``{index: (state, reason)}``, each only from a state in ``only_from`` (chars).

    A compare-and-set on the whole state string (retried when it moved). Answers the indexes changed;
    none when the chunk is held (its holder records them).
    """
    ledger = db[mongo.LEDGER]
    for _ in range(tries):
        doc = ledger.find_one({"_id": cid}, {"s": 1, "c": 1})
        if doc is None or doc.get("c") is not None:
            return []
        states = list(doc["s"])
        changed = [i for i in changes if i < len(states) and states[i] in only_from]
        if not changed:
            return []
        for i in changed:
            states[i] = CHAR[changes[i][0]]
        update = outcome_update("".join(states), {i: changes[i][1] for i in changed})
        db_counters.count(trips=2, written=1)
        if ledger.update_one({"_id": cid, "c": None, "s": doc["s"]}, update).modified_count:
            return changed
    return []


# --- reading ----------------------------------------------------------------------------------


def chunk_ids(message: Mapping) -> list[str]:
    return [chunk_id(message["_id"], provider, i) for provider, n in (message.get("chunks") or {}).items() for i in range(n)]


def is_ledger_message(message: Mapping | None) -> bool:
    return bool(message) and "chunks" in message


def counts_of_messages(db: Database, messages: list[Mapping]) -> dict[str, dict[str, Counter]]:
    """``{message id: {provider: Counter(state)}}`` of expanded ledger messages, their chunks read by ``_id`` in one query."""
    result: dict[str, dict[str, Counter]] = {}
    wanted = []
    for message in messages:
        if message.get("summary") is not None:
            result[message["_id"]] = {p: Counter(c) for p, c in message["summary"].items()}
            continue
        result[message["_id"]] = {p: Counter() for p in (message.get("totals") or {})}
        wanted.extend(chunk_ids(message))
    if wanted:
        for doc in db[mongo.LEDGER].find({"_id": {"$in": wanted}}, {"m": 1, "p": 1, "s": 1}):
            per = result[doc["m"]].setdefault(doc["p"], Counter())
            for ch, n in Counter(doc["s"]).items():
                per[STATE[ch]] += n
    return result


def _of_messages(ids: list[str]) -> dict:
    """The filter of these messages' chunks: one message by equality, which nx-27017 serves from the ``m`` index (an
    ``$in``, even of one id, reads the whole ledger there: ``message_done`` counts each message it tells)."""
    return {"m": ids[0]} if len(ids) == 1 else {"m": {"$in": ids}}


def rows(db: Database, message_ids: Iterable[str]) -> list[dict]:
    """Every delivery of these messages as a row ``{_id, message_id, platform, device_id, state, reason}``.

    For tests, tools and the per-device views: an open delivery of a held chunk shows as ``sending``.
    Deliveries of the old format (``deliveries``) are included as stored.
    """
    ids = list(message_ids)
    found = []
    for doc in with_devices(db, list(db[mongo.LEDGER].find(_of_messages(ids)))):
        held = doc.get("c") is not None
        for i, delivery in enumerate(deliveries_of(doc)):
            state = STATE[doc["s"][i]]
            if held and state == PENDING:
                state = SENDING
            found.append({"_id": delivery.id, "message_id": doc["m"], "platform": doc["p"], "device_id": delivery.device_id,
                          "token": delivery.token, "state": state, "reason": (doc.get("r") or {}).get(str(i)),
                          "chunk": doc["_id"], "index": i})
    for doc in db[mongo.DELIVERIES].find({"message_id": {"$in": ids}}):
        found.append({"token": doc["_id"].rsplit(":", 1)[1], **doc})
    return found


def state_counts(db: Database, message_ids: Iterable[str]) -> Counter:
    """Deliveries of these messages by state (either format), reading only the chunks' state strings and holders."""
    ids = list(message_ids)
    counts: Counter = Counter()
    for doc in db[mongo.LEDGER].find(_of_messages(ids), {"s": 1, "c": 1, "_id": 0}):
        for ch, n in Counter(doc["s"]).items():
            counts[SENDING if ch == CHAR[PENDING] and doc.get("c") is not None else STATE[ch]] += n
    for row in db[mongo.DELIVERIES].aggregate([{"$match": {"message_id": {"$in": ids}}}, {"$group": {"_id": "$state", "n": {"$sum": 1}}}]):
        counts[row["_id"]] += row["n"]
    return counts


def all_counts(db: Database) -> dict[str, Counter]:
    """``{provider: Counter(state)}`` of every delivery kept (chunks and old rows), for /admin/stats."""
    counts: dict[str, Counter] = {}
    for doc in db[mongo.LEDGER].find({}, {"p": 1, "s": 1, "_id": 0}):
        per = counts.setdefault(doc["p"], Counter())
        for ch, n in Counter(doc["s"]).items():
            per[STATE[ch]] += n
    for row in db[mongo.DELIVERIES].aggregate([{"$group": {"_id": "$ps", "n": {"$sum": 1}}}]):
        if row["_id"]:
            platform, _, state = str(row["_id"]).partition(":")
            counts.setdefault(platform, Counter())[state] += row["n"]
    return counts


def has_open(db: Database, message_id: str) -> bool:
    """Whether some delivery of the message still awaits an outcome (either format)."""
    # nx-27017 reads a $set boolean back as 1, and ``True`` matches it; an ``$in`` would read the whole ledger.
    if db[mongo.LEDGER].find_one({"m": message_id, "o": True}, {"_id": 1}) is not None:
        return True
    return db[mongo.DELIVERIES].find_one({"message_id": message_id, "state": {"$in": list(OPEN_STATES)}}, {"_id": 1}) is not None


# --- retention --------------------------------------------------------------------------------

#: Seconds between two purges of a process's purge thread.
PURGE_INTERVAL_SECONDS = 3600.0
#: Chunk documents read per purge step.
PURGE_BATCH = 1000


def purge(db: Database, *, retention_days: float, now: float | None = None) -> dict:
    """Delete delivery detail older than ``retention_days``; each message keeps its counts (``summary``).

    A message's chunks go together: its counts are written into the message first, then the chunks are deleted
    (by ``_id``); a purge stopped half-way is completed by the next. Rows of the old format older than that go too.
    """
    cutoff = (time.time() if now is None else now) - retention_days * 86400.0
    ledger, messages = db[mongo.LEDGER], db[mongo.MESSAGES]
    purged_messages = purged_chunks = 0
    while True:
        old = {d["m"] for d in ledger.find({"at": {"$lt": cutoff}}, {"m": 1}).limit(PURGE_BATCH)}
        if not old:
            break
        for message_id in old:
            summary: dict[str, Counter] = {}
            ids = []
            for doc in ledger.find({"m": message_id}, {"p": 1, "s": 1}):
                ids.append(doc["_id"])
                per = summary.setdefault(doc["p"], Counter())
                for ch, n in Counter(doc["s"]).items():
                    per[STATE[ch]] += n
            message = messages.find_one({"_id": message_id}, {"summary": 1}) or {}
            if message.get("summary") is None:
                messages.update_one({"_id": message_id}, {"$set": {"summary": {p: dict(c) for p, c in summary.items()}}})
            for start in range(0, len(ids), PURGE_BATCH):
                part = {"_id": {"$in": ids[start:start + PURGE_BATCH]}}
                db[mongo.LEDGER_DEVICES].delete_many(part)  # first: a purge stopped between the two finds the chunk again
                purged_chunks += ledger.delete_many(part).deleted_count
            purged_messages += 1
    old_rows = db[mongo.DELIVERIES].delete_many({"at": {"$lt": cutoff}}).deleted_count
    return {"messages": purged_messages, "chunks": purged_chunks, "old_rows": old_rows}


def start_purger(db: Database, *, retention_days: float, interval: float = PURGE_INTERVAL_SECONDS) -> threading.Thread:
    """A daemon thread of a worker process that purges every ``interval`` seconds (idempotent: several may run)."""

    def run() -> None:
        while True:
            try:
                done = purge(db, retention_days=retention_days)
                if any(done.values()):
                    log.info("retention purge: %s", done)
            except PyMongoError as error:
                log.warning("retention purge failed (next in %.0fs): %s", interval, error)
            time.sleep(interval)

    thread = threading.Thread(target=run, name="ledger-purge", daemon=True)
    thread.start()
    return thread
