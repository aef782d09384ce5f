"""The device lookup by user and activation (shared.device_lookup) against the real nx-27017.

Sends find devices through ``user_devices`` and ``activation_devices`` by
``_id``; an entry missing there is a notification lost. These tests check that
the lookup matches the devices after registers, moves, deletes and activation
moves applied in every order and delivered twice, and that an older database
is filled at start.
"""
from __future__ import annotations

import itertools
import uuid

import pymongo
import pytest

from devstack import seed
from shared import db as mongo
from shared import device_lookup
from shared.commands import command
from shared.device_lookup import send_targets as _targets
from tests.commands_seen import CommandsSeen
from tests.integration.conftest import apns_token, register
from workers import writes


@pytest.fixture
def scratch(stack):
    """A database of its own on the stack's nx-27017, for handlers called directly."""
    client = pymongo.MongoClient(stack.mongo_uri)
    name = f"lookup-{uuid.uuid4().hex[:8]}"
    yield client[name]
    client.drop_database(name)


def lookup_pairs(db, collection: str) -> list[tuple[str, str]]:
    """(key, device id) of every entry, repeats kept."""
    return sorted(
        (doc["_id"], device_lookup.parse_entry(value)[1]) for doc in db[collection].find() for value in doc.get("d") or ()
    )


def held_pairs(db) -> tuple[list, list]:
    """What the lookup must hold exactly: (user key, device) of live users, (activation, device) of every device."""
    users, activations = [], []
    for device in db[mongo.DEVICES].find():
        if not device.get("deleted"):
            users += [(device_lookup.user_key(device["app_id"], u), device["_id"]) for u in device["user_ids"]]
        activations += [(a, device["_id"]) for a in device["activation_ids"]]
    return sorted(users), sorted(activations)


def assert_lookup_matches_devices(db) -> None:
    users, activations = held_pairs(db)
    assert lookup_pairs(db, mongo.USER_DEVICES) == users
    assert lookup_pairs(db, mongo.ACTIVATION_DEVICES) == activations


def test_lookup_matches_the_devices_whatever_order_writes_run_in_and_when_each_runs_twice(scratch):
    app_id, token, other_token = "app-l", apns_token(), apns_token()

    def register_command(tok: str, user: str, activations: list[str]):
        return command("device.register", app_id=app_id, token=tok, platform="apns", environment=None,
                       user_id=user, activation_ids=activations)

    # In the API's order: register for u1, move to u2, delete, then the activation moves to another token.
    commands = [
        register_command(token, "u1", ["a1"]),
        register_command(token, "u2", ["a1"]),
        command("device.delete", app_id=app_id, token=token),
        register_command(other_token, "u1", ["a1"]),
    ]
    for order in itertools.permutations(commands):
        for name in (mongo.DEVICES, mongo.USER_DEVICES, mongo.ACTIVATION_DEVICES):
            scratch[name].delete_many({})
        for cmd in [*order, *order]:  # every command redelivered after all of them ran
            writes.HANDLERS[cmd["kind"]](scratch, cmd)
        assert_lookup_matches_devices(scratch)


def test_re_registering_a_token_keeps_one_entry_and_a_moved_token_leaves_its_old_user(scratch):
    app_id, token = "app-m", apns_token()
    for user in ("u1", "u1", "u1", "u2"):
        writes.register_device(scratch, command("device.register", app_id=app_id, token=token, platform="apns",
                                                environment=None, user_id=user, activation_ids=["a9"]))
    assert_lookup_matches_devices(scratch)  # exactly: repeats would show
    assert [i for i, _ in _targets(scratch, app_id, [{"user_id": "u1"}])] == []
    assert [d["token"] for _, d in _targets(scratch, app_id, [{"user_id": "u2"}])] == [token]


def test_purged_tombstones_leave_the_lookup(scratch):
    app_id, token = "app-p", apns_token()
    writes.register_device(scratch, command("device.register", app_id=app_id, token=token, platform="apns",
                                            environment=None, user_id="u1", activation_ids=["a1"]))
    writes.delete_device(scratch, command("device.delete", app_id=app_id, token=token))
    assert lookup_pairs(scratch, mongo.ACTIVATION_DEVICES) == [("a1", f"{app_id}:{token}")]  # a tombstone keeps it

    assert writes.purge_tombstones(scratch, older_than_seconds=0) == 1

    assert lookup_pairs(scratch, mongo.USER_DEVICES) == []
    assert lookup_pairs(scratch, mongo.ACTIVATION_DEVICES) == []


def test_a_database_without_the_lookup_is_filled_once(scratch):
    """An upgrade: devices written by a version without the lookup are still reached."""
    app_id = "app-b"
    scratch[mongo.DEVICES].insert_many([
        {"_id": f"{app_id}:t1", "app_id": app_id, "token": "t1", "platform": "apns", "environment": None,
         "activations": {"a1": "u1"}, "activation_ids": ["a1"], "user_ids": ["u1"], "deleted": False, "active": True, "ts": 5},
        {"_id": f"{app_id}:t2", "app_id": app_id, "token": "t2", "platform": "fcm", "environment": None,
         "activations": {}, "activation_ids": [], "user_ids": ["u1"], "deleted": True, "active": True, "ts": 6},
    ])
    assert [d["token"] for _, d in _targets(scratch, app_id, [{"user_id": "u1"}])] == []

    assert device_lookup.backfill(scratch) is True
    assert device_lookup.backfill(scratch) is False  # once

    assert [d["token"] for _, d in _targets(scratch, app_id, [{"user_id": "u1"}])] == ["t1"]
    assert_lookup_matches_devices(scratch)


def test_a_device_of_two_users_gets_one_delivery_per_entry_that_names_one_of_them(scratch):
    app_id = "app-s"
    scratch[mongo.DEVICES].insert_one(
        {"_id": f"{app_id}:t1", "app_id": app_id, "token": "t1", "platform": "apns", "environment": None,
         "activations": {"a1": "u1", "a2": "u2"}, "activation_ids": ["a1", "a2"], "user_ids": ["u1", "u2"],
         "deleted": False, "active": True, "ts": 5}
    )
    device_lookup.run_backfill(scratch)

    targets = [(i, d["token"]) for i, d in _targets(scratch, app_id, [{"user_id": "u1"}, {"user_id": "u2"}, {"user_id": "u3"}])]

    assert targets == [(0, "t1"), (1, "t1")]


def test_sends_follow_a_token_moved_to_another_user_through_the_api(api, new_app, stack):
    app_id = new_app()
    token = apns_token()
    first, second = f"user-{uuid.uuid4().hex[:8]}", f"user-{uuid.uuid4().hex[:8]}"
    register(api, app_id, token, "apns", first)
    register(api, app_id, token, "apns", second)

    def total(user: str) -> int:
        message = {"userId": user, "body": {"title": "x"}}
        return api.ok("/push/message/send", {"appId": app_id, "message": message})["responseObject"]["result"]["apns"]["total"]

    assert total(first) == 0 and total(second) == 1
    api.ok("/push/device/delete", {"appId": app_id, "token": token})
    assert total(second) == 0
    db = pymongo.MongoClient(stack.mongo_uri)["push"]
    keys = [device_lookup.user_key(app_id, u) for u in (first, second)]
    assert [doc["d"] for doc in db[mongo.USER_DEVICES].find({"_id": {"$in": keys}})] == [[], []]


def test_a_lookup_of_many_users_reads_each_part_in_one_round_trip(stack, scratch):
    """A part of 1,000 keys is one round trip each way (user_devices, then devices), not 101 documents and nine getMores."""
    app_id, users = "app-many", [f"u{i:04d}" for i in range(300)]
    seed.seed_devices(scratch, app_id, users, [apns_token() for _ in users], ["apns"] * len(users))
    seen = CommandsSeen()
    counted = pymongo.MongoClient(stack.mongo_uri, event_listeners=[seen])[scratch.name]
    found = device_lookup.devices_by_user(counted, app_id, users)
    assert len(found) == len(users)
    assert not [name for name in seen.names if name.startswith("getMore")], seen.names


def test_a_lookup_answers_only_live_devices_whatever_the_flags_read_back_as(scratch):
    """The flags are checked in the worker (the read has no filter on them): a deleted or inactive device is left out,
    whether its flag reads back as a boolean or, after a ``$set`` on nx-27017, as 0 or 1."""
    app_id, users = "app-live", ["u-live", "u-off", "u-gone", "u-set"]
    tokens = [apns_token() for _ in users]
    seed.seed_devices(scratch, app_id, users, tokens, ["apns"] * len(users))
    ids = [device_lookup.device_id(app_id, t) for t in tokens]
    scratch[mongo.DEVICES].update_one({"_id": ids[1]}, {"$set": {"active": False}})
    scratch[mongo.DEVICES].update_one({"_id": ids[2]}, {"$set": {"deleted": True}})
    scratch[mongo.DEVICES].update_one({"_id": ids[3]}, {"$set": {"deleted": 0, "active": 1}})
    found = device_lookup.devices_by_user(scratch, app_id, users)
    assert sorted(found) == ["u-live", "u-set"]
