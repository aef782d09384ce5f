"""Campaign users in order (shared.db.campaign_users_after) and open chunks found by their flag, on the real nx-27017."""
from __future__ import annotations

import time
import uuid

import pymongo
import pytest

from shared import db as mongo
from shared import ledger
from shared.broker import make_broker
from shared.commands import Publisher, command
from shared.settings import load
from workers import campaigns


@pytest.fixture
def scratch(stack):
    """The stack's database (nx-27017's databases share their collections: no database of its own); the test's
    campaign ids are its own, and their users are deleted after."""
    db = pymongo.MongoClient(stack.mongo_uri)["push"]
    mongo.ensure_indexes(db)
    made: list[str] = []
    yield db, made
    db[mongo.CAMPAIGN_USERS].delete_many({"c": {"$in": made}})


def test_users_after_reads_in_order_and_only_the_campaigns_own(scratch):
    scratch, made = scratch
    mine, other = f"c-{uuid.uuid4().hex[:6]}", f"d-{uuid.uuid4().hex[:6]}"
    made += [mine, other]
    users = [f"u{i:05d}" for i in range(53)]
    scratch[mongo.CAMPAIGN_USERS].insert_many(
        [{"_id": campaigns.user_doc_id(mine, u), "c": mine, "u": u} for u in reversed(users)]
        + [{"_id": campaigns.user_doc_id(other, u), "c": other, "u": u} for u in ["u00003a", "zz"]])
    first = mongo.campaign_users_after(scratch, mine, "", 30)
    assert first == users[:30]
    assert mongo.campaign_users_after(scratch, mine, first[-1], 100) == users[30:]
    assert mongo.campaign_users_after(scratch, mine, users[-1], 10) == []


def test_open_chunks_are_found_whatever_nx_reads_their_flag_back_as(scratch):
    """The campaign's pacing and its end check look for open chunks by ``o: True``; nx-27017 reads a ``$set`` boolean
    back as 1: a chunk reopened by a flush must still count (shared/ledger.py ``has_open``, workers/campaigns.py
    ``paced``)."""
    scratch, made = scratch
    campaign_id = f"c-{uuid.uuid4().hex[:6]}"
    items = [ledger.Delivery(ledger.delivery_id(campaign_id, 0, f"t{i}"), f"a:t{i}", f"t{i}", 0, None) for i in range(4)]
    docs = [ledger.chunk_document(campaign_id, "a", "apns", i, [item], now=time.time(), kind=ledger.CAMPAIGN_KIND)
            for i, item in enumerate(items)]
    ledger.insert_chunks(scratch, docs)
    chunks = scratch[mongo.LEDGER]
    try:
        chunks.update_many({"m": campaign_id}, {"$set": {"o": False}})
        assert not ledger.has_open(scratch, campaign_id)
        chunks.update_one({"_id": docs[2]["_id"]}, {"$set": {"o": True}})  # reopened: nx-27017 keeps a 1
        assert ledger.has_open(scratch, campaign_id)
        settings = load(queue_prefix=f"users-{uuid.uuid4().hex[:8]}-")  # a prefix no worker consumes
        publisher = Publisher(make_broker(settings, set_global=False), settings)
        job = command("campaign.send", campaign_id=campaign_id)
        assert campaigns.paced(scratch, publisher, job, campaign_id, 1, 2) is False, "one open chunk of 1 is under 2"
        chunks.update_one({"_id": docs[3]["_id"]}, {"$set": {"o": True}})
        assert campaigns.paced(scratch, publisher, job, campaign_id, 1, 2) is True, "two open chunks of 1: it comes back later"
    finally:
        chunks.delete_many({"m": campaign_id})
        scratch[mongo.LEDGER_DEVICES].delete_many({"m": campaign_id})
