"""MongoDB access shared by the API (reads) and the workers (writes): ``from shared import db as mongo``.

pymongo directly rather than mongoengine: the hot paths are bulk operations
(``insert_many``, ``bulk_write``, ``update_many`` by ``_id``), and mongoengine
cannot talk to the embedded nx-27017 server (its version probe fails).

Portability rules, right on MongoDB and on nx-27017 alike (see README):
- hot documents have a natural ``_id`` and are updated by ``_id``;
- array fields are queried with ``$in``, never by equality;
- counting uses ``aggregate`` with ``$match`` + ``$group`` on one field, not ``count_documents``;
- a lookup that must stay fast goes by ``_id`` (nx-27017 scans for ``$in`` and array fields);
- no TTL indexes: expired data is removed by a periodic job.
"""
from __future__ import annotations

import pymongo
from pymongo.database import Database

from shared.settings import Settings

#: Seconds to find a server before an operation fails (API status, start-up).
SERVER_SELECTION_TIMEOUT_MS = 3000

APPS = "apps"
#: Projection of an app document without its provider secrets (APNs key and certificate, FCM service account,
#: HMS client secret; in clear or sealed: shared/sealed_credentials.py): what every read that answers a client uses.
HIDDEN_CREDENTIALS = {"apns.private_key": 0, "apns.certificate": 0, "fcm.service_account": 0, "hms.client_secret": 0,
                      "apns.sealed": 0, "fcm.sealed": 0, "hms.sealed": 0, "webhook.secret": 0, "webhook.sealed": 0}
#: An app's ``apns.auth``: provider token (a .p8 key; documents without ``auth`` are this) or client certificate.
APNS_TOKEN, APNS_CERTIFICATE = "token", "certificate"
DEVICES = "devices"
#: Device ids by user (``_id`` app and user) and by activation (``_id`` the activation id): see ``shared.device_lookup``.
USER_DEVICES = "user_devices"
ACTIVATION_DEVICES = "activation_devices"
#: One document per data migration done (``_id`` its name), so each runs once.
MIGRATIONS = "migrations"
ACTIVATIONS = "activations"
COMMANDS = "commands"
MESSAGES = "messages"
#: The old format: one row per delivery (read for messages expanded before the ledger, purged by its retention).
DELIVERIES = "deliveries"
#: The delivery ledger: one document per chunk of deliveries (shared/ledger.py).
LEDGER = "ledger"
#: Each ledger chunk's device list (``_id`` the chunk's), written once at insert (shared/ledger.py ``insert_chunks``).
LEDGER_DEVICES = "ledger_devices"
DEAD_LETTERS = "dead_letters"
CAMPAIGNS = "campaigns"
#: A campaign's users, one document each: ``c`` the campaign id, ``u`` the user id.
CAMPAIGN_USERS = "campaign_users"
#: WalletConnect v1 bridge: sessions, call requests, call statuses, webhook pushes (by natural ``_id``).
WC_SESSIONS = "wc_sessions"
WC_CALLS = "wc_calls"
WC_CALL_STATUS = "wc_call_status"
WC_PUSHES = "wc_pushes"

#: WalletConnect push server API: clients, token owners, accepted notifications (dedupe by ``_id``).
WCP_CLIENTS = "wcp_clients"
WCP_TOKENS = "wcp_tokens"
WCP_NOTIFICATIONS = "wcp_notifications"

#: PowerAuth inbox: one document per message (``_id`` made by the API), read state on it.
INBOX = "inbox_messages"

#: API keys of apps: ``_id`` the key id, ``app_id``, ``hash`` (SHA-256 of the key), ``revoked_at``.
API_KEYS = "api_keys"
#: The audit log of admin actions (shared/audit.py): ``_id`` time-ordered, who, action, path, status, target.
AUDIT_LOG = "audit_log"
#: One document the API's status check writes (is MongoDB writable?).
HEALTH = "health"
#: ``Idempotency-Key`` uses: ``_id`` the id the key names, ``digest`` of the first request's body (api/idempotency.py).
IDEMPOTENCY_KEYS = "idempotency_keys"

#: The order campaign users are read in: the whole (c, u) index, not ``u`` alone. Both mean the same within one
#: campaign, and MongoDB serves either from the index; nx-27017 walks the index only for the whole key and sorts every
#: user of the campaign for ``u`` alone (a page of 1,000 of a 1,000,000-user campaign: 486 ms against 53 ms), holding
#: its one lock meanwhile, so every other query waited behind each page of a big campaign.
CAMPAIGN_USERS_ORDER = [("c", 1), ("u", 1)]


def campaign_users_after(db: Database, campaign_id: str, after: str, count: int) -> list[str]:
    """The campaign's next ``count`` users after ``after``, in :data:`CAMPAIGN_USERS_ORDER`, in one query.

    One query, not several smaller ones: on nx-27017 each costs more the further into the campaign it starts (1,000
    users: 33 ms at the start of a 1M campaign, 91 ms near its end). Five reads of 1,000 per batch of 5,000 were tried,
    for shorter holds of nx-27017's lock: with them the campaign alone at 100k ran at 3,477/s against 3,885/s of the
    tree before (one bench invocation, README "Lanes"), so they were taken out again; tried once more on 2026-12-07
    (with device reads of 250): at 300k the campaign beside the SYNCHRONOUS sends fell to 2,455/s against 5,177/s
    alone, each read of the expansion's serial chain waiting its turn at nx-27017's lock. Without a projection (the
    documents are the user and the ids only): nx-27017 deep-copies each document it projects, a quarter of the read.
    """
    return [doc["u"] for doc in db[CAMPAIGN_USERS].find({"c": campaign_id, "u": {"$gt": after}})
            .sort(CAMPAIGN_USERS_ORDER).limit(count).batch_size(count)]

#: Indexes by collection: each a list of (keys, options).
INDEXES = {
    DELIVERIES: [([("message_id", 1)], {}), ([("message_id", 1), ("state", 1)], {})],
    LEDGER: [([("m", 1)], {}), ([("m", 1), ("o", 1)], {}), ([("o", 1), ("app", 1)], {}), ([("at", 1)], {})],
    CAMPAIGN_USERS: [(CAMPAIGN_USERS_ORDER, {})],  # nx-27017 refuses "_id" in a compound index
    CAMPAIGNS: [([("created_at", 1)], {})],
    MESSAGES: [([("app_id", 1), ("created_at", 1)], {}), ([("done_told", 1), ("done_check_at", 1)], {})],
    WCP_CLIENTS: [([("tenant_id", 1)], {})],
    WCP_NOTIFICATIONS: [([("client_key", 1)], {}), ([("tenant_id", 1)], {})],
    WC_CALLS: [([("session_id", 1)], {})],
    INBOX: [([("user_id", 1), ("created_at", -1)], {})],
    API_KEYS: [([("app_id", 1)], {})],
    # The releaser's and the outcome feed's due look-ups (shared/scheduling.py, shared/outbox.py).
    "scheduled": [([("send_at", 1)], {})],
    "outbox": [([("next_at", 1)], {})],
    "paced_sends": [([("app", 1)], {})],  # shared/pacing.py
}

#: Date field of each collection whose documents MongoDB removes once it has passed (TTL index).
EXPIRES_AT = "expires_at"
TTL_COLLECTIONS = (WC_SESSIONS, WC_CALLS, WC_CALL_STATUS, WC_PUSHES)


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


def ensure_ttl_indexes(db: Database) -> None:
    """TTL indexes: MongoDB deletes a document once its ``expires_at`` has passed (within a minute).

    Readers still check ``expires_at`` themselves: expiry is not instant on
    MongoDB, and nx-27017 only purges when the collection is read.
    """
    for collection in TTL_COLLECTIONS:
        db[collection].create_index([(EXPIRES_AT, 1)], expireAfterSeconds=0)
