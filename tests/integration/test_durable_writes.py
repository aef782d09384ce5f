"""A write RabbitMQ confirmed is never answered as failed; a retried write lands once (real MongoDB outage).

Issue 14 item 6: an inbox post was published, then the API's wait for it to be
applied hit a MongoDB outage and answered 503; the client retried and two
messages were stored. Here a second API reaches nx-27017 through a TCP proxy
(tests/integration/tcp_proxy.py) that the test cuts once the post is queued
(the core workers are stopped meanwhile, so it is not applied before the cut).
"""
from __future__ import annotations

import threading
import time
import uuid

import pymongo
import pytest
import requests

from devstack.stack import free_port
from shared import db as mongo
from tests import waiting
from tests.integration.conftest import Api
from tests.integration.tcp_proxy import TcpProxy

#: How long the proxied API waits for a write to be applied (longer than the outage takes to show).
APPLY_WAIT_SECONDS = "20"


@pytest.fixture(scope="module")
def mongo_proxy(stack):
    proxy = TcpProxy(("127.0.0.1", stack.ports.mongo))
    proxy.start()
    yield proxy
    proxy.cut()


@pytest.fixture(scope="module")
def proxied(stack, mongo_proxy) -> Api:
    """An API whose MongoDB is behind the proxy (the workers reach nx-27017 directly)."""
    env = {"PUSH_MONGO_URI": f"mongodb://127.0.0.1:{mongo_proxy.port}", "PUSH_API_APPLY_WAIT_SECONDS": APPLY_WAIT_SECONDS}
    url = stack.start_api(name="api-mongo-proxied", port=free_port(), env=env)
    yield Api(url)
    stack.stop("api-mongo-proxied")


@pytest.fixture(scope="module")
def database(stack):
    client = pymongo.MongoClient(stack.mongo_uri, tz_aware=True)
    yield client["push"]
    client.close()


def inbox_post(user: str, app_id: str, subject: str = "a subject") -> dict:
    return {"userId": user, "type": "text", "subject": subject, "summary": "a summary", "body": "the body of it", "applications": [app_id]}


def messages_of(database, user: str) -> list[dict]:
    return list(database[mongo.INBOX].find({"user_id": user}))


def test_a_post_queued_before_a_mongodb_outage_is_answered_202_with_its_id_and_stored_once(stack, proxied, mongo_proxy, database, new_app):
    app_id, user = new_app(), f"outage-{uuid.uuid4().hex[:6]}"
    clock_before = database["write_clocks"].find_one({"_id": "writes"})["n"]
    stack.stop_workers(("core",))
    answers: list[requests.Response] = []
    try:
        poster = threading.Thread(target=lambda: answers.append(proxied.post("/inbox/messages", inbox_post(user, app_id))))
        poster.start()
        # The post claimed its order (the step before publishing); give the publish a moment, then cut MongoDB away.
        waiting.wait_for(lambda: database["write_clocks"].find_one({"_id": "writes"})["n"] > clock_before, timeout=30,
                         what="the post's write order", every=0.01)
        time.sleep(0.5)
        mongo_proxy.cut()
        poster.join(timeout=60)
    finally:
        mongo_proxy.restore()
        stack.start_workers(("core",))
    [answer] = answers
    assert answer.status_code == 202, answer.text
    body = answer.json()
    assert body["status"] == "OK" and answer.headers["X-Command-Id"]
    inbox_id = body["responseObject"]["id"]
    stored = waiting.wait_for(lambda: messages_of(database, user), timeout=60, what="the post applied")
    assert [m["_id"] for m in stored] == [inbox_id]
    time.sleep(1.0)
    assert len(messages_of(database, user)) == 1


def test_a_post_retried_with_its_idempotency_key_is_stored_once(api, database, new_app):
    app_id, user = new_app(), f"retry-{uuid.uuid4().hex[:6]}"
    key = {"Idempotency-Key": uuid.uuid4().hex}
    url = f"{api.base_url}/inbox/messages"
    first = requests.post(url, json={"requestObject": inbox_post(user, app_id)}, headers=key, timeout=60)
    again = requests.post(url, json={"requestObject": inbox_post(user, app_id)}, headers=key, timeout=60)
    assert first.status_code == again.status_code == 200, (first.text, again.text)
    assert first.json()["responseObject"]["id"] == again.json()["responseObject"]["id"]
    assert len(messages_of(database, user)) == 1
    other = requests.post(url, json={"requestObject": inbox_post(user, app_id, subject="another subject")}, headers=key, timeout=60)
    assert other.status_code == 422, other.text
    assert "Idempotency-Key" in other.json()["responseObject"]["message"]
    assert len(messages_of(database, user)) == 1


def test_a_send_key_reused_with_another_body_is_a_422_not_the_old_message(api, new_app):
    app_id = new_app()
    key = {"Idempotency-Key": uuid.uuid4().hex}
    url = f"{api.base_url}/push/message/send"

    def send(title: str) -> requests.Response:
        body = {"requestObject": {"appId": app_id, "mode": "ASYNCHRONOUS", "message": {"userId": "nobody", "body": {"title": title}}}}
        return requests.post(url, json=body, headers=key, timeout=60)

    first, again = send("first"), send("first")
    assert first.status_code == again.status_code == 200
    assert first.json()["responseObject"]["messageId"] == again.json()["responseObject"]["messageId"]
    reused = send("something else")
    assert reused.status_code == 422, reused.text
    assert reused.json()["responseObject"]["code"] == "ERROR_IDEMPOTENCY_KEY_REUSED"
