"""WalletConnect push server notifications (seed 001) mapped to APNs and FCM.

A notification comes in one of two forms:

- **legacy** ``{topic, flags, blob}``: ``flags`` is a bitmask (below). With the
  Encrypted bit the blob is ciphertext only the app can read; without it the
  blob is base64 of a JSON object ``{title, body, image?, url?}``.
- **raw** ``{topic, tag, message}``: always ciphertext; the only form a client
  registered with ``always_raw`` receives.

| form | APNs | FCM HTTP v1 |
| --- | --- | --- |
| legacy, encrypted | alert "You have new notifications…", mutable-content, custom keys topic, blob, flags | data-only {topic, blob, flags} |
| legacy, cleartext | alert title/body from the blob, mutable-content, custom key topic | notification title/body + data {topic, blob, flags} |
| raw | alert "You have new notifications…", mutable-content, custom keys topic, tag, message | data-only {topic, tag, message} |

Encrypted content always reaches the app's code: on iOS through its
notification service extension (``mutable-content``), on Android as a data
message. Everything here is pure: no I/O.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import json
from dataclasses import dataclass

from shared.payload import Body

# Flags of a legacy payload (seed 001).
ENCRYPTED = 1 << 0
SIGN = 1 << 1
AUTH = 1 << 2
CHAT = 1 << 3
NOTIFY = 1 << 4
FLAG_NAMES = {ENCRYPTED: "encrypted", SIGN: "sign", AUTH: "auth", CHAT: "chat", NOTIFY: "notify"}

#: The alert title shown while the app has not decrypted the content (the reference's wording).
PLACEHOLDER_TITLE = "You have new notifications. Open to view"
LEGACY = "legacy"
RAW = "raw"


class PayloadError(ValueError):
    """A payload that cannot be delivered; ``field`` names the part at fault."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field
        self.message = message


@dataclass(frozen=True)
class Notification:
    """One notification as the API validated it (both forms)."""

    form: str
    topic: str
    flags: int = 0
    blob: str | None = None
    tag: int | None = None
    message: str | None = None

    @property
    def encrypted(self) -> bool:
        return self.form == RAW or bool(self.flags & ENCRYPTED)

    def to_json(self) -> dict:
        if self.form == RAW:
            return {"form": RAW, "topic": self.topic, "tag": self.tag, "message": self.message}
        return {"form": LEGACY, "topic": self.topic, "flags": self.flags, "blob": self.blob}

    @classmethod
    def from_json(cls, data: dict) -> Notification:
        return cls(**data)


def flag_names(flags: int) -> list[str]:
    return [name for bit, name in FLAG_NAMES.items() if flags & bit]


def raw_message_id(message: str) -> str:
    """A raw notification's id when the sender gives none: the SHA-256 of its message (as the relay does)."""
    return hashlib.sha256(message.encode()).hexdigest()


def decode_cleartext(blob: str) -> dict:
    """The ``{title, body, …}`` of a cleartext blob; PayloadError if it is not base64 of such a JSON object."""
    try:
        decoded = json.loads(base64.b64decode(blob, validate=True))
    except (binascii.Error, ValueError):
        raise PayloadError("payload.blob", "a cleartext blob (flags without Encrypted) must be base64 of a JSON object") from None
    if not isinstance(decoded, dict):
        raise PayloadError("payload.blob", "a cleartext blob must decode to a JSON object {title, body}")
    for key in ("title", "body"):
        if not isinstance(decoded.get(key), str):
            raise PayloadError("payload.blob", f"a cleartext blob must carry a string '{key}'")
    return decoded


def body_for(notification: Notification, platform: str) -> tuple[Body, bool]:
    """The (body, silent) of the notification on ``platform`` ("apns" or "fcm")."""
    if notification.form == RAW:
        data = {"topic": notification.topic, "tag": notification.tag, "message": notification.message}
        return _encrypted(data, platform)
    data = {"topic": notification.topic, "blob": notification.blob, "flags": notification.flags}
    if notification.encrypted:
        return _encrypted(data, platform)
    cleartext = decode_cleartext(notification.blob)
    if platform == "apns":
        return Body(title=cleartext["title"], body=cleartext["body"], extras={"topic": notification.topic}, mutable_content=True), False
    return Body(title=cleartext["title"], body=cleartext["body"], extras=data), False


def _encrypted(data: dict, platform: str) -> tuple[Body, bool]:
    if platform == "apns":
        return Body(title=PLACEHOLDER_TITLE, extras=data, mutable_content=True), False
    return Body(extras=data), True
