"""Halting bulk work: a campaign paused, resumed or cancelled, a message cancelled.

One mechanism for every stage: the halt state of a message (a campaign's
deliveries carry the campaign's id as their message id) is one document in
``halts`` (``_id`` the message id), written by the persist actor from the
API's ``halt.set`` command, and read by the campaign expansion, the expansion
of a send and the delivery actor (before each send) through :func:`state`,
cached per process for at most :data:`CACHE_SECONDS`: a provider request
starts at most that long (plus one send's time) after the API answered.

A cancel is final (a pause or resume after it changes nothing); deliveries
not sent are recorded ``cancelled`` (shared/ledger.py) by the delivery actor, those sent
stay recorded. A cancel may come before the message exists (a scheduled
send, or an ASYNCHRONOUS one not expanded yet): the state is recorded and the
expansion, when it comes, expands nothing (:func:`is_cancelled` is what a
scheduler calls before it publishes a due send).
"""
from __future__ import annotations

import threading
import time

from pymongo.database import Database
from pymongo.errors import DuplicateKeyError

from shared import scheduling

#: Collection of halt states, ``_id`` the message (or campaign) id.
HALTS = "halts"
RUNNING = "running"
PAUSED = "paused"
CANCELLED = "cancelled"
#: States a ``halt.set`` command may ask for: resume sets ``running``.
STATES = (RUNNING, PAUSED, CANCELLED)
#: Longest a process answers a state it read before (seconds): bounds how late a pause or a cancel takes effect.
CACHE_SECONDS = 0.5
#: Seconds a paused campaign's chunk or expansion waits before it looks again (re-enqueued with a delay: no thread held).
PAUSE_RECHECK_SECONDS = 5.0
#: The state and reason a delivery not sent because of a cancel is recorded with.
CANCELLED_REASON = "cancelled"

_cache: dict[str, tuple[float, str, str | None]] = {}
_lock = threading.Lock()


def state(db: Database, message_id: str, app_id: str | None = None, *, max_age: float = CACHE_SECONDS) -> str:
    """The halt state of ``message_id`` (``running`` when none was set), read at most ``max_age`` seconds ago.

    ``app_id``: the app the caller's work is for; a halt recorded for another app does not apply.
    """
    now = time.monotonic()
    cached = _cache.get(message_id)
    if cached is None or now - cached[0] > max_age:
        doc = db[HALTS].find_one({"_id": message_id}, {"state": 1, "app_id": 1}) or {}
        cached = (now, doc.get("state", RUNNING), doc.get("app_id"))
        with _lock:
            _cache[message_id] = cached
    _, found, halted_app = cached
    if app_id is not None and halted_app is not None and halted_app != app_id:
        return RUNNING
    return found


def is_cancelled(db: Database, message_id: str, app_id: str | None = None) -> bool:
    return state(db, message_id, app_id) == CANCELLED


def is_paused(db: Database, message_id: str, app_id: str | None = None) -> bool:
    return state(db, message_id, app_id) == PAUSED


def forget_cached() -> None:
    """Drop this process's cached states (tests)."""
    with _lock:
        _cache.clear()


# --- the write (persist queue) ----------------------------------------------------------------------


def set_state(db: Database, cmd: dict) -> dict:
    """``halt.set``: record ``cmd["state"]`` for ``cmd["message_id"]``; a cancel is final; answers the state now.

    Idempotent, and ordered by the command's write order (``order``, else its receive time): a pause
    applied after the resume the API acknowledged later does not stick.
    """
    halts = db[HALTS]
    message_id, wanted = cmd["message_id"], cmd["state"]
    order = cmd.get("order", cmd["received_at"])
    for _ in range(3):
        current = halts.find_one({"_id": message_id})
        if current is not None and (current["state"] == CANCELLED or current.get("order", 0) >= order):
            return {"state": current["state"]}
        fields = {"state": wanted, "order": order, "app_id": cmd.get("app_id"), "at": time.time()}
        if current is None:
            try:
                halts.insert_one({"_id": message_id, **fields})
                return {"state": wanted}
            except DuplicateKeyError:
                continue  # written meanwhile: look again
        if halts.update_one({"_id": message_id, "order": current.get("order", 0)}, {"$set": fields}).modified_count:
            return {"state": wanted}
    current = halts.find_one({"_id": message_id}) or {}
    return {"state": current.get("state", RUNNING)}


HANDLERS = {"halt.set": set_state}


# --- what the stages call ---------------------------------------------------------------------------


def hold_chunk(db: Database, publisher, actor_name: str, chunk: dict) -> bool:
    """Before a chunk is claimed: a paused message's chunk waits (parked, looked at again after
    :data:`PAUSE_RECHECK_SECONDS`); True then.

    A cancelled message's chunk is claimed as usual and each of its open deliveries is recorded
    ``cancelled`` by the delivery actor's per-send check, through the ledger's recorder, without a request.
    """
    if state(db, chunk["message_id"], chunk.get("app_id")) == PAUSED:
        scheduling.later(db, publisher, actor_name, chunk, delay=PAUSE_RECHECK_SECONDS, reason=scheduling.PAUSED, park=True)
        return True
    return False


def hold_expansion(db: Database, publisher, actor_name: str, cmd: dict, message_id: str) -> bool:
    """Between two batches of a campaign's expansion: a paused campaign's expansion comes back later; True then."""
    if is_paused(db, message_id, cmd.get("app_id")):
        publisher.publish(actor_name, cmd, delay_ms=int(PAUSE_RECHECK_SECONDS * 1000))
        return True
    return False


def finished_state(db: Database, message_id: str) -> str:
    """The state a campaign ends in once nothing of it is open: ``cancelled`` or ``sent``."""
    return CANCELLED if is_cancelled(db, message_id) else "sent"


def shown_state(halt_doc: dict | None, stored: str) -> str:
    """The state a detail route answers from the ``halts`` document (read fresh): paused or cancelled while halted, else the stored one."""
    found = (halt_doc or {}).get("state", RUNNING)
    if found == CANCELLED or (found == PAUSED and stored not in ("sent", CANCELLED)):
        return found
    return stored
