"""``Idempotency-Key``: a retried request is the same write, and a key reused for another request is a 422.

A client that lost an answer (a timeout, a connection cut) and retries with
the same key gets the same resource id, so the write lands once: the id is
derived from the key and a scope (the app of a send, the caller of an inbox
post). The first request with a key records the digest of its body under that
id (``idempotency_keys``, written before anything is published); a later
request with the key and another body is refused with 422 naming the header,
instead of being answered with the first request's resource.
"""
from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime

from flask import request
from pymongo.errors import DuplicateKeyError

from api import schema as sc
from api.errors import ApiError
from api.services import Services
from shared import db as mongo

HEADER = "Idempotency-Key"
#: The header as the routes that take it declare it (documented in /openapi.json).
HEADERS = {
    HEADER: sc.Str(max_length=256, no_spaces=True, description=(
        "Optional. Requests of one scope with the same key are one write (its id is derived from the key): retry "
        "with the same key and body and it lands once; the key with another body is a 422"))
}
#: Length of a derived id (hex characters), as message ids are.
ID_LENGTH = 32


def derived_id(scope: str, key: str) -> str:
    """The resource id a key names within ``scope`` (sends: the app id, so ids of keys used before stay the same)."""
    return hashlib.sha256(f"{scope}\x00{key}".encode()).hexdigest()[:ID_LENGTH]


def body_digest() -> str:
    """The digest of the request's JSON body, independent of key order and white space."""
    body = request.get_json(silent=True)
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def claim(services: Services, scope: str) -> str | None:
    """The id the request's ``Idempotency-Key`` names in ``scope`` (None without a key); 422 if the key was used with another body."""
    key = request.headers.get(HEADER)
    if key is None:
        return None
    key = sc.check(HEADERS[HEADER], key, HEADER, location="header")
    resource_id = derived_id(scope, key)
    digest = body_digest()
    keys = services.db[mongo.IDEMPOTENCY_KEYS]
    try:
        services.guarded_read(lambda: keys.insert_one({"_id": resource_id, "digest": digest, "at": datetime.now(UTC)}))
    except DuplicateKeyError:
        first = services.find_one(mongo.IDEMPOTENCY_KEYS, {"_id": resource_id}, {"digest": 1})
        if first is not None and first.get("digest") != digest:
            raise ApiError(
                422, f"{HEADER}: this key was already used with another request body; use a new key for a new request",
                field=HEADER, location="header", code="ERROR_IDEMPOTENCY_KEY_REUSED",
            ) from None
    return resource_id
