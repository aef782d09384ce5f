"""The send entry's JSON form is the one older workers read (shared/send_entry.py)."""
from __future__ import annotations

from shared.send_entry import SendEntry

BODY = {"title": "t", "body": "b"}


def test_a_user_entry_has_the_fields_older_workers_read():
    entry = SendEntry.for_user("u1", BODY, activation_id="a1", personal=True, silent=True, high_priority=False)
    assert entry.to_json() == {"user_id": "u1", "activation_id": "a1", "personal": True, "silent": True, "high_priority": False, "body": BODY}
    assert SendEntry.from_json(entry.to_json()) == entry


def test_a_device_entry_names_the_device_and_its_dead_token_action():
    device = {"_id": "k:tok", "token": "tok", "platform": "fcm", "environment": None}
    plain = SendEntry.for_device(device, BODY)
    assert plain.to_json() == {"device": device, "body": BODY, "silent": False, "high_priority": True}
    wc = SendEntry.for_device(device, BODY, silent=True, dead_token="wc_push_client")
    assert wc.to_json()["dead_token"] == "wc_push_client"
    assert SendEntry.from_json(wc.to_json()) == wc
    assert wc.decoded_body().title == "t"
