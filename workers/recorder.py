"""Outcomes written to the ledger off the event loop: one thread per worker process, flushing every ~5 ms.

The event loop only appends a result to its chunk's :class:`ChunkBook` (no I/O);
the recorder thread, every ``interval``, writes the news of every chunk that has some,
in a few round trips per flush whatever the number of chunks: first what dead tokens
do to their registrations (one update per reason) (deactivated BEFORE the outcome
is recorded, so a crash in between leaves the delivery open — sent again after
the lease, the provider says "dead" again — never recorded dead with its
registration still active), then the outcome events and dead letters (one insert
each), then the update of each chunk (its whole state string: idempotent; all chunks of a flush in one bulk write) guarded by the claim, which also bumps the
heartbeat (``hb``: the lease, shared/ledger.py ``LeaseWatch``). A chunk without
news still gets its heartbeat bumped every ``heartbeat`` seconds while it is held.

While MongoDB is unreachable, outcomes are kept and written by a later flush
(for ``give_up`` seconds); dropping them would leave deliveries open, sent again
although the provider took them.
"""
from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from pymongo import UpdateOne
from pymongo.database import Database
from pymongo.errors import ConnectionFailure

from shared import db as mongo
from shared import db_counters, ledger, outbox
from shared.failures import FAILURE_STATES

log = logging.getLogger(__name__)

#: Seconds between two flushes.
INTERVAL_SECONDS = 0.005
#: How long outcomes that cannot be written (MongoDB away) are kept before the chunk's run fails.
GIVE_UP_SECONDS = 300.0
#: Latencies kept for :meth:`Recorder.latency` (the newest).
LATENCY_SAMPLES = 4096


class ClaimLost(Exception):
    """The chunk was taken over by another run: this run's outcomes were not recorded."""


@dataclass
class ChunkBook:
    """A claimed chunk's state on its way to the ledger (states change only here, under the recorder's lock)."""

    db: Database
    cid: str
    claim: str
    provider: str
    entries: Mapping[str, dict]
    states: list[str]
    loop: asyncio.AbstractEventLoop
    dead_token_action: Callable[[Mapping], str]
    pending: list = field(default_factory=list)
    closing: bool = False
    release: bool = True
    finished: asyncio.Future | None = None
    last_write: float = field(default_factory=time.monotonic)
    failing_since: float | None = None
    #: The chunk's app, whose outcome feed hears of its failures (shared/outbox.py).
    app_id: str | None = None
    #: The app's outcome webhook as the run read the app (``outbox.READ``: not read, the recorder reads it).
    webhook: object = outbox.READ
    #: Its last open delivery was recorded (its message may be done: ``outbox.message_done``).
    closed: bool = False


class Recorder:
    """The process's outcome writer (a daemon thread started on first use).

    Parameters:
      dead_token_actions: what a dead token does to its registration, by the entry's ``dead_token``.
      heartbeat: seconds between two heartbeats of a held chunk without news.
    """

    def __init__(self, dead_token_actions: Mapping[str, Callable], *, heartbeat: float,
                 interval: float = INTERVAL_SECONDS, give_up: float = GIVE_UP_SECONDS):
        self.dead_token_actions = dead_token_actions
        self.heartbeat = heartbeat
        self.interval = interval
        self.give_up = give_up
        self.lock = threading.Lock()
        self.wake = threading.Event()
        self.books: dict[str, ChunkBook] = {}
        self.latencies: list[float] = []
        self.thread: threading.Thread | None = None

    # --- the event loop's side ------------------------------------------------------------

    def open(self, db: Database, doc: dict, claim: str, provider: str, entries: Mapping[str, dict],
             dead_token_action: Callable[[Mapping], str], *, app: dict | None = None) -> ChunkBook:
        """``app``: the app's document when the run read it (its webhook is then not read again per write)."""
        loop = asyncio.get_running_loop()
        book = ChunkBook(db, doc["_id"], claim, provider, entries, list(doc["s"]), loop, dead_token_action,
                         finished=loop.create_future(), app_id=doc.get("app"),
                         webhook=outbox.READ if app is None else outbox.webhook_in(app))
        with self.lock:
            self.books[book.cid + "/" + claim] = book
            if self.thread is None:
                self.thread = threading.Thread(target=self._run, name="outcome-recorder", daemon=True)
                self.thread.start()
        return book

    def add(self, book: ChunkBook, result) -> None:
        """Queue a result (``workers.deliver.Result``, with ``index``) for the next flush."""
        with self.lock:
            book.pending.append((time.monotonic(), result))

    async def close(self, book: ChunkBook, *, release: bool = True) -> None:
        """Wait until every result is written (and the claim released); raises :class:`ClaimLost` or the write's error."""
        with self.lock:
            book.closing, book.release = True, release
        self.wake.set()
        await book.finished

    def latency(self) -> dict:
        """Seconds from a provider's answer to its outcome acknowledged in the ledger: median, p99 and max."""
        with self.lock:
            samples = sorted(self.latencies)
        if not samples:
            return {}
        return {"p50": samples[len(samples) // 2], "p99": samples[int(len(samples) * 0.99)], "max": samples[-1],
                "n": len(samples)}

    # --- the thread ----------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            self.wake.wait(self.interval)
            self.wake.clear()
            now = time.monotonic()
            with self.lock:
                due = [(key, book, book.pending, book.closing) for key, book in self.books.items()
                       if book.pending or book.closing or now - book.last_write >= self.heartbeat]
                for _, book, _, _ in due:
                    book.pending = []
            groups: dict[int, list] = {}
            for entry in due:
                groups.setdefault(id(entry[1].db), []).append(entry)
            for group in groups.values():
                try:
                    self._flush(group)
                except Exception:  # noqa: BLE001 - the thread must outlive any one flush
                    log.exception("recorder: flush of %d chunks", len(group))

    def _flush(self, group: list) -> None:
        """Write the news of several chunks: their side effects first (batched: a few round trips per flush, not per
        chunk), then all chunk updates in one bulk write."""
        prepared = self._prepare_group(group)
        if not prepared:
            return
        collection = prepared[0][1].db[mongo.LEDGER]
        db_counters.count(written=len(prepared))
        try:
            result = collection.bulk_write([update for *_, update in prepared], ordered=False)
        except ConnectionFailure as error:
            for key, book, items, _, _ in prepared:
                self._keep(key, book, items, error)
            return
        except Exception as error:  # noqa: BLE001 - handed to the chunks' runs
            log.exception("recording outcomes of %d chunks failed", len(prepared))
            for key, book, *_ in prepared:
                self._finish(key, book, error)
            return
        lost = self._lost(collection, prepared) if result.matched_count < len(prepared) else set()
        self._written(prepared, lost)

    def _prepare_group(self, group: list) -> list:
        """The group's side effects, written together, then each chunk's update; when the side effects cannot be
        written, every chunk's outcomes are kept (MongoDB away) or its run fails (Dramatiq retries the chunk)."""
        answered = [(key, book, items, closing, _answered_at(items)) for key, book, items, closing in group]
        try:
            self._side_effects(group[0][1].db, [(book, results) for _, book, _, _, results in answered if results])
        except ConnectionFailure as error:
            for key, book, items, _, _ in answered:
                self._keep(key, book, items, error)
            return []
        except Exception as error:  # noqa: BLE001 - handed to the chunks' runs
            log.exception("recording outcomes of %d chunks failed", len(group))
            for key, book, *_ in answered:
                self._finish(key, book, error)
            return []
        return [(key, book, items, closing, _update(book, results, release=closing and book.release))
                for key, book, items, closing, results in answered]

    @staticmethod
    def _lost(collection, prepared: list) -> set:
        """Some chunk is no longer held by its run (taken over after a still heartbeat): find which."""
        lost = set()
        db_counters.count()
        holders = {d["_id"]: d.get("c") for d in collection.find({"_id": {"$in": [b.cid for _, b, *_ in prepared]}}, {"c": 1})}
        for key, book, _, closing, _ in prepared:
            holder = holders.get(book.cid)
            if holder != book.claim and not (holder is None and closing and book.release):
                lost.add(key)
        return lost

    def _written(self, prepared: list, lost: set) -> None:
        """After the bulk write: finish the chunks lost or closed, note the heartbeat and the answer-to-ledger latency."""
        done = time.monotonic()
        for key, book, items, closing, _ in prepared:
            if key in lost:
                self._finish(key, book, ClaimLost(f"chunk {book.cid} is no longer held by {book.claim}"))
                continue
            book.failing_since = None
            book.last_write = done
            if items:
                waited = [done - at for at, _ in items]
                with self.lock:
                    self.latencies.extend(waited)
                    del self.latencies[:-LATENCY_SAMPLES]
                _observe(waited)
            if closing:
                with self.lock:
                    finished = not book.pending
                if finished:
                    self._finish(key, book, None)
        self._messages_done([b for k, b, *_ in prepared if k not in lost])

    @staticmethod
    def _messages_done(books: list) -> None:
        """After the write: the messages of chunks whose last open delivery it recorded may be done (outbox.message_done),
        one call per app (one webhook read)."""
        by_app: dict[tuple, list] = {}
        for book in books:
            if book.closed or any(ch in ledger.OPEN_CHARS for ch in book.states):
                continue
            book.closed = True
            by_app.setdefault((id(book.db), book.app_id), []).append(book)
        for group in by_app.values():
            try:
                known = next((book.webhook for book in group if book.webhook is not outbox.READ), outbox.READ)
                outbox.message_done(group[0].db, group[0].app_id, [book.cid.rsplit(":", 2)[0] for book in group],
                                    wanted=None if known is outbox.READ else outbox.asks_for(known, outbox.MESSAGE_DONE))
            except Exception:  # noqa: BLE001 - the next chunk's write, the expansion or the sweep tells it
                log.exception("message_done of %d chunks", len(group))

    def _keep(self, key: str, book: ChunkBook, items: list, error: BaseException) -> None:
        """MongoDB unreachable: keep the outcomes for the next flush, until ``give_up``."""
        with self.lock:
            book.pending[:0] = items
        book.failing_since = book.failing_since or time.monotonic()
        if time.monotonic() - book.failing_since > self.give_up:
            self._finish(key, book, error)
        else:
            log.warning("%d outcomes of %s kept for the next write, MongoDB unreachable: %s", len(items), book.cid, error)

    def _finish(self, key: str, book: ChunkBook, error: BaseException | None) -> None:
        with self.lock:
            self.books.pop(key, None)

        def settle() -> None:
            if book.finished.done():
                return
            if error is None:
                book.finished.set_result(None)
            else:
                book.finished.set_exception(error)

        try:
            book.loop.call_soon_threadsafe(settle)
        except RuntimeError:  # the run's event loop is gone (the worker stops): nobody waits for it
            pass

    def _side_effects(self, db: Database, news: list) -> None:
        """Deactivate dead tokens, write outcome events and dead letters (before any outcome is recorded) for every
        chunk of a flush: one deactivation per (action, reason), one webhook read and one insert per app, one insert
        of dead letters."""
        dead: dict[tuple, list] = {}
        events_by_app: dict[str, list] = {}
        webhooks: dict[str, object] = {}  # the app's webhook where a run read the app
        letters = []
        for book, results in news:
            for result in results:
                if result.state == ledger.DEAD_TOKEN:
                    action = book.dead_token_action(book.entries[str(result.delivery.entry)])
                    dead.setdefault((action, result.reason or "dead token"), []).append(result)
                elif result.state == ledger.DEAD_LETTER and result.dead_letter:
                    letters.append(dict(result.dead_letter))
            events = outbox.outcome_events(book.app_id, book.provider, results)
            if events:
                events_by_app.setdefault(book.app_id, []).extend(events)
                if book.webhook is not outbox.READ:
                    webhooks[book.app_id] = book.webhook
        for (action, reason), dead_results in dead.items():
            invalid_since = {r.delivery.device_id: r.token_invalid_since for r in dead_results if r.token_invalid_since is not None}
            db_counters.count(written=len(dead_results))
            self.dead_token_actions[action](db, [r.delivery.device_id for r in dead_results], reason, invalid_since=invalid_since)
        for app_id, events in events_by_app.items():  # before the outcomes, as the dead tokens: a kill between loses no event
            outbox.add_wanted(db, app_id, events, webhook=webhooks.get(app_id, outbox.READ))
        if letters:
            ledger.insert_ignoring_duplicates(db[mongo.DEAD_LETTERS], letters)  # natural _id: once


def _update(book: ChunkBook, results: list, *, release: bool) -> UpdateOne:
    """The chunk's update for its new results (after their side effects are written)."""
    reasons, times = {}, {}
    for result in results:
        book.states[result.index] = ledger.CHAR[result.state]
        if result.state != ledger.SENT or result.index in reasons:
            reasons[result.index] = result.reason
        if result.state in FAILURE_TIMED:
            times[result.index] = result.at
    return UpdateOne({"_id": book.cid, "c": book.claim},
                     ledger.outcome_update("".join(book.states), reasons, release_claim=release, times=times))


#: States whose time is recorded per delivery (``t``: what the failures list answers); a sent one's is its chunk's.
FAILURE_TIMED = frozenset(FAILURE_STATES)


def _answered_at(items: list) -> list:
    """The results of ``(monotonic time added, result)`` pairs, each with ``at``: that moment as a unix time."""
    offset = time.time() - time.monotonic()
    results = []
    for added, result in items:
        if getattr(result, "at", None) is None:
            result.at = added + offset
        results.append(result)
    return results


#: Buckets (seconds) of ``push_outcome_record_seconds``: from a provider's answer to its outcome in the ledger.
RECORD_BUCKETS = (0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.2, 0.5, 1.0, 5.0)


def _observe(waited: list[float]) -> None:
    from shared import metrics

    if metrics.multiprocess_dir() is None:
        return
    try:
        histogram = metrics._histogram("push_outcome_record_seconds", "From a provider's answer to its outcome acknowledged in the ledger.",
                                       (), RECORD_BUCKETS)
        for seconds in waited:
            histogram.observe(seconds)
    except Exception:  # noqa: BLE001 - metrics never break the work they measure
        pass
