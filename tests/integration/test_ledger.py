"""The delivery ledger (shared/ledger.py) on the real database, and the old format still delivered (rolling upgrade)."""
from __future__ import annotations

import asyncio
import time
import uuid

import pymongo
import pytest

from shared import db as mongo
from shared import ledger
from shared.broker import make_broker
from shared.commands import DELIVER_ACTOR_BY_PROVIDER, Publisher, new_id
from shared.settings import load
from tests import ledger_view
from tests.commands_seen import CommandsSeen
from tests.integration.conftest import apns_token, fcm_token
from tests.waiting import wait_for
from workers.deliver import Result
from workers.expand import chunk_payload
from workers.recorder import ClaimLost, Recorder


@pytest.fixture(scope="module")
def database(stack):
    return pymongo.MongoClient(stack.mongo_uri, tz_aware=True)["push"]


def deliveries(message_id: str, n: int) -> list[ledger.Delivery]:
    return [ledger.Delivery(ledger.delivery_id(message_id, 0, f"tok{i}"), f"app:tok{i}", f"tok{i}", 0, None) for i in range(n)]


def new_chunk(database, n: int = 3) -> dict:
    message_id = new_id()
    (doc,) = ledger.write_chunks(database, message_id, "app", "apns", deliveries(message_id, n), chunk_size=500)
    return doc


def test_a_chunk_written_twice_is_one_document(database):
    message_id = new_id()
    size = ledger.INLINE_DEVICES + 1
    items = deliveries(message_id, 2 * size + 1)
    ledger.write_chunks(database, message_id, "app", "fcm", items, chunk_size=size)
    ledger.write_chunks(database, message_id, "app", "fcm", items, chunk_size=size)
    docs = list(database[mongo.LEDGER].find({"m": message_id}).sort("i", 1))
    assert [d["_id"] for d in docs] == [ledger.chunk_id(message_id, "fcm", i) for i in range(3)]
    assert [d["s"] for d in docs] == ["p" * size, "p" * size, "p"]
    # The device lists of the two large chunks live apart, written once: an outcome flush rewrites only the small
    # state document. The last chunk (one delivery) keeps its list: one insert, and its claim reads it back.
    assert ["d" in d for d in docs] == [False, False, True]
    devices = list(database[mongo.LEDGER_DEVICES].find({"m": message_id}).sort("_id", 1))
    assert [d["_id"] for d in devices] == [d["_id"] for d in docs[:2]] and [len(d["d"]) for d in devices] == [size, size]
    assert [r["_id"] for r in ledger.rows(database, [message_id])] == [d.id for d in items]


def test_a_small_chunk_is_claimed_with_its_deliveries_in_one_round_trip(stack, database):
    """A transactional send's chunk: one insert, and its claim answers the device list too (no ``ledger_devices``)."""
    message_id = new_id()
    items = deliveries(message_id, ledger.INLINE_DEVICES)
    seen = CommandsSeen()
    counted = pymongo.MongoClient(stack.mongo_uri, event_listeners=[seen])[database.name]
    (doc,) = ledger.write_chunks(counted, message_id, "app", "apns", items, chunk_size=500)
    claimed, _ = ledger.claim(counted, doc["_id"], "run-a", None)
    assert seen.names == [f"insert {mongo.LEDGER}", f"findAndModify {mongo.LEDGER}"]
    assert [d.id for d in ledger.deliveries_of(claimed)] == [d.id for d in items]


def test_a_held_chunk_is_taken_over_only_after_its_heartbeat_stood_still(database):
    doc = new_chunk(database)
    first, _ = ledger.claim(database, doc["_id"], "run-a", None)
    assert first is not None and first["c"] == "run-a"
    mine, found = ledger.claim(database, doc["_id"], "run-b", None)
    assert mine is None and found["c"] == "run-a"
    seen = ledger.LeaseWatch.seen(found)
    # The holder is alive: its heartbeat moved since run-b looked.
    database[mongo.LEDGER].update_one({"_id": doc["_id"]}, {"$inc": {"hb": 1}})
    mine, found = ledger.claim(database, doc["_id"], "run-b", seen)
    assert mine is None and found["c"] == "run-a"
    # Still for a whole lease (the re-enqueued message came back and saw the same pair): taken over.
    mine, _ = ledger.claim(database, doc["_id"], "run-b", ledger.LeaseWatch.seen(found))
    assert mine is not None and mine["c"] == "run-b"
    # The old holder's outcome write no longer lands.
    update = ledger.outcome_update("sss", {})
    assert database[mongo.LEDGER].update_one({"_id": doc["_id"], "c": "run-a"}, update).matched_count == 0


def test_the_recorder_deactivates_dead_tokens_before_it_records_them_and_releases_the_claim(database):
    doc = new_chunk(database, 3)
    claimed, _ = ledger.claim(database, doc["_id"], "run-r", None)
    seen_when_deactivating = []

    def deactivate(db, device_ids, reason, *, invalid_since=None):
        seen_when_deactivating.append((device_ids, db[mongo.LEDGER].find_one({"_id": doc["_id"]})["s"]))

    recorder = Recorder({"device": deactivate}, heartbeat=1.0)
    items = ledger.deliveries_of(claimed)

    async def run():
        book = recorder.open(database, claimed, "run-r", "apns", {"0": {}}, lambda entry: "device")
        recorder.add(book, Result(items[0], ledger.SENT, index=0))
        recorder.add(book, Result(items[1], ledger.DEAD_TOKEN, "Unregistered", index=1))
        recorder.add(book, Result(items[2], ledger.RETRY, "503", index=2))
        await recorder.close(book)

    asyncio.run(run())
    assert seen_when_deactivating == [([items[1].device_id], "ppp")]  # deactivated while nothing was recorded yet
    after = database[mongo.LEDGER].find_one({"_id": doc["_id"]})
    assert after["s"] == "sdr" and after["c"] is None and after["o"] in (True, 1)
    assert after["r"] == {"1": "Unregistered", "2": "503"}
    assert recorder.latency()["n"] == 3


def test_one_flush_writes_the_side_effects_of_all_its_chunks_together(database):
    """Twenty chunks each with a dead token, answered within one flush: one deactivation call for all of them (one
    round trip per reason, not one per chunk: under load per-chunk calls made each flush last 100-300 ms), and every
    chunk's outcome recorded after it."""
    docs = [new_chunk(database, 2) for _ in range(20)]
    claimed = [ledger.claim(database, doc["_id"], "run-g", None)[0] for doc in docs]
    calls = []

    def deactivate(db, device_ids, reason, *, invalid_since=None):
        calls.append((sorted(device_ids), reason, {d["s"] for d in db[mongo.LEDGER].find({"_id": {"$in": [c["_id"] for c in claimed]}})}))

    recorder = Recorder({"device": deactivate}, heartbeat=1.0, interval=0.2)

    async def run():
        books = [recorder.open(database, doc, "run-g", "apns", {"0": {}}, lambda entry: "device") for doc in claimed]
        for book, doc in zip(books, claimed, strict=True):
            first, second = ledger.deliveries_of(doc)
            recorder.add(book, Result(first, ledger.SENT, index=0))
            recorder.add(book, Result(second, ledger.DEAD_TOKEN, "Unregistered", index=1))
        await asyncio.gather(*(recorder.close(book) for book in books))

    asyncio.run(run())
    expected = sorted(ledger.deliveries_of(doc)[1].device_id for doc in claimed)
    assert calls == [(expected, "Unregistered", {"pp"})]  # one call, made while nothing was recorded yet
    assert {d["s"] for d in database[mongo.LEDGER].find({"_id": {"$in": [c["_id"] for c in claimed]}})} == {"sd"}


def test_a_run_that_read_its_app_tells_the_outcome_feed_without_reading_the_app_again(stack, database):
    """The delivery actor reads the app once per chunk; the recorder takes its webhook from that read (a read of
    ``apps`` per flush and per finished chunk was three reads of one document for each SYNCHRONOUS send)."""
    from shared import outbox

    doc = new_chunk(database, 2)
    seen = CommandsSeen()
    counted = pymongo.MongoClient(stack.mongo_uri, event_listeners=[seen])[database.name]
    claimed, _ = ledger.claim(counted, doc["_id"], "run-w", None)
    items = ledger.deliveries_of(claimed)
    app = {"_id": "app", "webhook": {"url": "https://hooks.example/outcomes", "events": [outbox.FAILED]}}
    recorder = Recorder({"device": lambda *a, **k: None}, heartbeat=1.0)

    async def run():
        book = recorder.open(counted, claimed, "run-w", "apns", {"0": {}}, lambda entry: "device", app=app)
        recorder.add(book, Result(items[0], ledger.SENT, index=0))
        recorder.add(book, Result(items[1], ledger.FAILED, "BadDeviceToken", index=1))
        await recorder.close(book)

    asyncio.run(run())
    assert database[outbox.OUTBOX].find_one({"_id": f"{outbox.FAILED}:{items[1].id}"}) is not None
    assert not [name for name in seen.names if name == f"find {mongo.APPS}"], seen.names


def test_each_failure_keeps_the_time_of_its_answer_not_of_its_chunks_last_write(database):
    """Two failures of one chunk recorded by two flushes half a second apart: the failures list answers each one's time."""
    from shared.failures import failures

    doc = new_chunk(database, 3)
    claimed, _ = ledger.claim(database, doc["_id"], "run-t", None)
    recorder = Recorder({"device": lambda *a, **k: None}, heartbeat=1.0)
    items = ledger.deliveries_of(claimed)
    answered = []

    async def run():
        book = recorder.open(database, claimed, "run-t", "apns", {"0": {}}, lambda entry: "device")
        answered.append(time.time())
        recorder.add(book, Result(items[0], ledger.FAILED, "BadDeviceToken", index=0))
        await asyncio.sleep(0.6)  # written by an earlier flush than the next ones
        answered.append(time.time())
        recorder.add(book, Result(items[1], ledger.DEAD_TOKEN, "Unregistered", index=1))
        recorder.add(book, Result(items[2], ledger.SENT, index=2))
        await asyncio.sleep(0.6)
        await recorder.close(book)

    asyncio.run(run())
    total, listed = failures(database, [doc["m"]], 0, 10)
    assert total == 2
    at = {f["reason"]: f["at"].timestamp() for f in listed}
    assert abs(at["BadDeviceToken"] - answered[0]) < 0.05 and abs(at["Unregistered"] - answered[1]) < 0.05
    assert database[mongo.LEDGER].find_one({"_id": doc["_id"]})["u"] - at["Unregistered"] > 0.4  # not the chunk's last write


def test_the_recorder_says_when_its_claim_was_lost(database):
    doc = new_chunk(database, 1)
    claimed, _ = ledger.claim(database, doc["_id"], "run-x", None)
    database[mongo.LEDGER].update_one({"_id": doc["_id"]}, {"$set": {"c": "run-y"}})
    recorder = Recorder({}, heartbeat=1.0)

    async def run():
        book = recorder.open(database, claimed, "run-x", "apns", {"0": {}}, lambda entry: "device")
        recorder.add(book, Result(ledger.deliveries_of(claimed)[0], ledger.SENT, index=0))
        await recorder.close(book)

    with pytest.raises(ClaimLost):
        asyncio.run(run())
    assert database[mongo.LEDGER].find_one({"_id": doc["_id"]})["s"] == "p"


def test_a_free_chunk_changes_by_compare_and_set_and_a_held_one_not(database):
    doc = new_chunk(database, 2)
    assert ledger.change_free_chunk(database, doc["_id"], {1: (ledger.FAILED, "gone")}, only_from=ledger.OPEN_CHARS) == [1]
    assert ledger.change_free_chunk(database, doc["_id"], {1: (ledger.RETRY, "again")}, only_from="l") == []
    ledger.claim(database, doc["_id"], "run-h", None)
    assert ledger.change_free_chunk(database, doc["_id"], {0: (ledger.FAILED, "gone")}, only_from=ledger.OPEN_CHARS) == []
    assert database[mongo.LEDGER].find_one({"_id": doc["_id"]})["s"] == "pf"


def test_retention_purges_old_chunks_and_keeps_the_messages_counts(database):
    message_id = new_id()
    database[mongo.MESSAGES].insert_one({"_id": message_id, "expanded": True, "totals": {"apns": 3, "fcm": 0},
                                               "chunks": {"apns": 1, "fcm": 0}})
    old = time.time() - 8 * 86400
    (doc,) = ledger.write_chunks(database, message_id, "app", "apns", deliveries(message_id, 3), chunk_size=500, now=old)
    database[mongo.LEDGER].update_one({"_id": doc["_id"]}, {"$set": {"s": "sfs", "o": False}})
    fresh = new_chunk(database)

    done = ledger.purge(database, retention_days=7)
    assert done["messages"] >= 1 and done["chunks"] >= 1
    assert database[mongo.LEDGER].find_one({"_id": doc["_id"]}) is None
    assert database[mongo.LEDGER_DEVICES].find_one({"_id": doc["_id"]}) is None
    assert database[mongo.LEDGER].find_one({"_id": fresh["_id"]}) is not None
    message = database[mongo.MESSAGES].find_one({"_id": message_id})
    counts = ledger.counts_of_messages(database, [message])[message_id]
    assert counts["apns"] == {ledger.SENT: 2, ledger.FAILED: 1}


def test_an_old_format_chunk_queued_before_the_upgrade_is_delivered_as_before(api, new_app, stack, apns_sim, fcm_sim):
    """Rolling upgrade: rows in ``deliveries`` and a deliver message of ``Delivery.as_list()`` lists (workers/deliver_v1.py)."""
    app_id = new_app()
    database = pymongo.MongoClient(stack.mongo_uri)["push"]
    message_id = f"old-{uuid.uuid4().hex[:8]}"
    tokens = {"apns": [apns_token(), apns_token()], "fcm": [fcm_token()]}
    database[mongo.MESSAGES].insert_one({"_id": message_id, "app_id": app_id, "kind": "push", "mode": "ASYNCHRONOUS",
                                               "expanded": True, "totals": {"apns": 2, "fcm": 1}, "total": 3})
    entry = {"user_id": "u", "activation_id": None, "personal": False, "silent": False, "high_priority": True, "body": {"title": "old"}}
    settings = load(queue_prefix=stack.queue_prefix)
    publisher = Publisher(make_broker(settings, set_global=False), settings)
    for platform, platform_tokens in tokens.items():
        items = [ledger.Delivery(ledger.delivery_id(message_id, 0, t), f"{app_id}:{t}", t, 0, None) for t in platform_tokens]
        database[mongo.DELIVERIES].insert_many(
            [{"_id": d.id, "message_id": message_id, "platform": platform, "device_id": d.device_id, "state": "pending",
              "ps": f"{platform}:pending"} for d in items]
        )
        chunk = chunk_payload(message_id, app_id, {"0": entry}, items, first_attempt_at=time.time())
        publisher.publish(DELIVER_ACTOR_BY_PROVIDER[platform], chunk)
        publisher.publish(DELIVER_ACTOR_BY_PROVIDER[platform], chunk)  # published twice: sent once

    wait_for(lambda: len(ledger_view.rows(database, message_id, "sent")) == 3, what="old-format deliveries sent")
    detail = api.get(f"/push/message/{message_id}/detail").json()["responseObject"]["result"]
    assert (detail["apns"]["sent"], detail["fcm"]["sent"]) == (2, 1)
    time.sleep(1)
    sims = {"apns": apns_sim, "fcm": fcm_sim}
    for platform, platform_tokens in tokens.items():
        for token in platform_tokens:
            assert sims[platform].delivered(token) == 1, token
