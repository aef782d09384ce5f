"""Provider credentials are sealed in the commands that cross RabbitMQ and at rest in MongoDB, open where a client is built,
and the rotation command re-wraps them (shared/sealed_credentials.py, ops/rotate_credentials.py).

The stack runs with ``PUSH_CREDENTIAL_KEYS`` (TEST_SETTINGS), so every app of
the integration tests sends with sealed credentials; these tests look at what
lies in MongoDB and in a queue, and rotate keys on a scratch database.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid

import pika
import pymongo
import pytest

from devstack.credentials import configure_app, make_credentials
from devstack.stack import ROOT, Ports, Stack, free_port
from shared import db as mongo
from shared.commands import queue_name_for_prefix
from shared.sealed_credentials import SEALED, CredentialKeys, new_key_entry
from shared.settings import load
from tests.integration.conftest import TEST_SETTINGS, apns_token, fcm_token, register

SECRET_MARKERS = ("PRIVATE KEY", "private_key", "BEGIN CERTIFICATE")


@pytest.fixture(scope="module")
def database(stack):
    client = pymongo.MongoClient(stack.mongo_uri)
    yield client["push"]
    client.close()


def test_uploaded_credentials_lie_sealed_in_mongodb_and_still_deliver(api, new_app, database, apns_sim, fcm_sim):
    app_id = new_app()
    app = database[mongo.APPS].find_one({"_id": app_id})
    stored = json.dumps({"apns": app["apns"], "fcm": app["fcm"]}, default=str)
    assert not any(marker in stored for marker in SECRET_MARKERS), stored[:500]
    key_id = TEST_SETTINGS["PUSH_CREDENTIAL_KEYS"].split(":", 1)[0]
    assert app["apns"][SEALED]["kid"] == app["fcm"][SEALED]["kid"] == key_id
    assert app["apns"]["bundle"] == f"com.example.{app_id}"  # what is not secret stays readable
    ios, android = apns_token(), fcm_token()
    register(api, app_id, ios, "ios", "sealed-user")
    register(api, app_id, android, "android", "sealed-user")
    sent = api.ok("/push/message/send", {"appId": app_id, "message": {"userId": "sealed-user", "body": {"title": "t"}}})
    assert sent["responseObject"]["result"]["apns"]["sent"] == sent["responseObject"]["result"]["fcm"]["sent"] == 1
    assert apns_sim.delivered(ios) == fcm_sim.delivered(android) == 1
    detail = api.get("/admin/app/detail", appId=app_id).json()["responseObject"]
    assert detail["apnsPrivateKeyPresent"] and detail["fcmPrivateKeyPresent"]


def test_the_credentials_command_crosses_rabbitmq_sealed(stack):
    """An API whose queues no worker consumes: its app.provider command stays in the persist queue to be read."""
    prefix = f"sealed-{uuid.uuid4().hex[:8]}."
    url = stack.start_api(name="api-sealed", port=free_port(), env={"PUSH_QUEUE_PREFIX": prefix, "PUSH_API_APPLY_WAIT_SECONDS": "0.5"})
    connection = pika.BlockingConnection(pika.URLParameters(load().amqp_url))
    queue = queue_name_for_prefix(prefix, "persist")
    try:
        app_id = f"sealed-{uuid.uuid4().hex[:6]}"
        credentials = make_credentials(app_id, fcm_origin=f"https://127.0.0.1:{stack.ports.fcm}")
        # The writes are not applied (nobody consumes): each is answered 202 (accepted), which configure_app refuses.
        with pytest.raises(RuntimeError, match="answered 202"):
            configure_app(url, app_id, credentials)
        channel = connection.channel()
        bodies = []
        while True:
            method, _, body = channel.basic_get(queue, auto_ack=True)
            if method is None:
                break
            bodies.append(body.decode())
        assert bodies, "nothing queued"
        assert not any(marker in body for body in bodies for marker in SECRET_MARKERS)
    finally:
        stack.stop("api-sealed")
        channel = connection.channel()
        for suffix in ("", ".DQ", ".XQ"):
            channel.queue_delete(queue + suffix)
        connection.close()


@pytest.fixture
def scratch(tmp_path):
    """A database of its own: a separate nx-27017 (the databases of one nx-27017 file share their collections)."""
    own = Stack(var_dir=tmp_path, ports=Ports(mongo=free_port()))
    own.start_mongo()
    client = pymongo.MongoClient(own.mongo_uri)
    yield client["push"]
    client.close()
    own.stop_all()


def rotate(stack, scratch, keys: str, *args: str) -> subprocess.CompletedProcess:
    host, port = scratch.client.address
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PUSH_MONGO_URI": f"mongodb://{host}:{port}", "PUSH_CREDENTIAL_KEYS": keys}
    return subprocess.run([sys.executable, "-m", "ops.rotate_credentials", *args], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


def test_the_rotation_command_rewraps_every_app_under_the_new_key(stack, scratch):
    old, new = new_key_entry(), new_key_entry()
    old_keys = CredentialKeys.parse(old)
    apns = {"auth": "token", "bundle": "com.r", "key_id": "K", "team_id": "T", "private_key": "-----BEGIN PRIVATE KEY-----\nR\n"}
    fcm = {"project_id": "p", "service_account": {"private_key": "FCM-R", "client_email": "r@p"}}
    scratch[mongo.APPS].insert_many([
        {"_id": "sealed-app", "apns": old_keys.seal("sealed-app", "apns", apns), "fcm": old_keys.seal("sealed-app", "fcm", fcm),
         "apns_ts": 5, "fcm_ts": 5},
        {"_id": "clear-app", "apns": apns, "fcm": None, "apns_ts": 3, "fcm_ts": 0},
    ])
    dry = rotate(stack, scratch, f"{new},{old}", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert scratch[mongo.APPS].find_one({"_id": "clear-app"})["apns"] == apns
    done = rotate(stack, scratch, f"{new},{old}")
    assert done.returncode == 0, done.stderr
    assert "re-wrapped: 2" in done.stdout and "sealed (was in clear): 1" in done.stdout, done.stdout
    only_new = CredentialKeys.parse(new)
    for app in scratch[mongo.APPS].find():
        for provider, clear in (("apns", apns), ("fcm", fcm)):
            if app[provider] is None:
                continue
            assert app[provider][SEALED]["kid"] == only_new.current
            assert only_new.open(app["_id"], provider, app[provider]) == clear
    again = rotate(stack, scratch, f"{new},{old}")
    assert "already current: 3" in again.stdout, again.stdout
    new_key = rotate(stack, scratch, "", "--new-key")
    assert CredentialKeys.parse(new_key.stdout.strip()).sealing
