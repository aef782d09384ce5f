"""Every row of the outcome table (the docstring of workers/delivery/outcomes.py), for every provider."""
import pytest

from shared.commands import PUSH_PROVIDERS
from workers.delivery.answer import ProviderAnswer, parse_retry_after
from workers.delivery.fcm import parse_error
from workers.delivery.hms import read_answer
from workers.delivery.outcomes import CLASSIFY_BY_PROVIDER, Outcome, classify_apns, classify_fcm, classify_hms


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


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        (ProviderAnswer(200, code="80000000"), Outcome.SENT),
        (ProviderAnswer(200, code="80100000"), Outcome.SENT),  # partial success not naming the request's token
        (ProviderAnswer(200, "80100000 …", code="80100000", token_field=True), Outcome.DEAD_TOKEN),
        (ProviderAnswer(400, "80300007 All the tokens are invalid", code="80300007"), Outcome.DEAD_TOKEN),
        (ProviderAnswer(400, code="80100001"), Outcome.BAD_MESSAGE),
        (ProviderAnswer(400, code="80100003"), Outcome.BAD_MESSAGE),
        (ProviderAnswer(400, code="80300008"), Outcome.BAD_MESSAGE),
        (ProviderAnswer(400, code="80300010"), Outcome.BAD_MESSAGE),
        (ProviderAnswer(200, code="89999999"), Outcome.BAD_MESSAGE),  # not a success code
        (ProviderAnswer(401, code="80200001"), Outcome.CREDENTIALS),
        (ProviderAnswer(401, code="80200003"), Outcome.CREDENTIALS),
        (ProviderAnswer(403, code="80300002"), Outcome.CREDENTIALS),
        (ProviderAnswer(401, "token endpoint refused the client"), Outcome.CREDENTIALS),
        (ProviderAnswer(503, code="81000001", retry_after=2), Outcome.THROTTLED),
        (ProviderAnswer(503, "HTTP 503"), Outcome.THROTTLED),
        (ProviderAnswer(429), Outcome.THROTTLED),
        (ProviderAnswer(500, code="81000001"), Outcome.TRANSIENT),
        (ProviderAnswer(502, "HTTP 502"), Outcome.TRANSIENT),
        (None, Outcome.TRANSIENT),
    ],
)
def test_hms_answers(answer, expected):
    assert classify_hms(answer) is expected


def test_every_push_provider_has_an_outcome_table():
    assert set(CLASSIFY_BY_PROVIDER) == set(PUSH_PROVIDERS)
    assert CLASSIFY_BY_PROVIDER["hms"] is classify_hms


@pytest.mark.parametrize(
    ("status", "body", "retry_after", "expected"),
    [
        (200, b'{"code":"80000000","msg":"Success","requestId":"r1"}', None,
         ProviderAnswer(200, provider_id="r1", code="80000000")),
        (200, b'{"code":"80100000","msg":"{\\"success\\":0,\\"failure\\":1,\\"illegal_tokens\\":[\\"tok\\"]}","requestId":"r2"}', None,
         ProviderAnswer(200, '80100000 {"success":0,"failure":1,"illegal_tokens":["tok"]}', provider_id="r2", token_field=True,
                        code="80100000")),
        (200, b'{"code":"80100000","msg":"{\\"success\\":1,\\"failure\\":1,\\"illegal_tokens\\":[\\"other\\"]}"}', None,
         ProviderAnswer(200, code="80100000")),
        (400, b'{"code":"80100001","msg":"Illegal field: message.android.urgency"}', None,
         ProviderAnswer(400, "80100001 Illegal field: message.android.urgency", code="80100001")),
        (503, b'{"code":"81000001","msg":"flow control"}', "3", ProviderAnswer(503, "81000001 flow control", retry_after=3.0, code="81000001")),
        (503, b"<html>busy</html>", None, ProviderAnswer(503, "HTTP 503")),
    ],
)
def test_hms_answer_bodies_are_read_for_the_table(status, body, retry_after, expected):
    assert read_answer(status, body, retry_after, "tok") == expected
