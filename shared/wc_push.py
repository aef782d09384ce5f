"""What the WalletConnect push server API's web side and workers share: client types, keys, outcomes.

Composite ``_id`` values join their parts with a tab, which tenant ids,
client ids and tokens never contain (the API refuses white space in them), so
a key can be split back unambiguously (the notification id, last, may hold anything).
"""
from __future__ import annotations

SEP = "\t"
#: Prefix of the app document (apps collection) that holds a tenant's provider credentials.
TENANT_APP_PREFIX = "wcp:"
#: Client types and the (provider, APNs environment) each delivers through; ``noop`` delivers nothing.
CLIENT_TYPES = {
    "apns": ("apns", "production"),
    "apns-sandbox": ("apns", "development"),
    "fcm": ("fcm", None),
    "fcm_v1": ("fcm", None),
    "noop": (None, None),
}

# Outcomes of a notification, decided by the worker and answered through the applied record.
NEW = "new"
REPEAT = "repeat"
CLIENT_NOT_FOUND = "client_not_found"
RAW_ONLY = "raw_only"
INVALID = "invalid"


def client_key(tenant_id: str, client_id: str) -> str:
    return f"{tenant_id}{SEP}{client_id}"


def token_key(tenant_id: str, token: str) -> str:
    return f"{tenant_id}{SEP}{token}"


def notification_key(tenant_id: str, client_id: str, notification_id: str) -> str:
    return f"{tenant_id}{SEP}{client_id}{SEP}{notification_id}"


def device_id(key: str, token: str) -> str:
    """A delivery's device id: the client and the token it went to (a dead token deletes only that pairing)."""
    return f"{key}{SEP}{token}"


def tenant_app_id(tenant_id: str) -> str:
    return TENANT_APP_PREFIX + tenant_id
