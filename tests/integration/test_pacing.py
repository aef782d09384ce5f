"""The bound per app on open deliveries of bulk sends (shared/pacing.py), on the real database and broker.

A stack of this module's own, and the broker on a queue prefix no worker consumes: what the pacer publishes is
counted there, not run.
"""
from __future__ import annotations

import time
import uuid

import pika
import pymongo
import pytest

from shared import backlog, halt, ledger, pacing, queue_cap
from shared import db as mongo
from shared.broker import connection_parameters, make_broker
from shared.commands import EXPAND, Publisher, command, queue_name_for_prefix
from shared.settings import load
from tests.integration.conftest import TEST_SETTINGS
from tests.stacks import running_stack

BOUND = 1_000


@pytest.fixture(scope="module")
def pacing_stack(tmp_path_factory):
    """A stack of its own whose workers run no pacer (bound 0): what the pacer finds and releases here is the test's.
    (nx-27017 keeps one namespace of collections for every database name: README "nx-27017's gaps".)"""
    with running_stack(tmp_path_factory.mktemp("pacing"), "pacing", {**TEST_SETTINGS, "PUSH_APP_BULK_DELIVERIES_AHEAD": "0"}) as stack:
        yield stack


@pytest.fixture
def database(pacing_stack):
    """The stack's database, with no send waiting from an earlier test."""
    db = pymongo.MongoClient(pacing_stack.mongo_uri, tz_aware=True)["push"]
    db[pacing.PACED_SENDS].delete_many({})
    db[pacing.PACED_COMMANDS].delete_many({})
    return db


@pytest.fixture
def quiet_queue():
    """A publisher to a prefix of its own, and a count of what waits on its expand queue."""
    prefix = f"pacing-{uuid.uuid4().hex[:8]}-"
    settings = load(queue_prefix=prefix)
    publisher = Publisher(make_broker(settings, set_global=False), settings)

    def published() -> int:
        connection = pika.BlockingConnection(connection_parameters(settings.amqp_url))
        try:
            channel = connection.channel()
            return channel.queue_declare(queue_name_for_prefix(prefix, EXPAND), passive=True).method.message_count
        finally:
            connection.close()

    return publisher, published


def new_app() -> str:
    return f"pace-{uuid.uuid4().hex[:8]}"


def open_chunks(database, app_id: str, deliveries: int, **kind) -> None:
    """Open chunks of ``deliveries`` pending deliveries of one message of the app (bulk unless ``lane``), inserted now (the
    stack's retention purge takes chunks inserted long ago)."""
    message_id = f"m-{uuid.uuid4().hex[:8]}"
    items = [ledger.Delivery(ledger.delivery_id(message_id, 0, f"t{i}"), f"{app_id}:t{i}", f"t{i}", 0, None) for i in range(deliveries)]
    docs = [ledger.chunk_document(message_id, app_id, "apns", n, items[start:start + 500], now=time.time(), **kind)
            for n, start in enumerate(range(0, deliveries, 500))]
    ledger.insert_chunks(database, docs)


def batch(app_id: str, entries: int) -> dict:
    return command("batch", app_id=app_id, mode="ASYNCHRONOUS", entries=[{"user_id": f"u{i}"} for i in range(entries)])


def test_only_an_apps_own_open_bulk_send_deliveries_count(database):
    app_id, other = new_app(), new_app()
    open_chunks(database, app_id, 700)
    open_chunks(database, app_id, 5_000, kind=ledger.CAMPAIGN_KIND)  # a campaign paces itself
    open_chunks(database, app_id, 3_000, lane="tx")  # the transactional lane is never held
    open_chunks(database, other, 2_000)
    assert pacing.open_send_deliveries(database, app_id) == 700
    assert pacing.park_if_over(database, batch(app_id, 10), BOUND) is False
    open_chunks(database, app_id, 300)
    assert pacing.park_if_over(database, batch(app_id, 10), BOUND) is True
    assert pacing.park_if_over(database, command("send", app_id=app_id, lane="tx", entries=[{}]), BOUND) is False
    assert pacing.park_if_over(database, batch(app_id, 10), 0) is False, "bound 0: no pacing"


def test_a_parked_send_waits_once_and_later_sends_queue_behind_it(database):
    app_id = new_app()
    open_chunks(database, app_id, BOUND)
    first = batch(app_id, 40)
    assert pacing.park_if_over(database, first, BOUND)
    assert pacing.park_if_over(database, first, BOUND), "a redelivered command still waits"
    assert database[pacing.PACED_SENDS].count_documents({"app": app_id}) == 1
    assert database[pacing.PACED_COMMANDS].count_documents({"_id": first["id"]}) == 1
    database[mongo.LEDGER].update_many({"app": app_id}, {"$set": {"o": False}})  # its open work is done
    assert pacing.park_if_over(database, batch(app_id, 1), BOUND), "a send must not overtake one waiting before it"
    assert queue_cap.waiting_by_app(database)[app_id] == 41, "waiting sends count against the cap of queued work"
    (row,) = [r for r in backlog.compute(database) if r.app == app_id]
    assert (row.provider, row.paced, row.waiting) == (backlog.NO_PROVIDER, 41, 0) and row.oldest_waiting_seconds >= 0


def test_the_pacer_releases_the_oldest_sends_into_the_room_and_each_once(database, quiet_queue):
    publisher, published = quiet_queue
    app_id = new_app()
    open_chunks(database, app_id, BOUND)
    sends = [batch(app_id, 300) for _ in range(5)]
    for send in sends:
        assert pacing.park_if_over(database, send, BOUND)
    assert pacing.release(database, publisher, BOUND) == 0, "no room yet"

    database[mongo.LEDGER].update_many({"app": app_id}, {"$set": {"o": False}})
    open_chunks(database, app_id, 400)  # room: 600, i.e. two sends of 300
    assert pacing.release(database, publisher, BOUND) == 2
    released = {d["_id"] for d in database[pacing.PACED_SENDS].find({"app": app_id, "released_at": {"$ne": None}})}
    assert released == {sends[0]["id"], sends[1]["id"]}, "the oldest go first"
    assert pacing.release(database, publisher, BOUND) == 0, "released sends not expanded yet still take their room"
    assert published() == 2
    payload = database[pacing.PACED_COMMANDS].find_one({"_id": sends[0]["id"]})["payload"]
    assert payload["paced"] is True and pacing.park_if_over(database, payload, BOUND) is False, "a released send does not wait again"

    pacing.expanded(database, payload, BOUND)
    assert database[pacing.PACED_SENDS].find_one({"_id": sends[0]["id"]}) is None
    assert database[pacing.PACED_COMMANDS].find_one({"_id": sends[0]["id"]}) is None
    now = database[pacing.PACED_SENDS].find_one({"_id": sends[1]["id"]})["released_at"] + pacing.RELEASED_COUNTS_SECONDS + 1
    assert pacing.release(database, publisher, BOUND, now=now) == 2, "a release whose expansion never came stops taking room"
    assert published() == 4


def test_expansions_running_at_once_count_each_other(database):
    """Each send registers before it counts: three sends of 200 at 700 open with a bound of 1,000 let two go (the
    second counts the first's 200), not all three, and the third waits; the first's end frees its room."""
    app_id = new_app()
    open_chunks(database, app_id, 700)
    first, second, third = (batch(app_id, 200) for _ in range(3))
    assert pacing.park_if_over(database, first, BOUND) is False
    assert pacing.park_if_over(database, second, BOUND) is False
    assert pacing.park_if_over(database, third, BOUND) is True
    assert pacing.park_if_over(database, first, BOUND) is False, "a redelivered command of a send being expanded goes on"
    pacing.expanded(database, first, BOUND)
    pacing.expanded(database, second, BOUND)
    assert [d["_id"] for d in database[pacing.PACED_SENDS].find({"app": app_id})] == [third["id"]]


def test_a_release_whose_expansion_never_ended_is_released_again_and_a_stale_registration_goes(database, quiet_queue):
    """A pacer killed between its compare-and-set and its publish (or an expansion that failed) loses no send: after
    RELEASE_AGAIN_SECONDS the send waits again and is released once more; a registration (its command is still in
    RabbitMQ) is dropped."""
    publisher, published = quiet_queue
    app_id = new_app()
    registered = batch(app_id, 10)
    assert pacing.park_if_over(database, registered, BOUND) is False
    open_chunks(database, app_id, BOUND)
    waited = batch(app_id, 10)
    assert pacing.park_if_over(database, waited, BOUND) is True
    database[mongo.LEDGER].update_many({"app": app_id}, {"$set": {"o": False}})
    assert pacing.release(database, publisher, BOUND) == 1
    later = database[pacing.PACED_SENDS].find_one({"_id": waited["id"]})["released_at"] + pacing.RELEASE_AGAIN_SECONDS + 1
    assert pacing.release(database, publisher, BOUND, now=later) == 0, "it waits again first"
    assert database[pacing.PACED_SENDS].find_one({"_id": registered["id"]}) is None
    assert pacing.release(database, publisher, BOUND, now=later + 1) == 1
    assert database[pacing.PACED_SENDS].find_one({"_id": waited["id"]})["tries"] == 1
    assert published() == 2


def test_a_cancelled_waiting_send_is_released_at_once_and_takes_no_room(database, quiet_queue):
    """Its expansion records it cancelled (nothing is sent): it must not wait for room behind the app's open work."""
    publisher, published = quiet_queue
    app_id = new_app()
    open_chunks(database, app_id, BOUND)
    kept, cancelled = batch(app_id, 300), batch(app_id, 300)
    assert pacing.park_if_over(database, kept, BOUND) and pacing.park_if_over(database, cancelled, BOUND)
    halt.set_state(database, command("halt.set", message_id=cancelled["id"], app_id=app_id, state=halt.CANCELLED))
    assert pacing.release(database, publisher, BOUND) == 1, "no room: only the cancelled send goes"
    assert database[pacing.PACED_SENDS].find_one({"_id": kept["id"]})["released_at"] is None
    assert published() == 1
    database[mongo.LEDGER].update_many({"app": app_id}, {"$set": {"o": False}})
    open_chunks(database, app_id, BOUND - 300)
    assert pacing.release(database, publisher, BOUND) == 1, "the cancelled send's 300 entries took none of the room"
    assert published() == 2
