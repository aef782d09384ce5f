"""What tests read of deliveries: the ledger's rows (shared/ledger.py), one per delivery, either format."""
from __future__ import annotations

import pymongo

from shared import ledger


def database(stack):
    return pymongo.MongoClient(stack.mongo_uri)["push"]


def rows(db, message_ids, state: str | tuple | None = None) -> list[dict]:
    """Deliveries of these messages (``{_id, message_id, platform, device_id, token, state, reason}``), of ``state`` if given."""
    ids = [message_ids] if isinstance(message_ids, str) else list(message_ids)
    found = ledger.rows(db, ids)
    if state is None:
        return found
    wanted = (state,) if isinstance(state, str) else tuple(state)
    return [r for r in found if r["state"] in wanted]


def tokens(db, message_ids, state: str | tuple | None = None) -> set[str]:
    return {r["token"] for r in rows(db, message_ids, state)}
