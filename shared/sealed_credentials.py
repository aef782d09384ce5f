"""Provider credentials sealed by envelope encryption: in the commands that cross RabbitMQ and at rest in MongoDB.

An app's APNs key or certificate, FCM service account (and HMS client secret)
used to travel in clear in ``app.provider`` commands (and could sit readable
in a dead-letter ``.XQ`` queue) and lie in clear in the ``apps`` documents. The
API now seals them when it builds the command; the worker stores the sealed
form as it is; only the delivery worker opens them, where it builds a provider
client (workers/deliver.py ``ProviderClients``).

Envelope: the secret fields of one credential set are encrypted with a fresh
256-bit data key (AES-GCM), and the data key is encrypted (wrapped) with a
key-encryption key from ``PUSH_CREDENTIAL_KEYS``. Both bind the app and the
provider as associated data, so a sealed blob moved to another app or
provider does not open. Non-secret fields (bundle, key id, team, project,
environment, expiry) stay readable beside the seal.

``PUSH_CREDENTIAL_KEYS`` is ``<key id>:<base64 of 32 bytes>`` entries,
comma-separated: the first seals, every one opens. Rotation: put a new key
first (keep the old ones), deploy API and workers, run
``python -m ops.rotate_credentials`` (re-wraps every stored data key under the
new key; the secrets themselves are not re-encrypted), wait until no queue
(nor ``.XQ``) holds a command sealed with an old key, then drop the old key.
With no key set, credentials are stored in clear (refused at
start-up where auth is on, unless ``PUSH_CREDENTIALS_UNSEALED_ALLOWED``).
"""
from __future__ import annotations

import base64
import binascii
import json
import os
import secrets

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from shared.settings import Settings

#: Fields of each provider's credentials that are secret (sealed); the rest stays readable.
#: ``webhook`` is an app's outcome-feed webhook (shared/outbox.py): its signing secret is sealed the same way.
SECRET_FIELDS = {"apns": ("private_key", "certificate"), "fcm": ("service_account",), "hms": ("client_secret",),
                 "webhook": ("secret",)}
#: Where the sealed secrets sit in a provider's credentials.
SEALED = "sealed"
#: Version of the sealed form.
FORMAT = 1
#: Bytes of an AES-GCM nonce, of a data key and of a key-encryption key.
NONCE_BYTES = 12
KEY_BYTES = 32


class CredentialsUnavailable(Exception):
    """Sealed credentials that cannot be opened here (their key is not configured, or they were tampered with)."""


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64(text: str) -> bytes:
    return base64.b64decode(text, validate=True)


def _bound_to(app_id: str, provider: str) -> bytes:
    return f"push-credentials:{FORMAT}:{provider}:{app_id}".encode()


def new_key_entry() -> str:
    """A fresh ``<key id>:<key>`` entry for ``PUSH_CREDENTIAL_KEYS`` (``python -m ops.rotate_credentials --new-key``)."""
    return f"k{secrets.token_hex(4)}:{_b64(os.urandom(KEY_BYTES))}"


class CredentialKeys:
    """The key-encryption keys: ``current`` seals, every one opens.

    Parameters:
      keys: key id → 32-byte key, the sealing key first.
    """

    def __init__(self, keys: dict[str, bytes]):
        self.keys = dict(keys)
        self.current = next(iter(self.keys), None)

    @classmethod
    def parse(cls, text: str) -> CredentialKeys:
        """Keys from ``PUSH_CREDENTIAL_KEYS``; a malformed entry is a configuration error (ValueError)."""
        keys: dict[str, bytes] = {}
        for raw in text.split(","):
            entry = raw.strip()
            if not entry:
                continue
            key_id, separator, encoded = entry.partition(":")
            try:
                key = _unb64(encoded) if separator else b""
            except (binascii.Error, ValueError):
                key = b""
            if not key_id or len(key) != KEY_BYTES or key_id in keys:
                raise ValueError("PUSH_CREDENTIAL_KEYS entries must be <key id>:<base64 of 32 bytes>, each id once")
            keys[key_id] = key
        return cls(keys)

    @classmethod
    def from_settings(cls, settings: Settings) -> CredentialKeys:
        return cls.parse(settings.credential_keys)

    @property
    def sealing(self) -> bool:
        return self.current is not None

    def seal(self, app_id: str, provider: str, credentials: dict | None) -> dict | None:
        """``credentials`` with their secret fields sealed under the current key (in clear when no key is set).

        Already sealed credentials (a topic change that keeps the stored key) keep their seal.
        """
        secret = {name: credentials[name] for name in SECRET_FIELDS[provider] if credentials and name in credentials}
        if not credentials or not secret or not self.sealing:
            return credentials
        bound = _bound_to(app_id, provider)
        data_key = AESGCM.generate_key(bit_length=KEY_BYTES * 8)
        data_nonce, key_nonce = os.urandom(NONCE_BYTES), os.urandom(NONCE_BYTES)
        data = AESGCM(data_key).encrypt(data_nonce, json.dumps(secret).encode(), bound)
        wrapped = AESGCM(self.keys[self.current]).encrypt(key_nonce, data_key, self.current.encode() + b"\x00" + bound)
        public = {name: value for name, value in credentials.items() if name not in secret and name != SEALED}
        return {**public, SEALED: {"v": FORMAT, "kid": self.current, "key": _b64(key_nonce + wrapped), "data": _b64(data_nonce + data)}}

    def open(self, app_id: str, provider: str, credentials: dict) -> dict:
        """``credentials`` with their secret fields in clear (credentials stored in clear come back as they are)."""
        sealed = credentials.get(SEALED)
        if sealed is None:
            return credentials
        bound = _bound_to(app_id, provider)
        try:
            data_key = self._unwrap(sealed, bound)
            raw = _unb64(sealed["data"])
            secret = json.loads(AESGCM(data_key).decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], bound))
        except (InvalidTag, KeyError, TypeError, ValueError) as error:
            raise CredentialsUnavailable(f"{provider} credentials do not open: {type(error).__name__}") from None
        return {**{k: v for k, v in credentials.items() if k != SEALED}, **secret}

    def can_open(self, credentials: dict | None) -> str | None:
        """Why ``credentials`` cannot be opened here, or None (cheap: looks only at the key id)."""
        sealed = (credentials or {}).get(SEALED)
        if sealed is not None and sealed.get("kid") not in self.keys:
            return f"credentials sealed with key {sealed.get('kid')!r}, which PUSH_CREDENTIAL_KEYS does not hold"
        return None

    def rewrap(self, app_id: str, provider: str, credentials: dict | None) -> dict | None:
        """The same credentials sealed under the current key (a new wrapping of the same data key), or None if nothing changes.

        Credentials stored in clear are sealed; ones already under the current key are left alone.
        """
        if not credentials or not self.sealing:
            return None
        sealed = credentials.get(SEALED)
        if sealed is None:
            return self.seal(app_id, provider, credentials) if any(f in credentials for f in SECRET_FIELDS[provider]) else None
        if sealed.get("kid") == self.current:
            return None
        bound = _bound_to(app_id, provider)
        try:
            data_key = self._unwrap(sealed, bound)
        except (InvalidTag, KeyError, TypeError, ValueError) as error:
            raise CredentialsUnavailable(f"{provider} credentials do not open: {type(error).__name__}") from None
        key_nonce = os.urandom(NONCE_BYTES)
        wrapped = AESGCM(self.keys[self.current]).encrypt(key_nonce, data_key, self.current.encode() + b"\x00" + bound)
        return {**credentials, SEALED: {**sealed, "kid": self.current, "key": _b64(key_nonce + wrapped)}}

    def _unwrap(self, sealed: dict, bound: bytes) -> bytes:
        key_id = sealed["kid"]
        if key_id not in self.keys:
            raise CredentialsUnavailable(f"credentials sealed with key {key_id!r}, which PUSH_CREDENTIAL_KEYS does not hold")
        raw = _unb64(sealed["key"])
        return AESGCM(self.keys[key_id]).decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], key_id.encode() + b"\x00" + bound)


def check_settings(settings: Settings) -> None:
    """Refuse to start (ValueError) with malformed keys, or with auth on and credentials to be stored in clear."""
    keys = CredentialKeys.from_settings(settings)
    if settings.auth_enabled and not keys.sealing and not settings.credentials_unsealed_allowed:
        raise ValueError(
            "PUSH_AUTH_ENABLED is on but PUSH_CREDENTIAL_KEYS is empty: provider credentials would cross RabbitMQ and sit in "
            "MongoDB in clear. Set a key (python -m ops.rotate_credentials --new-key), or PUSH_CREDENTIALS_UNSEALED_ALLOWED=true."
        )
