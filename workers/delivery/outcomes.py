"""The outcome table of DESIGN.md section 3, as code: a provider answer → what to do.

| answer                                                            | outcome     |
| ----------------------------------------------------------------- | ----------- |
| APNs 200 / FCM 200                                                 | SENT        |
| APNs 410; 400 BadDeviceToken, DeviceTokenNotForTopic               | DEAD_TOKEN  |
| FCM 404 (UNREGISTERED); 400 INVALID_ARGUMENT naming message.token  | DEAD_TOKEN  |
| other APNs 4xx (400, 413, …); other FCM 400                         | BAD_MESSAGE |
| APNs 403 (provider token or certificate); FCM 401, 403             | CREDENTIALS |
| APNs 429; FCM 429 (QUOTA_EXCEEDED)                                  | THROTTLED   |
| 5xx; no answer (connection reset, GOAWAY, timeout: ``None``)       | TRANSIENT   |

A TLS handshake the APNs server refuses over the client certificate reaches this
table as ``403 BadCertificate`` (workers/delivery/apns.py): credentials, not a
transport error, so the tenant's provider is suspended instead of retried forever.
"""
from __future__ import annotations

import enum

from workers.delivery.answer import ProviderAnswer


class Outcome(enum.Enum):
    SENT = "sent"
    DEAD_TOKEN = "dead_token"
    BAD_MESSAGE = "bad_message"
    CREDENTIALS = "credentials"
    THROTTLED = "throttled"
    TRANSIENT = "transient"

    @property
    def retryable(self) -> bool:
        return self in (Outcome.THROTTLED, Outcome.TRANSIENT)


APNS_DEAD_TOKEN_REASONS = frozenset({"BadDeviceToken", "DeviceTokenNotForTopic", "Unregistered"})


def classify_apns(answer: ProviderAnswer | None) -> Outcome:
    if answer is None:
        return Outcome.TRANSIENT
    status = answer.status
    if status == 200:
        return Outcome.SENT
    if status == 410 or (status == 400 and answer.reason in APNS_DEAD_TOKEN_REASONS):
        return Outcome.DEAD_TOKEN
    if status == 403:
        return Outcome.CREDENTIALS
    if status == 429:
        return Outcome.THROTTLED
    if status >= 500:
        return Outcome.TRANSIENT
    return Outcome.BAD_MESSAGE


def classify_fcm(answer: ProviderAnswer | None) -> Outcome:
    if answer is None:
        return Outcome.TRANSIENT
    status = answer.status
    if status == 200:
        return Outcome.SENT
    if status == 404 or (status == 400 and (answer.token_field or answer.reason == "UNREGISTERED")):
        return Outcome.DEAD_TOKEN
    if status in (401, 403):
        return Outcome.CREDENTIALS
    if status == 429:
        return Outcome.THROTTLED
    if status >= 500:
        return Outcome.TRANSIENT
    return Outcome.BAD_MESSAGE
