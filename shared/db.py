"""MongoDB access shared by the API (reads) and the workers (writes).

pymongo directly rather than mongoengine: the hot paths are bulk operations
(``insert_many``, ``bulk_write``, ``update_many`` by ``_id``), and mongoengine
cannot talk to the embedded nx-27017 server (its version probe fails).

Portability rules, right on MongoDB and on nx-27017 alike (see README):
- hot documents have a natural ``_id`` and are updated by ``_id``;
- array fields are queried with ``$in``, never by equality;
- counting uses ``aggregate`` with ``$match`` + ``$group`` on one field, not ``count_documents``;
- no TTL indexes: expired data is removed by a periodic job.
"""
from __future__ import annotations

import pymongo
from pymongo.database import Database

from shared.settings import Settings

#: Seconds to find a server before an operation fails (API status, start-up).
SERVER_SELECTION_TIMEOUT_MS = 3000

APPS = "apps"
DEVICES = "devices"
ACTIVATIONS = "activations"
COMMANDS = "commands"
MESSAGES = "messages"
DELIVERIES = "deliveries"
DEAD_LETTERS = "dead_letters"

#: Indexes by collection: each a list of (keys, options).
INDEXES = {
    DEVICES: [([("app_id", 1), ("user_ids", 1)], {}), ([("activation_ids", 1)], {})],
    DELIVERIES: [([("message_id", 1)], {})],
    MESSAGES: [([("app_id", 1), ("created_at", 1)], {})],
}


def connect(settings: Settings) -> Database:
    """Open a client (pooled, thread-safe) and return the project's database."""
    client = pymongo.MongoClient(
        settings.mongo_uri,
        serverSelectionTimeoutMS=SERVER_SELECTION_TIMEOUT_MS,
        tz_aware=True,
    )
    return client[settings.mongo_db]


def ensure_indexes(db: Database) -> None:
    """Create the indexes the queries rely on (idempotent)."""
    for collection, indexes in INDEXES.items():
        for keys, options in indexes:
            db[collection].create_index(keys, **options)
