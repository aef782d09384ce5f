"""Every row of the outcome table (DESIGN.md section 3), for both providers."""
import pytest

from workers.delivery.answer import ProviderAnswer, parse_retry_after
from workers.delivery.fcm import parse_error
from workers.delivery.outcomes import Outcome, classify_apns, classify_fcm


@pytest.mark.parametrize(
    ("status", "reason", "expected"),
    [
        (200, None, Outcome.SENT),
        (410, "Unregistered", Outcome.DEAD_TOKEN),
        (400, "BadDeviceToken", Outcome.DEAD_TOKEN),
        (400, "DeviceTokenNotForTopic", Outcome.DEAD_TOKEN),
        (400, "BadCollapseId", Outcome.BAD_MESSAGE),
        (400, "PayloadEmpty", Outcome.BAD_MESSAGE),
        (413, "PayloadTooLarge", Outcome.BAD_MESSAGE),
        (403, "ExpiredProviderToken", Outcome.CREDENTIALS),
        (403, "InvalidProviderToken", Outcome.CREDENTIALS),
        (403, "BadCertificate", Outcome.CREDENTIALS),
        (429, "TooManyRequests", Outcome.THROTTLED),
        (500, "InternalServerError", Outcome.TRANSIENT),
        (503, "ServiceUnavailable", Outcome.TRANSIENT),
    ],
)
def test_apns_answers(status, reason, expected):
    assert classify_apns(ProviderAnswer(status, reason)) is expected


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        (ProviderAnswer(200), Outcome.SENT),
        (ProviderAnswer(404, "UNREGISTERED"), Outcome.DEAD_TOKEN),
        (ProviderAnswer(400, "INVALID_ARGUMENT", token_field=True), Outcome.DEAD_TOKEN),
        (ProviderAnswer(400, "INVALID_ARGUMENT"), Outcome.BAD_MESSAGE),
        (ProviderAnswer(401, "THIRD_PARTY_AUTH_ERROR"), Outcome.CREDENTIALS),
        (ProviderAnswer(403, "SENDER_ID_MISMATCH"), Outcome.CREDENTIALS),
        (ProviderAnswer(429, "QUOTA_EXCEEDED", retry_after=1), Outcome.THROTTLED),
        (ProviderAnswer(500, "INTERNAL"), Outcome.TRANSIENT),
        (ProviderAnswer(503, "UNAVAILABLE"), Outcome.TRANSIENT),
    ],
)
def test_fcm_answers(answer, expected):
    assert classify_fcm(answer) is expected


def test_no_answer_is_transient_for_both():
    assert classify_apns(None) is Outcome.TRANSIENT and classify_fcm(None) is Outcome.TRANSIENT


def test_only_throttled_and_transient_are_retryable():
    assert {o for o in Outcome if o.retryable} == {Outcome.THROTTLED, Outcome.TRANSIENT}


def test_fcm_error_body_gives_error_code_and_token_field():
    body = (
        b'{"error":{"code":400,"status":"INVALID_ARGUMENT","details":['
        b'{"@type":"type.googleapis.com/google.firebase.fcm.v1.FcmError","errorCode":"INVALID_ARGUMENT"},'
        b'{"@type":"type.googleapis.com/google.rpc.BadRequest","fieldViolations":[{"field":"message.token"}]}]}}'
    )
    assert parse_error(body) == ("INVALID_ARGUMENT", True)
    assert parse_error(b'{"error":{"code":503,"status":"UNAVAILABLE"}}') == ("UNAVAILABLE", False)
    assert parse_error(b"not json") == (None, False)


def test_retry_after_header_forms():
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after(None) is None
    assert parse_retry_after("garbage") is None
    assert 0 <= parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0
