"""Authentication of the WalletConnect push server API, as its reference offers it.

- **Client JWT on registration**: a relay client JWT (``alg: EdDSA``) whose issuer
  is a ``did:key`` of an Ed25519 key. It proves the caller holds the key the
  ``client_id`` names: the issuer must be that client id.
- **Relay signature on sends**: ``X-Ed25519-Signature`` (hex) over
  ``"<timestamp>.<body length in bytes>.<body>"`` with ``X-Ed25519-Timestamp``,
  checked against the relay's public key, as the reference signs it
  (WalletConnect/push-server ``middleware/validate_signature.rs``). The reference
  does not look at the timestamp, so a captured send verified forever; here it
  must be Unix seconds within ``PUSH_WC_PUSH_SIGNATURE_MAX_AGE_SECONDS`` of
  this host's clock (either way), which bounds a replay to that window.
- **Tenant JWT on tenant management**: ``Authorization: Bearer <jwt>``, HS256
  with the server's secret, unexpired; its ``sub`` names the tenant it may
  manage (the reference's cloud mode).

Pure functions (no Flask): each raises :class:`AuthError` naming what is wrong.
:func:`check_settings` refuses, at start-up, a deployment with API keys on
whose WalletConnect push clients would be open (no JWT, no signature).
"""
from __future__ import annotations

import base64
import binascii
import json
import time

import jwt
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

#: A ``did:key`` identifier's prefix; client ids are accepted with or without it.
DID_KEY_PREFIX = "did:key:"
#: Multicodec prefix of an Ed25519 public key inside a did:key (0xed, varint-encoded).
ED25519_MULTICODEC = b"\xed\x01"
BASE58_ALPHABET = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
#: Seconds of clock difference tolerated on a JWT's ``exp`` and ``iat``.
CLOCK_SKEW_SECONDS = 60
SIGNATURE_HEADER = "X-Ed25519-Signature"
TIMESTAMP_HEADER = "X-Ed25519-Timestamp"
#: Longest timestamp header accepted (Unix seconds have 10 digits until the year 2286).
MAX_TIMESTAMP_DIGITS = 12


class AuthError(Exception):
    """Authentication failed: ``name`` is the error's name, ``field`` the header at fault."""

    def __init__(self, name: str, description: str, field: str):
        super().__init__(description)
        self.name = name
        self.description = description
        self.field = field


def trim_did_key(value: str) -> str:
    return value[len(DID_KEY_PREFIX):] if value.startswith(DID_KEY_PREFIX) else value


def base58_decode(text: str) -> bytes:
    number = 0
    for char in text:
        index = BASE58_ALPHABET.find(char)
        if index < 0:
            raise ValueError(f"not base58: {char!r}")
        number = number * 58 + index
    body = number.to_bytes((number.bit_length() + 7) // 8, "big") if number else b""
    leading_zeros = len(text) - len(text.lstrip("1"))
    return b"\x00" * leading_zeros + body


def base58_encode(data: bytes) -> str:
    number = int.from_bytes(data, "big")
    out = ""
    while number:
        number, rest = divmod(number, 58)
        out = BASE58_ALPHABET[rest] + out
    return "1" * (len(data) - len(data.lstrip(b"\x00"))) + out


def did_key_public_key(did: str) -> Ed25519PublicKey:
    """The Ed25519 key a ``did:key:z…`` names."""
    key = trim_did_key(did)
    if not key.startswith("z"):
        raise ValueError("a did:key must be multibase base58btc ('z')")
    raw = base58_decode(key[1:])
    if not raw.startswith(ED25519_MULTICODEC) or len(raw) != len(ED25519_MULTICODEC) + 32:
        raise ValueError("the did:key is not an Ed25519 public key")
    return Ed25519PublicKey.from_public_bytes(raw[len(ED25519_MULTICODEC):])


def did_key_for(public_key: Ed25519PublicKey) -> str:
    """The ``did:key`` of an Ed25519 public key (what relay clients use as their id)."""
    raw = public_key.public_bytes(Encoding.Raw, PublicFormat.Raw)
    return DID_KEY_PREFIX + "z" + base58_encode(ED25519_MULTICODEC + raw)


def _b64url(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def verify_client_jwt(authorization: str | None, client_id: str, *, now: float | None = None) -> dict:
    """Check a registration's ``Authorization: Bearer <jwt>``; answer its claims.

    The JWT must be EdDSA-signed by the key of its ``iss`` (a did:key), not be
    expired, and ``iss`` must be the registering ``client_id``.
    """
    field = "Authorization"
    if not authorization:
        raise AuthError("MissingJwt", "registration needs a client JWT: Authorization: Bearer <jwt>", field)
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthError("InvalidJwt", "the Authorization header must be 'Bearer <jwt>'", field)
    parts = token.strip().split(".")
    if len(parts) != 3:
        raise AuthError("InvalidJwt", "the JWT must have three parts", field)
    try:
        header = json.loads(_b64url(parts[0]))
        claims = json.loads(_b64url(parts[1]))
        signature = _b64url(parts[2])
    except (binascii.Error, ValueError):
        raise AuthError("InvalidJwt", "the JWT is not base64url JSON", field) from None
    if not isinstance(header, dict) or not isinstance(claims, dict):
        raise AuthError("InvalidJwt", "the JWT's header and claims must be JSON objects", field)
    if header.get("alg") != "EdDSA":
        raise AuthError("InvalidJwt", "the JWT must be signed with EdDSA (Ed25519)", field)
    issuer = claims.get("iss")
    if not isinstance(issuer, str):
        raise AuthError("InvalidJwt", "the JWT has no issuer (iss)", field)
    try:
        key = did_key_public_key(issuer)
    except ValueError as error:
        raise AuthError("InvalidJwt", f"the JWT's issuer is not an Ed25519 did:key: {error}", field) from None
    try:
        key.verify(signature, f"{parts[0]}.{parts[1]}".encode())
    except InvalidSignature:
        raise AuthError("InvalidJwt", "the JWT's signature does not verify with its issuer's key", field) from None
    now = time.time() if now is None else now
    exp = claims.get("exp")
    if exp is not None and (not isinstance(exp, int | float) or exp + CLOCK_SKEW_SECONDS < now):
        raise AuthError("ExpiredJwt", "the JWT has expired", field)
    if trim_did_key(issuer) != trim_did_key(client_id):
        raise AuthError("JwtIssuerMismatch", "the JWT's issuer is not the client_id being registered", field)
    return claims


def relay_public_key(hex_key: str) -> Ed25519PublicKey:
    try:
        raw = bytes.fromhex(hex_key)
        return Ed25519PublicKey.from_public_bytes(raw)
    except ValueError:
        raise ValueError("the relay public key must be 32 bytes of hex") from None


def signed_message(timestamp: str, body: bytes) -> bytes:
    """What the relay signs: ``timestamp.length.body`` (length in bytes)."""
    return f"{timestamp}.{len(body)}.".encode() + body


def verify_relay_signature(
    public_key: Ed25519PublicKey, signature: str | None, timestamp: str | None, body: bytes, *, max_age: float, now: float | None = None
) -> None:
    """Check a send's relay signature headers against the body, and that its timestamp is within ``max_age`` seconds of now."""
    if signature is None and timestamp is None:
        raise AuthError("MissingAllSignatureHeader", f"sends must carry {SIGNATURE_HEADER} and {TIMESTAMP_HEADER}", SIGNATURE_HEADER)
    if signature is None:
        raise AuthError("MissingSignatureHeader", f"{SIGNATURE_HEADER} is missing", SIGNATURE_HEADER)
    if timestamp is None:
        raise AuthError("MissingTimestampHeader", f"{TIMESTAMP_HEADER} is missing", TIMESTAMP_HEADER)
    if not timestamp.isascii() or not timestamp.isdigit() or len(timestamp) > MAX_TIMESTAMP_DIGITS:
        raise AuthError("InvalidTimestamp", f"{TIMESTAMP_HEADER} must be Unix time in seconds", TIMESTAMP_HEADER)
    try:
        raw = bytes.fromhex(signature)
    except ValueError:
        raise AuthError("InvalidSignature", f"{SIGNATURE_HEADER} must be hex", SIGNATURE_HEADER) from None
    try:
        public_key.verify(raw, signed_message(timestamp, body))
    except InvalidSignature:
        raise AuthError("InvalidSignature", "the relay signature does not verify", SIGNATURE_HEADER) from None
    now = time.time() if now is None else now
    if abs(now - int(timestamp)) > max_age:
        raise AuthError(
            "StaleTimestamp", f"{TIMESTAMP_HEADER} is more than {max_age:.0f} seconds from this server's time", TIMESTAMP_HEADER
        )


def check_settings(settings) -> None:
    """Refuse to start (ValueError) a stack whose API keys are on while its WalletConnect push clients are open.

    With auth on (a production deployment) both relay checks must be on, with a valid
    relay key, unless ``PUSH_WC_PUSH_UNAUTHENTICATED_ALLOWED`` says the open relay is wanted.
    """
    if not settings.auth_enabled or settings.wc_push_unauthenticated_allowed:
        return
    off = [name for name, on in (("PUSH_WC_PUSH_VALIDATE_CLIENT_JWT", settings.wc_push_validate_client_jwt),
                                 ("PUSH_WC_PUSH_VALIDATE_SIGNATURES", settings.wc_push_validate_signatures)) if not on]
    if off:
        raise ValueError(
            f"PUSH_AUTH_ENABLED is on but {' and '.join(off)} {'is' if len(off) == 1 else 'are'} off: anyone could register, "
            "take over or message WalletConnect push clients. Turn them on, or set PUSH_WC_PUSH_UNAUTHENTICATED_ALLOWED=true."
        )
    try:
        relay_public_key(settings.wc_push_relay_public_key)
    except ValueError:
        raise ValueError("PUSH_WC_PUSH_VALIDATE_SIGNATURES is on but PUSH_WC_PUSH_RELAY_PUBLIC_KEY is not 32 bytes of hex") from None


#: The tenant JWT's one algorithm (the reference's ``Validation::new(Algorithm::HS256)``).
TENANT_JWT_ALGORITHM = "HS256"
#: Claims a tenant JWT must carry (the reference's validation requires ``exp``; ``sub`` names the tenant).
TENANT_JWT_CLAIMS = ("exp", "sub")


def verify_tenant_jwt(authorization: str | None, secret: str) -> str:
    """The tenant a management request's tenant JWT names (its ``sub``); raises :class:`AuthError` if it is not one.

    ``authorization`` is the header: ``Bearer <jwt>`` or, as the reference
    strips ``Bearer `` when present, the JWT alone. The JWT must be HS256 with
    ``secret``, carry ``exp`` (not past, give or take the clock skew) and a
    string ``sub``. Its audience is not checked: the tenant is what it scopes.
    """
    field = "Authorization"
    token = (authorization or "").strip()
    if token[:7].lower() == "bearer ":
        token = token[7:].strip()
    if not token:
        raise AuthError("MissingJwt", "tenant management needs Authorization: Bearer <tenant JWT>", field)
    try:
        claims = jwt.decode(
            token,
            secret,
            algorithms=[TENANT_JWT_ALGORITHM],
            options={"require": list(TENANT_JWT_CLAIMS), "verify_aud": False},
            leeway=CLOCK_SKEW_SECONDS,
        )
    except jwt.ExpiredSignatureError:
        raise AuthError("ExpiredJwt", "the tenant JWT has expired", field) from None
    except jwt.InvalidTokenError as error:
        raise AuthError("InvalidJwt", f"the tenant JWT is not valid: {error}", field) from None
    if not claims["sub"]:  # PyJWT checked it is a string
        raise AuthError("InvalidJwt", "the tenant JWT's sub must name a tenant", field)
    return claims["sub"]
