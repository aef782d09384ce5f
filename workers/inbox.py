"""Apply inbox writes (post a message, mark one read, mark all read) to MongoDB, idempotently.

An inbox message's ``_id`` is made by the API, so posting it twice stores it
once. Every time stored comes from the command (the API's receive time), never
from the worker's clock, so a redelivered command writes the same values.
``read-all`` marks only messages ordered before it (``ts``, the post's write
order, not above the command's; shared/write_order.py): a message posted after
a read-all was acknowledged stays unread whatever order the workers run the two
in, and whatever the API hosts' clocks say.
"""
from __future__ import annotations

from datetime import UTC, datetime

from pymongo.database import Database
from pymongo.errors import DuplicateKeyError

from shared import db as mongo
from shared.write_order import order_of

#: Most inbox messages marked read by one ``update_many`` (by ``_id``, the fast path on nx-27017).
READ_ALL_CHUNK = 1000


def received_time(cmd: dict) -> datetime:
    """The API's receive time of a command as a datetime (millisecond precision, as MongoDB stores it)."""
    millis = cmd["received_at"] // 1_000_000
    return datetime.fromtimestamp(millis / 1000, UTC)


def post_message(db: Database, cmd: dict) -> dict:
    """Store a new inbox message; a redelivered command finds it stored and changes nothing."""
    message = {
        "_id": cmd["inbox_id"],
        "user_id": cmd["user_id"],
        "type": cmd["type"],
        "subject": cmd["subject"],
        "summary": cmd["summary"],
        "body": cmd["body"],
        "applications": cmd["applications"],
        "read": False,
        "created_at": received_time(cmd),
        "read_at": None,
        "ts": order_of(cmd),
    }
    try:
        db[mongo.INBOX].insert_one(message)
    except DuplicateKeyError:
        pass
    return {"inboxId": cmd["inbox_id"]}


def read_message(db: Database, cmd: dict) -> dict:
    """Mark one message read; the first read's time stays (a second read changes nothing)."""
    result = db[mongo.INBOX].update_one(
        {"_id": cmd["inbox_id"], "read": False},
        {"$set": {"read": True, "read_at": received_time(cmd)}},
    )
    return {"changed": bool(result.modified_count)}


def read_all_messages(db: Database, cmd: dict) -> dict:
    """Mark read every unread message of the user in the app that the API received before this command."""
    inbox = db[mongo.INBOX]
    query = {
        "user_id": cmd["user_id"],
        "applications": {"$in": [cmd["app_id"]]},
        "read": False,
        "ts": {"$lte": order_of(cmd)},
    }
    ids = [doc["_id"] for doc in inbox.find(query, {"_id": 1})]
    read_at = received_time(cmd)
    marked = 0
    for start in range(0, len(ids), READ_ALL_CHUNK):
        chunk = ids[start : start + READ_ALL_CHUNK]
        result = inbox.update_many({"_id": {"$in": chunk}, "read": False}, {"$set": {"read": True, "read_at": read_at}})
        marked += result.modified_count
    return {"marked": marked}


HANDLERS = {
    "inbox.post": post_message,
    "inbox.read": read_message,
    "inbox.read_all": read_all_messages,
}
