"""(Old format, workers/deliver_v1.py) Outcomes survive MongoDB going away mid-chunk (tests/faults: nx-27017 SIGKILLed during a send)."""
from __future__ import annotations

import asyncio

from pymongo.errors import AutoReconnect

from workers import deliver_v1 as deliver
from workers.deliver import Result
from workers.deliver_v1 import Recorder
from workers.expand import Delivery


class FlakyCollection:
    def __init__(self, failures: int):
        self.failures = failures
        self.writes = []

    def bulk_write(self, operations, ordered=False):
        if self.failures:
            self.failures -= 1
            raise AutoReconnect("connection closed")
        self.writes.append(operations)

    def update_many(self, query, update):
        self.writes.append(("update_many", query))


class FlakyDb(dict):
    def __missing__(self, name):
        return self.setdefault(name, FlakyCollection(0))


def result(n: int, state: str = "sent") -> Result:
    return Result(Delivery(f"m:0:t{n}", f"app:t{n}", f"t{n}", 0, None), state, None if state == "sent" else "Unregistered")


def test_outcomes_not_written_while_mongodb_is_away_are_kept_and_written_once_it_is_back(monkeypatch):
    monkeypatch.setattr(deliver, "RECORD_RETRY_PAUSE_SECONDS", 0)
    db = FlakyDb()
    deliveries = db["deliveries"] = FlakyCollection(failures=3)
    recorder = Recorder(db, "claim", "apns", {"0": {}})
    recorder.add(result(1))

    asyncio.run(recorder.flush())
    assert recorder.pending and not deliveries.writes  # kept, not dropped

    recorder.add(result(2, "dead_token"))
    asyncio.run(recorder.flush_all())
    assert not recorder.pending
    assert len(deliveries.writes) == 1
    written = {i for op in deliveries.writes[0] for i in op._filter["_id"]["$in"]}
    assert written == {"m:0:t1", "m:0:t2"}
    # The dead token's registration was deactivated (before the outcome was written).
    assert db["devices"].writes
