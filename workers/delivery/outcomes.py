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

HMS (Huawei Push Kit) answers a result ``code`` in its body, whatever the HTTP
status; one token per request, so every answer is that device's outcome:

| HMS answer                                                         | outcome     |
| ------------------------------------------------------------------ | ----------- |
| 80000000 (success); 80100000 (partial) not listing the token        | SENT        |
| 80300007 (all tokens invalid); 80100000 listing it as illegal        | DEAD_TOKEN  |
| 80100001 (a field), 80100003 (structure), 80300008 (over 4096 bytes), other 4xx | BAD_MESSAGE |
| 80200001 (OAuth), 80200003 (token expired, after the client's one refresh), 80300002 (no permission); 401, 403 | CREDENTIALS |
| HTTP 503 (flow control), 429                                        | THROTTLED   |
| 81000001 (internal error), other 5xx; no answer                     | TRANSIENT   |

:data:`CLASSIFY_BY_PROVIDER` names each provider's table; a fourth provider (Web
Push) adds its ``classify_*`` there.

A TLS handshake the APNs server refuses over the client certificate reaches this
table as ``403 BadCertificate`` (workers/delivery/apns.py): credentials, not a
transport error, so the tenant's provider is suspended instead of retried forever.
"""
from __future__ import annotations

import enum
from collections.abc import Callable

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


#: HMS result codes (Push Kit server API).
HMS_SUCCESS = "80000000"
HMS_PARTIAL_SUCCESS = "80100000"
HMS_DEAD_TOKEN_CODES = frozenset({"80300007"})
HMS_CREDENTIAL_CODES = frozenset({"80200001", "80200003", "80300002"})
HMS_INTERNAL_ERROR = "81000001"
#: HMS's flow control answer (its body's code is undocumented).
HMS_FLOW_CONTROL_STATUS = 503


def classify_hms(answer: ProviderAnswer | None) -> Outcome:
    if answer is None:
        return Outcome.TRANSIENT
    status, code = answer.status, answer.code
    if code == HMS_PARTIAL_SUCCESS:
        return Outcome.DEAD_TOKEN if answer.token_field else Outcome.SENT
    if status == 200 and code == HMS_SUCCESS:
        return Outcome.SENT
    if code in HMS_DEAD_TOKEN_CODES:
        return Outcome.DEAD_TOKEN
    if status in (HMS_FLOW_CONTROL_STATUS, 429):
        return Outcome.THROTTLED
    if code == HMS_INTERNAL_ERROR or status >= 500:
        return Outcome.TRANSIENT
    if code in HMS_CREDENTIAL_CODES or status in (401, 403):
        return Outcome.CREDENTIALS
    return Outcome.BAD_MESSAGE


#: Each provider's outcome table.
CLASSIFY_BY_PROVIDER: dict[str, Callable[[ProviderAnswer | None], Outcome]] = {
    "apns": classify_apns,
    "fcm": classify_fcm,
    "hms": classify_hms,
}
