"""What a provider answered, reduced to what the outcome table needs."""
from __future__ import annotations

import time
from dataclasses import dataclass
from email.utils import parsedate_to_datetime


@dataclass(frozen=True)
class ProviderAnswer:
    """A provider's answer to one request.

    Attributes:
      status: the HTTP status.
      reason: APNs ``reason``, FCM ``errorCode`` (else its ``status``) or HMS ``code`` and ``msg``; None on success.
      retry_after: seconds from a ``Retry-After`` header, if any.
      provider_id: ``apns-id`` or the FCM message name on success.
      token_field: FCM: the error names ``message.token`` (a bad token, not a bad message);
        HMS: the answer lists the request's token among its ``illegal_tokens``.
      token_invalid_since: APNs 410 only: its ``timestamp``, when the token stopped being valid (ms since the epoch).
      code: HMS only: its result code (``80000000`` success, …), whatever the HTTP status.
    """

    status: int
    reason: str | None = None
    retry_after: float | None = None
    provider_id: str | None = None
    token_field: bool = False
    token_invalid_since: int | None = None
    code: str | None = None


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None
