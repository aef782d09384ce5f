"""The WalletConnect v1 bridge's pure logic: validation, expiry, the polling fast path, webhook retries."""
from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import orjson
import pytest
import requests

from api import wc_bridge as api
from api.errors import ApiError
from shared import db as mongo
from shared.settings import load
from workers import wc_bridge as workers

NOW = datetime(2030, 1, 1, tzinfo=UTC)


# --- expiry ---------------------------------------------------------------------------------------

def test_expiry_is_the_api_receive_time_plus_the_ttl_so_a_replay_stores_the_same():
    cmd = {"received_at": int(NOW.timestamp() * 1e9)}
    assert workers.expires_at(cmd, 3600) == NOW + timedelta(hours=1)
    assert workers.expires_at(cmd, 3600) == workers.expires_at(dict(cmd), 3600)


@pytest.mark.parametrize(
    ("doc", "alive"),
    [
        (None, False),
        ({"payload": "x", "expires_at": NOW + timedelta(seconds=1)}, True),
        ({"payload": "x", "expires_at": NOW}, False),
        ({"payload": "x", "expires_at": NOW - timedelta(seconds=1)}, False),
        ({"payload": "x", "expires_at": NOW + timedelta(hours=1), "deleted": True}, False),
        ({"payload": "x"}, True),
        ({"payload": "x", "expires_at": "2030-01-01 00:00:00.001000"}, True),
        ({"payload": "x", "expires_at": "2029-12-31 23:59:59.999000"}, False),
    ],
)
def test_expired_or_deleted_documents_read_as_absent(doc, alive):
    assert (api.live(doc, NOW) is not None) is alive


# --- answers --------------------------------------------------------------------------------------

def assert_payload_answer(answer: dict, payload, *, ttl_seconds: int) -> None:
    """``answer`` is a stored payload in both forms, expiring in about ``ttl_seconds``."""
    assert answer["data"] == {k: answer[k] for k in ("encryptionPayload", "expires", "ttlInSeconds")}
    assert set(answer) == {"encryptionPayload", "expires", "ttlInSeconds", "data"}
    assert answer["encryptionPayload"] == payload
    assert ttl_seconds - 5 <= answer["ttlInSeconds"] <= ttl_seconds
    assert abs(answer["expires"] / 1000 - time.time() - answer["ttlInSeconds"]) <= 2


def test_a_stored_payload_is_answered_at_the_top_and_in_data_with_its_ttl_fields():
    doc = {"payload": {"data": "d"}, "expires_at": NOW + timedelta(seconds=90, milliseconds=250)}
    stored = {"encryptionPayload": {"data": "d"}, "expires": int(NOW.timestamp() * 1000) + 90_250, "ttlInSeconds": 91}
    assert api.payload_answer(doc, NOW) == {**stored, "data": stored}
    # nx-27017 answers a date written by $set as a naive string; a passed expiry is 0 seconds left.
    assert api.stored_payload({"payload": "p", "expires_at": "2029-12-31 23:59:59.000000"}, NOW)["ttlInSeconds"] == 0
    # Nothing to answer: expired (as live() says), deleted, no payload yet, no document.
    for gone in ({"payload": "p", "expires_at": NOW}, {**doc, "deleted": True}, {**doc, "payload": None}, None):
        assert api.payload_answer(gone, NOW) is None
    assert api.payload_answer({"payload": "p", "expires_at": NOW + timedelta(microseconds=1)}, NOW)["ttlInSeconds"] == 1


def test_an_empty_webhook_is_no_webhook():
    push = api.push_target({"push": {"type": "fcm", "token": "t", "webhook": ""}})
    assert push == {"type": "fcm", "token": "t", "webhook": None}


# --- validation -----------------------------------------------------------------------------------

def field_of(call) -> tuple[int, str | None]:
    with pytest.raises(ApiError) as raised:
        call()
    return raised.value.status, raised.value.field


@pytest.mark.parametrize("body", [{}, {"encryptionPayload": None}, {"encryptionPayload": ""}, {"encryptionPayload": 3}, {"encryptionPayload": {}}])
def test_a_missing_or_malformed_encryption_payload_is_a_400_naming_it(body):
    assert field_of(lambda: api.encryption_payload(body)) == (400, "encryptionPayload")


def test_encryption_payload_is_taken_as_the_wallet_sent_it():
    payload = {"data": "ab", "hmac": "cd", "iv": "ef"}
    assert api.encryption_payload({"encryptionPayload": payload}) is payload


@pytest.mark.parametrize(
    ("push", "field"),
    [
        ("fcm", "push"),
        ({"token": "t"}, "push.type"),
        ({"type": "fcm"}, "push.token"),
        ({"type": "fcm", "token": 5}, "push.token"),
        ({"type": "fcm", "token": "t", "webhook": "ftp://example.org/x"}, "push.webhook"),
        ({"type": "fcm", "token": "t", "webhook": "not a url"}, "push.webhook"),
        ({"type": "fcm", "token": "t" * 5000}, "push.token"),
    ],
)
def test_a_bad_push_target_is_a_400_naming_the_field(push, field):
    assert field_of(lambda: api.push_target({"push": push})) == (400, field)


def test_push_target_is_optional_and_keeps_type_token_and_webhook():
    assert api.push_target({}) is None
    push = {"type": "fcm", "token": "tok", "webhook": "http://127.0.0.1:9/push", "extra": 1}
    assert api.push_target({"push": push}) == {"type": "fcm", "token": "tok", "webhook": "http://127.0.0.1:9/push"}


def test_errors_render_as_json_with_the_field():
    answer = api.render_error(ApiError(400, "encryptionPayload: is required", field="encryptionPayload"))
    assert answer.status_code == 400
    assert answer.mimetype == "application/json"
    assert orjson.loads(answer.get_data()) == {"message": "encryptionPayload: is required", "field": "encryptionPayload"}
    unavailable = api.render_error(ApiError(503, "down", retry_after=5))
    assert unavailable.headers["Retry-After"] == "5"


# --- the polling fast path ------------------------------------------------------------------------

class FakeCollection:
    """Answers ``find`` by ``_id $in`` from a dict; records each query."""

    def __init__(self, docs: dict, *, delay: float = 0.0):
        self.docs = docs
        self.queries = []
        self.delay = delay

    def find(self, query, projection=None):
        self.queries.append((query, projection))
        time.sleep(self.delay)
        return [self.docs[i] for i in query["_id"]["$in"] if i in self.docs]


class FakeDb(dict):
    def __missing__(self, name):
        self[name] = FakeCollection({})
        return self[name]


def polled_db(delay: float = 0.0) -> FakeDb:
    later = datetime.now(UTC) + timedelta(hours=1)
    db = FakeDb()
    db[mongo.WC_SESSIONS] = FakeCollection(
        {
            "ready": {"_id": "ready", "payload": {"data": "d"}, "expires_at": later},
            "waiting": {"_id": "waiting", "payload": None, "expires_at": later},
            "old": {"_id": "old", "payload": "p", "expires_at": datetime.now(UTC) - timedelta(seconds=1)},
            "gone": {"_id": "gone", "payload": None, "deleted": True, "expires_at": later},
        },
        delay=delay,
    )
    db[mongo.WC_CALL_STATUS] = FakeCollection({"c1": {"_id": "c1", "payload": "s", "expires_at": later}}, delay=delay)
    return db


def answer(path: str, db: FakeDb | None = None):
    """A poll answered as the RSGI app answers it: the target of the path, the reader's read, the answer."""
    reader = api.PollReader(db or polled_db(), fresh_seconds=0.0)
    target = api.poll_target(path)
    return api.poll_answer(reader.get(*target))


@pytest.mark.parametrize(
    ("path", "status", "body"),
    [
        ("/session/ready", 200, {"data": "d"}),
        ("/session/waiting", 204, None),
        ("/session/unknown", 204, None),
        ("/session/old", 204, None),
        ("/session/gone", 204, None),
        ("/call-status/c1", 200, "s"),
        ("/call-status/c2", 204, None),
    ],
)
def test_polls_are_answered_from_the_reader(path, status, body):
    got_status, headers, raw = answer(path)
    headers = dict(headers)
    assert got_status == status
    if body is None:
        # No Content-Length on a 204 (RFC 9110 section 8.6); the type the document gives.
        assert raw == b"" and headers == {"Content-Type": "text/plain"}
    else:
        assert_payload_answer(orjson.loads(raw), body, ttl_seconds=3600)
        assert headers["Content-Type"] == "application/json"
        assert headers["Content-Length"] == str(len(raw))


@pytest.mark.parametrize("path", ["/session/ready/calls", "/session/", "/push/service/status", "/session/" + "x" * 300, "/call-status/c1/new"])
def test_only_the_two_polled_routes_are_poll_targets(path):
    assert api.poll_target(path) is None


def test_a_failed_read_raises_for_the_route_to_answer():
    db = polled_db()

    def broken(query, projection=None):
        raise ConnectionError("database down")

    db[mongo.WC_SESSIONS].find = broken
    with pytest.raises(ConnectionError):
        api.PollReader(db, fresh_seconds=0.0).get(api.SESSION, "ready")


def test_the_reader_reads_by_id_with_a_projection():
    db = polled_db()
    answer("/session/ready", db)
    assert db[mongo.WC_SESSIONS].queries == [({"_id": {"$in": ["ready"]}}, api.POLL_PROJECTION)]


def test_concurrent_pollers_share_batched_reads():
    db = polled_db(delay=0.05)
    reader = api.PollReader(db, fresh_seconds=0.0)
    keys = ["ready", "waiting", "unknown"] * 10
    with ThreadPoolExecutor(len(keys)) as pool:
        docs = list(pool.map(lambda key: reader.get(api.SESSION, key), keys))
    assert [d["_id"] if d else None for d in docs] == [k if k != "unknown" else None for k in keys]
    queries = db[mongo.WC_SESSIONS].queries
    assert len(queries) <= 3 and sum(len(q["_id"]["$in"]) for q, _ in queries) <= 9


def test_a_fresh_read_answers_again_until_this_process_writes():
    db = polled_db()
    reader = api.PollReader(db, fresh_seconds=60.0)
    sessions = db[mongo.WC_SESSIONS]
    assert reader.get(api.SESSION, "waiting")["payload"] is None
    sessions.docs["waiting"] = {**sessions.docs["waiting"], "payload": "now"}
    assert reader.get(api.SESSION, "waiting")["payload"] is None
    assert len(sessions.queries) == 1

    reader.forget(api.SESSION, "waiting")

    assert reader.get(api.SESSION, "waiting")["payload"] == "now"
    assert len(sessions.queries) == 2


def test_a_steadily_polled_id_is_refreshed_in_the_background():
    db = polled_db()
    reader = api.PollReader(db, fresh_seconds=0.2)
    sessions = db[mongo.WC_SESSIONS]
    assert reader.get(api.SESSION, "waiting")["payload"] is None
    sessions.docs["waiting"] = {**sessions.docs["waiting"], "payload": "now"}
    changed_at = time.monotonic()
    slowest = 0.0
    while True:
        started = time.monotonic()
        payload = reader.get(api.SESSION, "waiting")["payload"]
        slowest = max(slowest, time.monotonic() - started)
        if payload == "now":
            break
        assert time.monotonic() - changed_at < 0.2 + 0.1, "not refreshed within fresh_seconds"
        time.sleep(0.01)
    assert slowest < 0.05, "a steady poller waited for a read"


def test_an_id_no_longer_polled_is_no_longer_read():
    db = polled_db()
    reader = api.PollReader(db, fresh_seconds=0.05)
    reader.get(api.SESSION, "ready")
    time.sleep(0.3)
    reads = len(db[mongo.WC_SESSIONS].queries)
    time.sleep(0.3)
    assert len(db[mongo.WC_SESSIONS].queries) == reads


def test_without_freshness_every_poll_reads_anew():
    db = polled_db()
    reader = api.PollReader(db, fresh_seconds=0.0)
    reader.get(api.CALL_STATUS, "c1")
    reader.get(api.CALL_STATUS, "c1")
    assert len(db[mongo.WC_CALL_STATUS].queries) == 2


# --- webhook retries ------------------------------------------------------------------------------

class FakeAnswer:
    def __init__(self, status: int):
        self.status_code = status

    def close(self):
        pass


class ScriptedSession:
    """Answers each POST with the next item of ``script`` (a status, or an exception to raise)."""

    def __init__(self, script):
        self.script = list(script)
        self.posts = []

    def post(self, url, json, timeout):
        self.posts.append((url, json))
        item = self.script.pop(0)
        if isinstance(item, Exception):
            raise item
        return FakeAnswer(item)


def context(script, **settings) -> workers.WebhookContext:
    values = {"delivery_in_process_tries": 3, "delivery_max_in_process_wait": 2.0, **settings}
    return workers.WebhookContext(db=None, publisher=None, settings=load({}, **values), session=ScriptedSession(script))


@pytest.mark.parametrize(
    ("status", "sent", "retryable"),
    [(200, True, False), (204, True, False), (400, False, False), (404, False, False), (429, False, True), (500, False, True), (503, False, True), (None, False, True)],
)
def test_webhook_answers_are_classified(status, sent, retryable):
    attempt = workers.Attempt(status)
    assert (attempt.sent, attempt.retryable) == (sent, retryable)


def test_transient_webhook_failures_are_retried_in_process_then_sent():
    ctx = context([requests.ConnectionError("refused"), 503, 200])
    attempt, tries = workers.post_with_retries(ctx, "http://127.0.0.1:9/", {"a": 1}, earlier_attempts=0)
    assert attempt.sent and tries == 3
    assert len(ctx.session.posts) == 3


def test_a_permanent_webhook_refusal_is_not_retried():
    ctx = context([410])
    attempt, tries = workers.post_with_retries(ctx, "http://127.0.0.1:9/", {}, earlier_attempts=0)
    assert attempt.status == 410 and not attempt.retryable and tries == 1


def test_in_process_retries_stop_after_the_configured_tries():
    ctx = context([500, 500, 500, 200])
    attempt, tries = workers.post_with_retries(ctx, "http://127.0.0.1:9/", {}, earlier_attempts=0)
    assert attempt.status == 500 and tries == 3


def test_in_process_retries_stop_before_a_long_wait():
    ctx = context([500, 200], delivery_max_in_process_wait=0.5)
    attempt, tries = workers.post_with_retries(ctx, "http://127.0.0.1:9/", {}, earlier_attempts=10)
    assert attempt.status == 500 and tries == 1


def test_backoff_grows_and_is_capped():
    settings = load({}, delivery_max_backoff=30.0)
    waits = [workers.backoff(n, settings) for n in range(1, 12)]
    assert waits[0] < 1.0
    assert waits[5] > waits[0]
    assert max(waits) <= 30.0
