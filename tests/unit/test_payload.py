"""Payload mapping: PowerAuth body → APNs, FCM and HMS."""
from datetime import UTC, datetime, timedelta

import orjson

from shared.payload import (
    HMS_MAX_TTL_SECONDS,
    Body,
    FcmTemplate,
    HmsTemplate,
    apns_push,
    display_id,
    fcm_message,
    fcm_ttl_seconds,
    hms_message,
    hms_ttl_seconds,
    parse_timestamp,
)

FULL = Body(
    title="Balance update",
    body="Your balance is now $745.00",
    badge=3,
    sound="default",
    icon="custom-icon",
    category="balance-update",
    collapse_key="balance-update",
    valid_until=parse_timestamp("2030-12-11T21:22:29Z"),
    extras={"_comment": "Any custom data.", "n": 5},
    title_loc_key="T",
    title_loc_args=("a",),
    body_loc_key="B",
    body_loc_args=("b", "c"),
)


def test_apns_alert_maps_every_field():
    push = apns_push(FULL, silent=False, high_priority=True)
    payload = orjson.loads(push.payload)
    assert payload["aps"] == {
        "alert": {
            "title": "Balance update",
            "body": "Your balance is now $745.00",
            "title-loc-key": "T",
            "title-loc-args": ["a"],
            "loc-key": "B",
            "loc-args": ["b", "c"],
        },
        "badge": 3,
        "sound": "default",
        "category": "balance-update",
        "thread-id": "balance-update",
    }
    assert payload["_comment"] == "Any custom data." and payload["n"] == 5
    assert push.push_type == "alert" and push.priority == 10
    assert push.collapse_id == "balance-update"
    assert push.expiration == int(datetime(2030, 12, 11, 21, 22, 29, tzinfo=UTC).timestamp())


def test_apns_silent_is_background_with_content_available_and_no_alert():
    push = apns_push(FULL, silent=True, high_priority=True)
    payload = orjson.loads(push.payload)
    assert payload["aps"] == {"content-available": 1, "category": "balance-update", "thread-id": "balance-update"}
    assert push.push_type == "background" and push.priority == 5


def test_the_collapse_key_is_also_the_apns_thread_id_as_the_reference_maps_it():
    payload = orjson.loads(apns_push(Body(title="t", collapse_key="chat-42"), silent=False, high_priority=True).payload)
    assert payload["aps"]["thread-id"] == "chat-42"
    assert "thread-id" not in orjson.loads(apns_push(Body(title="t"), silent=False, high_priority=True, display="m.0").payload)["aps"]


def test_null_extras_are_left_out_on_both_providers_nested_nulls_stay():
    body = Body(title="t", extras={"gone": None, "kept": "v", "nested": {"inner": None}, "zero": 0, "empty": ""})
    payload = orjson.loads(apns_push(body, silent=False, high_priority=True).payload)
    assert "gone" not in payload and payload["kept"] == "v" and payload["nested"] == {"inner": None}
    assert payload["zero"] == 0 and payload["empty"] == ""
    data = fcm_message(body, silent=False, high_priority=True)["data"]
    assert data == {"kept": "v", "nested": '{"inner":null}', "zero": "0", "empty": ""}
    assert "data" not in fcm_message(Body(extras={"only": None}), silent=True, high_priority=True)


def test_apns_normal_priority_is_5():
    assert apns_push(Body(title="x"), silent=False, high_priority=False).priority == 5


def test_fcm_notification_maps_every_field_and_stringifies_data():
    message = fcm_message(FULL, silent=False, high_priority=False)
    assert message["android"]["priority"] == "NORMAL"
    assert message["android"]["collapse_key"] == "balance-update"
    assert message["android"]["notification"] == {
        "title": "Balance update",
        "body": "Your balance is now $745.00",
        "icon": "custom-icon",
        "sound": "default",
        "tag": "balance-update",
        "click_action": "balance-update",
        "notification_count": 3,
        "title_loc_key": "T",
        "title_loc_args": ["a"],
        "body_loc_key": "B",
        "body_loc_args": ["b", "c"],
    }
    assert message["data"] == {"_comment": "Any custom data.", "n": "5"}


def test_fcm_silent_is_data_only():
    message = fcm_message(FULL, silent=True, high_priority=True)
    assert "notification" not in message["android"]
    assert "notification" not in message
    assert message["data"]["_comment"] == "Any custom data."


def test_fcm_template_splices_token_and_ttl():
    template = FcmTemplate(fcm_message(Body(title="t"), silent=False, high_priority=True), ttl_seconds=60)
    body = orjson.loads(template.request_body('tok"en'))
    assert body["message"]["token"] == 'tok"en'
    assert body["message"]["android"]["ttl"] == "60s"
    assert body["message"]["android"]["notification"]["title"] == "t"


def test_fcm_ttl_is_what_is_left_of_valid_until_and_never_negative():
    now = datetime(2030, 1, 1, tzinfo=UTC)
    assert fcm_ttl_seconds(now + timedelta(seconds=90), now) == 90
    assert fcm_ttl_seconds(now - timedelta(seconds=5), now) == 0
    assert fcm_ttl_seconds(None, now) == 2419200


def test_body_round_trips_through_json():
    assert Body.from_json(FULL.to_json()) == FULL


def test_timestamps_accept_z_offsets_and_naive_as_utc():
    assert parse_timestamp("2030-01-01T00:00:00Z") == datetime(2030, 1, 1, tzinfo=UTC)
    assert parse_timestamp("2030-01-01T02:00:00+02:00") == datetime(2030, 1, 1, tzinfo=UTC)
    assert parse_timestamp("2030-01-01T00:00:00") == datetime(2030, 1, 1, tzinfo=UTC)


def test_without_a_collapse_key_a_notification_is_shown_under_its_display_id():
    display = display_id("m" * 32, 3)
    assert display == "m" * 32 + ".3"
    push = apns_push(Body(title="t"), silent=False, high_priority=True, display=display)
    assert push.collapse_id == display
    message = fcm_message(Body(title="t"), silent=False, high_priority=True, display=display)
    assert message["android"]["notification"]["tag"] == display
    # Not android.collapse_key: FCM keeps only four per offline device, a key per message would drop messages.
    assert "collapse_key" not in message["android"]


def test_the_senders_collapse_key_wins_over_the_display_id():
    body = Body(title="t", collapse_key="balance")
    assert apns_push(body, silent=False, high_priority=True, display="x.0").collapse_id == "balance"
    assert fcm_message(body, silent=False, high_priority=True, display="x.0")["android"]["notification"]["tag"] == "balance"


def test_a_silent_push_shows_nothing_so_gets_no_display_id():
    assert apns_push(Body(title="t"), silent=True, high_priority=True, display="x.0").collapse_id is None
    assert "notification" not in fcm_message(Body(title="t"), silent=True, high_priority=True, display="x.0")["android"]
    # A data-only body makes no notification just to carry a tag.
    assert "notification" not in fcm_message(Body(extras={"k": "v"}), silent=False, high_priority=True, display="x.0")["android"]


def test_display_id_is_per_message_and_entry_and_fits_apns():
    assert display_id("m", 0) != display_id("m", 1) != display_id("n", 1)
    long = display_id("x" * 100, 7)
    assert len(long.encode()) <= 64 and long == display_id("x" * 100, 7) and long != display_id("x" * 100, 8)


def test_hms_notification_maps_every_field_and_carries_extras_as_json_text():
    message = hms_message(FULL, silent=False, high_priority=True, display="m.0")
    assert message["android"]["urgency"] == "HIGH"
    assert "collapse_key" not in message["android"]  # "balance-update" is not one of HMS's -1…100
    assert message["android"]["notification"] == {
        "title": "Balance update",
        "body": "Your balance is now $745.00",
        "icon": "custom-icon",
        "default_sound": True,
        "tag": "balance-update",
        "click_action": {"type": 1, "action": "balance-update"},
        "title_loc_key": "T",
        "title_loc_args": ["a"],
        "body_loc_key": "B",
        "body_loc_args": ["b", "c"],
    }
    assert orjson.loads(message["data"]) == {"_comment": "Any custom data.", "n": 5}
    assert "notification" not in message  # everything is in android.notification


def test_hms_without_collapse_key_is_tagged_with_the_display_id_and_opens_the_app():
    message = hms_message(Body(title="t", sound="chime", extras={"gone": None}), silent=False, high_priority=False, display="m.0")
    notification = message["android"]["notification"]
    assert notification["tag"] == "m.0" and notification["click_action"] == {"type": 3} and notification["sound"] == "chime"
    assert message["android"]["urgency"] == "NORMAL"
    assert "data" not in message  # no extras left after the null is dropped


def test_hms_numeric_collapse_key_is_also_its_collapse_key():
    assert hms_message(Body(title="t", collapse_key="7"), silent=False, high_priority=True)["android"]["collapse_key"] == 7
    assert hms_message(Body(title="t", collapse_key="-1"), silent=False, high_priority=True)["android"]["collapse_key"] == -1
    assert "collapse_key" not in hms_message(Body(title="t", collapse_key="101"), silent=False, high_priority=True)["android"]


def test_hms_silent_is_a_data_message_with_data_even_without_extras():
    message = hms_message(FULL, silent=True, high_priority=True, display="m.0")
    assert "notification" not in message["android"] and "notification" not in message
    assert orjson.loads(message["data"])["n"] == 5
    assert hms_message(Body(), silent=True, high_priority=True)["data"] == "{}"


def test_hms_template_sends_one_token_with_the_ttl_and_measures_the_message_without_it():
    template = HmsTemplate(hms_message(Body(title="t"), silent=False, high_priority=True), ttl_seconds=60)
    body = orjson.loads(template.request_body('tok"en'))
    assert body["validate_only"] is False
    assert body["message"]["token"] == ['tok"en']
    assert body["message"]["android"]["ttl"] == "60s"
    without_token = {k: v for k, v in body["message"].items() if k != "token"}
    assert template.message_bytes == len(orjson.dumps(without_token))


def test_hms_ttl_is_what_is_left_of_valid_until_within_hms_limit():
    now = datetime(2030, 1, 1, tzinfo=UTC)
    assert hms_ttl_seconds(now + timedelta(seconds=90), now) == 90
    assert hms_ttl_seconds(now - timedelta(seconds=5), now) == 0
    assert hms_ttl_seconds(now + timedelta(days=30), now) == HMS_MAX_TTL_SECONDS == hms_ttl_seconds(None, now)
