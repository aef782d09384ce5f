"""SYNCHRONOUS sends waiting for their outcome: one waiter per API process reads them all together.

A SYNCHRONOUS send (``/push/message/send`` without ``mode``) answers once
every delivery of its message has an outcome. Each request used to poll
MongoDB on its own every 2–20 ms, and held one of the process's few Flask
threads while it did: 16 threads and 0.2 s of waiting capped the API at 80
such sends a second. Now a waiting request blocks its own thread on an event
(the RSGI app's pool has ``api_sync_waiters`` threads for them besides
``api_threads``), and one thread of the process reads the counts of every
outstanding message that is due with one call (``counts_many``:
:meth:`api.services.Services.message_counts_many`), waking each request whose
message is done, failed or out of time. A message is read again after 2 ms,
then after pauses doubling to 20 ms, as one request's own poll was.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

#: First and longest pause before a message's counts are read again (seconds), as one request's poll
#: backed off: a message just sent is read soon, one that takes long less often.
FIRST_CHECK_SECONDS = 0.002
LONGEST_CHECK_SECONDS = 0.02
#: Most message ids read in one call (a larger set is read in several).
IDS_PER_READ = 500


class WaiterFull(Exception):
    """Every waiting place of this process is taken: the caller answers without waiting."""


class _Waiting:
    """One request's wait: woken with the last counts read, or the read's error."""

    __slots__ = ("deadline", "done", "counts", "error")

    def __init__(self, deadline: float):
        self.deadline = deadline
        self.done = threading.Event()
        self.counts: dict | None = None
        self.error: BaseException | None = None


def finished(counts: dict | None) -> bool:
    """Whether every delivery of a message has an outcome (counts as ``message_counts`` answers them)."""
    return counts is not None and all(c["pending"] == 0 for c in counts.values())


class _Message:
    """A message some requests wait for: their entries, and when its counts are read next."""

    __slots__ = ("entries", "due", "pause")

    def __init__(self, now: float, pause: float):
        self.entries: list[_Waiting] = []
        self.pause = pause
        self.due = now + pause


class OutcomeWaiter:
    """Waits for many messages' outcomes: each round reads every message that is due in one call.

    Parameters:
      counts_many: ``ids -> {id: counts | None}``, the counts of several messages in one call.
      capacity: most requests waiting at once (:class:`WaiterFull` beyond).
      first / longest: the first and longest pause before a message is read again (doubling in between).
    """

    def __init__(self, counts_many: Callable[[list[str]], dict], *, capacity: int,
                 first: float = FIRST_CHECK_SECONDS, longest: float = LONGEST_CHECK_SECONDS):
        self.counts_many = counts_many
        self.capacity = capacity
        self.first = first
        self.longest = longest
        self.lock = threading.Lock()
        self.wanted = threading.Condition(self.lock)
        self.waiting: dict[str, _Message] = {}
        self.count = 0
        self.thread: threading.Thread | None = None

    def wait(self, message_id: str, timeout: float) -> dict | None:
        """Block until the message is finished or ``timeout`` passes; answer its last counts (None: not expanded yet).

        Raises the read's error when reading failed, and :class:`WaiterFull` when no place is free.
        """
        now = time.monotonic()
        entry = _Waiting(now + timeout)
        with self.lock:
            if self.count >= self.capacity:
                raise WaiterFull(message_id)
            message = self.waiting.get(message_id)
            if message is None:
                message = self.waiting[message_id] = _Message(now, self.first)
            message.entries.append(entry)
            self.count += 1
            if self.thread is None:
                self.thread = threading.Thread(target=self._run, name="outcome-waiter", daemon=True)
                self.thread.start()
            self.wanted.notify()
        # The reading thread wakes every entry by its deadline; the margin covers one slow read.
        entry.done.wait(timeout + self.longest + 5.0)
        if entry.error is not None:
            raise entry.error
        return entry.counts

    def _run(self) -> None:
        while True:
            with self.lock:
                while not self.waiting:
                    self.wanted.wait()
                now = time.monotonic()
                due = [i for i, m in self.waiting.items() if m.due <= now]
                if not due:
                    pause = min(m.due for m in self.waiting.values()) - now
                    self.wanted.wait(pause)
                    continue
            counts, error = {}, None
            try:
                for start in range(0, len(due), IDS_PER_READ):
                    counts.update(self.counts_many(due[start:start + IDS_PER_READ]))
            except Exception as failure:  # noqa: BLE001 - handed to every waiting request (a 503 there)
                log.warning("reading the outcomes of %d messages failed: %s", len(due), failure)
                error = failure
            self._settle(due, counts, error)

    def _settle(self, ids: list[str], counts: dict, error: BaseException | None) -> None:
        now = time.monotonic()
        with self.lock:
            for message_id in ids:
                message = self.waiting.get(message_id)
                if message is None:
                    continue
                done = error is None and finished(counts.get(message_id))
                keep = []
                for entry in message.entries:
                    entry.counts = counts.get(message_id, entry.counts)
                    if done or error is not None or now >= entry.deadline:
                        entry.error = error
                        entry.done.set()
                        self.count -= 1
                    else:
                        keep.append(entry)
                if keep:
                    message.entries = keep
                    message.pause = min(message.pause * 2, self.longest)
                    message.due = now + message.pause
                else:
                    del self.waiting[message_id]
