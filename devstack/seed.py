"""Registrations written straight into MongoDB, for benchmarks and fault tests that need many devices.

Registering through the API is not what they measure; the documents have the
shape ``workers.writes.register_device`` gives them.
"""
from __future__ import annotations

import time

from pymongo.database import Database

from shared import db as mongo
from shared import device_lookup
from shared.device_lookup import device_id

#: Documents per insert_many.
SEED_BATCH = 5000


def seed_devices(db: Database, app_id: str, users: list[str], tokens: list[str], platforms: list[str]) -> None:
    """One active registration per (user, token, platform), without activations, and its lookup entries."""
    now_ns = time.time_ns()
    devices = db[mongo.DEVICES]
    docs = []
    for user, token, platform in zip(users, tokens, platforms, strict=True):
        docs.append(
            {
                "_id": device_id(app_id, token),
                "app_id": app_id,
                "token": token,
                "platform": platform,
                "environment": None,
                "activations": {},
                "activation_ids": [],
                "user_ids": [user],
                "deleted": False,
                "active": True,
                "ts": now_ns,
            }
        )
        if len(docs) == SEED_BATCH:
            devices.insert_many(docs, ordered=False)
            device_lookup.add_devices(db, docs)
            docs = []
    if docs:
        devices.insert_many(docs, ordered=False)
        device_lookup.add_devices(db, docs)
