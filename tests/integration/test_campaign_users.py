"""Reading a campaign's users in pages (workers.campaigns.users_after) against the real nx-27017."""
from __future__ import annotations

import uuid

import pymongo
import pytest

from shared import db as mongo
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


def test_users_after_reads_in_pages_in_order_and_only_the_campaigns_own(scratch, monkeypatch):
    scratch, made = scratch
    mine, other = f"c-{uuid.uuid4().hex[:6]}", f"d-{uuid.uuid4().hex[:6]}"
    made += [mine, other]
    users = [f"u{i:05d}" for i in range(53)]
    scratch[mongo.CAMPAIGN_USERS].insert_many(
        [{"_id": campaigns.user_doc_id(mine, u), "c": mine, "u": u} for u in reversed(users)]
        + [{"_id": campaigns.user_doc_id(other, u), "c": other, "u": u} for u in ["u00003a", "zz"]])
    monkeypatch.setattr(campaigns, "USERS_PER_READ", 7)
    reads = []
    find = scratch[mongo.CAMPAIGN_USERS].find

    class Counting:
        def __getitem__(self, name):
            collection = scratch[name]
            if name == mongo.CAMPAIGN_USERS:
                collection.find = lambda *a, **k: reads.append(a) or find(*a, **k)
            return collection

    first = campaigns.users_after(scratch, mine, "", 30)
    assert first == users[:30]
    rest = campaigns.users_after(scratch, mine, first[-1], 100)
    assert rest == users[30:]
    assert campaigns.users_after(scratch, mine, users[-1], 10) == []
    counted = Counting()
    assert campaigns.users_after(counted, mine, "", 30) == users[:30]
    assert len(reads) == 5  # 7 + 7 + 7 + 7 + 2: no read of more than USERS_PER_READ
