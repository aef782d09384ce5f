"""Reading a campaign's users in pages (workers.campaigns.users_after) against the real nx-27017."""
from __future__ import annotations

import uuid

import pymongo
import pytest

from shared import db as mongo
from workers import campaigns


@pytest.fixture
def scratch(stack):
    client = pymongo.MongoClient(stack.mongo_uri)
    name = f"users-{uuid.uuid4().hex[:8]}"
    mongo.ensure_indexes(client[name])
    yield client[name]
    client.drop_database(name)


def test_users_after_reads_in_pages_in_order_and_only_the_campaigns_own(scratch, monkeypatch):
    mine, other = f"c-{uuid.uuid4().hex[:6]}", f"d-{uuid.uuid4().hex[:6]}"
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
