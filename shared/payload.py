"""A push message body, as the PowerAuth API describes it, mapped to APNs, FCM and HMS payloads.

Mapping (PowerAuth's "Push Message Payload Mapping"):

| body field | APNs | FCM HTTP v1 (android) |
| --- | --- | --- |
| title, body | aps.alert.title, aps.alert.body | android.notification.title, .body |
| titleLocKey, titleLocArgs | aps.alert.title-loc-key, title-loc-args | android.notification.title_loc_key, title_loc_args |
| bodyLocKey, bodyLocArgs | aps.alert.loc-key, loc-args | android.notification.body_loc_key, body_loc_args |
| badge | aps.badge | android.notification.notification_count |
| sound | aps.sound | android.notification.sound |
| icon | (none on iOS) | android.notification.icon |
| category | aps.category | android.notification.click_action |
| collapseKey | apns-collapse-id header and aps.thread-id (as the reference) | android.collapse_key (and notification.tag) |
| (no collapseKey) | apns-collapse-id = the notification's ``display_id`` | android.notification.tag = ``display_id`` |
| validUntil | apns-expiration header (epoch seconds) | android.ttl (seconds left, at send time) |
| extras | keys at the payload's root; a key whose value is null is left out (as the reference: APNs may refuse the push) | data (values as strings: FCM data is a string map); a null value is left out too |
| silent | aps.content-available=1, no alert; push type background, priority 5 | data-only message |
| priority HIGH / NORMAL | apns-priority 10 / 5 | android.priority HIGH / NORMAL |
| mutableContent | aps.mutable-content=1 | (none: FCM data messages reach the app) |

HMS (Huawei Push Kit, ``message`` of ``POST /v2/<project>/messages:send``), beside FCM's:

| body field | HMS |
| --- | --- |
| title, body, icon, loc keys and args | android.notification.title, .body, .icon, .title_loc_key, … (as FCM) |
| sound | android.notification.sound; ``"default"`` is android.notification.default_sound = true |
| category | android.notification.click_action {type 1, action: category}; without one {type 3} (open the app) |
| collapseKey | android.notification.tag; also android.collapse_key when it is a whole number -1…100 (HMS's own kind) |
| (no collapseKey) | android.notification.tag = ``display_id`` |
| validUntil | android.ttl (seconds left at send time, at most HMS's 15 days) |
| extras | message.data: the JSON text of the extras (HMS data is one string), nulls left out |
| silent | a data message: message.data only (``{}`` without extras), no notification |
| priority HIGH / NORMAL | android.urgency HIGH / NORMAL |
| badge, mutableContent | (none: HMS's badge needs the app's entry class, which PowerAuth does not know) |

Without a collapseKey a displayed notification still gets an identifier of its
own, ``display_id(message id, entry)``: the same for every send of that
notification to a device, different for any other. A device shows two
notifications with one identifier as one, so the send that a crashed worker
repeats (the provider took it an instant before the kill, its outcome was not
yet written) replaces the first on the device instead of showing twice. Not
``android.collapse_key``: FCM keeps at most four collapse keys per offline
device, so a key per message would drop stored messages.

Everything here is pure: no I/O, so it is unit-tested directly.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime

import orjson

#: APNs priority for an immediate alert, and for one the device may delay (and every silent push).
APNS_PRIORITY_IMMEDIATE = 10
APNS_PRIORITY_CONSERVE_POWER = 5
#: FCM's TTL when the message has no validUntil (FCM's own default is 4 weeks).
FCM_DEFAULT_TTL_SECONDS = 2419200
#: HMS keeps a message for an offline device at most 15 days (android.ttl's limit), and that long without validUntil.
HMS_MAX_TTL_SECONDS = 15 * 24 * 3600
#: HMS's android.collapse_key: a whole number from -1 to 100.
HMS_COLLAPSE_KEYS = range(-1, 101)
#: HMS click_action types: 1 an intent or action of the app, 3 open the app.
HMS_CLICK_ACTION = 1
HMS_CLICK_OPEN_APP = 3
#: Longest ``apns-collapse-id`` APNs accepts (bytes).
APNS_COLLAPSE_ID_MAX_BYTES = 64
#: Length of a hashed ``display_id`` (for message ids too long to name it directly).
DISPLAY_ID_HASH_LENGTH = 40


def display_id(message_id: str, entry: int | str) -> str:
    """The identifier a device shows one notification under: ``<message id>.<entry>``.

    The same for every send of one entry of one message (a retry, a repeat after
    a crash), distinct across messages and entries. Hashed when longer than
    APNs allows for ``apns-collapse-id``.
    """
    name = f"{message_id}.{entry}"
    if len(name.encode()) <= APNS_COLLAPSE_ID_MAX_BYTES:
        return name
    return hashlib.sha256(name.encode()).hexdigest()[:DISPLAY_ID_HASH_LENGTH]


@dataclass(frozen=True)
class Body:
    """A message body in PowerAuth terms; every field optional."""

    title: str | None = None
    body: str | None = None
    badge: int | None = None
    sound: str | None = None
    icon: str | None = None
    category: str | None = None
    collapse_key: str | None = None
    valid_until: datetime | None = None
    extras: dict | None = None
    title_loc_key: str | None = None
    title_loc_args: tuple[str, ...] | None = None
    body_loc_key: str | None = None
    body_loc_args: tuple[str, ...] | None = None
    #: APNs ``mutable-content``: the app's notification service extension may rewrite (decrypt) it.
    mutable_content: bool | None = None

    def to_json(self) -> dict:
        """The body as it crosses the queue (camelCase, as the API received it)."""
        out = {}
        for attribute, key in _JSON_KEYS.items():
            value = getattr(self, attribute)
            if value is None:
                continue
            if attribute == "valid_until":
                value = value.astimezone(UTC).isoformat()
            elif isinstance(value, tuple):
                value = list(value)
            out[key] = value
        return out

    @classmethod
    def from_json(cls, data: dict) -> Body:
        values = {}
        for attribute, key in _JSON_KEYS.items():
            value = data.get(key)
            if value is None:
                continue
            if attribute == "valid_until":
                value = parse_timestamp(value)
            elif attribute in ("title_loc_args", "body_loc_args"):
                value = tuple(value)
            values[attribute] = value
        return cls(**values)


_JSON_KEYS = {
    "title": "title",
    "body": "body",
    "badge": "badge",
    "sound": "sound",
    "icon": "icon",
    "category": "category",
    "collapse_key": "collapseKey",
    "valid_until": "validUntil",
    "extras": "extras",
    "title_loc_key": "titleLocKey",
    "title_loc_args": "titleLocArgs",
    "body_loc_key": "bodyLocKey",
    "body_loc_args": "bodyLocArgs",
    "mutable_content": "mutableContent",
}


def parse_timestamp(value: str) -> datetime:
    """ISO-8601 (``Z`` or an offset) to an aware UTC datetime; naive means UTC."""
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00") if value.endswith("Z") else value)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


@dataclass(frozen=True)
class ApnsPush:
    """What an APNs request carries besides the device token."""

    payload: bytes
    push_type: str
    priority: int
    expiration: int | None
    collapse_id: str | None


def apns_push(body: Body, *, silent: bool, high_priority: bool, display: str | None = None) -> ApnsPush:
    """Map a body to an APNs payload and headers (serialised once, reused for every device).

    ``display``: the notification's :func:`display_id`, its ``apns-collapse-id``
    when the body has no collapseKey (a silent push shows nothing: none).
    """
    aps: dict = {}
    if silent:
        aps["content-available"] = 1
    else:
        alert = {}
        _put(alert, "title", body.title)
        _put(alert, "body", body.body)
        _put(alert, "title-loc-key", body.title_loc_key)
        _put(alert, "title-loc-args", list(body.title_loc_args) if body.title_loc_args else None)
        _put(alert, "loc-key", body.body_loc_key)
        _put(alert, "loc-args", list(body.body_loc_args) if body.body_loc_args else None)
        if alert:
            aps["alert"] = alert
        _put(aps, "badge", body.badge)
        _put(aps, "sound", body.sound)
    _put(aps, "category", body.category)
    _put(aps, "thread-id", body.collapse_key)
    if body.mutable_content:
        aps["mutable-content"] = 1
    root = present_extras(body.extras)
    root["aps"] = aps
    expiration = int(body.valid_until.timestamp()) if body.valid_until else None
    return ApnsPush(
        payload=orjson.dumps(root),
        push_type="background" if silent else "alert",
        priority=APNS_PRIORITY_IMMEDIATE if high_priority and not silent else APNS_PRIORITY_CONSERVE_POWER,
        expiration=expiration,
        collapse_id=body.collapse_key or (None if silent else display),
    )


def fcm_message(body: Body, *, silent: bool, high_priority: bool, display: str | None = None) -> dict:
    """Map a body to an FCM v1 ``message`` without token and TTL (both are set per send).

    ``display``: the notification's :func:`display_id`, its ``android.notification.tag``
    when the body has no collapseKey and the message shows a notification.
    """
    android: dict = {"priority": "HIGH" if high_priority else "NORMAL"}
    _put(android, "collapse_key", body.collapse_key)
    message: dict = {"android": android}
    data = {key: value if isinstance(value, str) else orjson.dumps(value).decode() for key, value in present_extras(body.extras).items()}
    if data:
        message["data"] = data
    if not silent:
        notification = _android_texts(body)
        _put(notification, "sound", body.sound)
        _put(notification, "tag", body.collapse_key)
        _put(notification, "click_action", body.category)
        _put(notification, "notification_count", body.badge)
        if notification:
            if display and "tag" not in notification:
                notification["tag"] = display
            android["notification"] = notification
    return message


def _android_texts(body: Body) -> dict:
    """The fields FCM's and HMS's ``android.notification`` name alike: title, body, icon and the localized ones."""
    notification: dict = {}
    _put(notification, "title", body.title)
    _put(notification, "body", body.body)
    _put(notification, "icon", body.icon)
    _put(notification, "title_loc_key", body.title_loc_key)
    _put(notification, "title_loc_args", list(body.title_loc_args) if body.title_loc_args else None)
    _put(notification, "body_loc_key", body.body_loc_key)
    _put(notification, "body_loc_args", list(body.body_loc_args) if body.body_loc_args else None)
    return notification


def present_extras(extras: dict | None) -> dict:
    """The extras without the keys whose value is null (the reference leaves them out of APNs payloads,
    which a null custom key can make APNs refuse); nested nulls stay."""
    return {key: value for key, value in (extras or {}).items() if value is not None}


def fcm_ttl_seconds(valid_until: datetime | None, now: datetime) -> int:
    """Seconds the message may wait in FCM: what is left of validUntil, never negative."""
    if valid_until is None:
        return FCM_DEFAULT_TTL_SECONDS
    return max(0, int((valid_until - now).total_seconds()))


class _TokenTemplate:
    """A request body serialised once, the device's token spliced in per send (FCM's and HMS's ``message``).

    Serialising the whole message per device is the largest CPU cost of a batch send; the token is the only
    part that differs. ``message_bytes``: the message's size without its token (HMS checks it against 4096 bytes).
    """

    def __init__(self, message: dict, *, ttl_seconds: int):
        message = dict(message)
        android = dict(message.get("android", {}))
        android["ttl"] = f"{ttl_seconds}s"
        message["android"] = android
        rest = orjson.dumps(message)
        self.message_bytes = len(rest)
        # rest is b'{...}' and never empty (android is always there).
        self._tail = b"," + rest[1:] + b"}"


class FcmTemplate(_TokenTemplate):
    """An FCM v1 request body: ``{"message": {"token": ..., ...}}``."""

    def request_body(self, token: str) -> bytes:
        return b'{"message":{"token":' + orjson.dumps(token) + self._tail


def hms_message(body: Body, *, silent: bool, high_priority: bool, display: str | None = None) -> dict:
    """Map a body to an HMS ``message`` without token and TTL (both are set per send).

    ``display``: the notification's :func:`display_id`, its ``android.notification.tag``
    when the body has no collapseKey and the message shows a notification.
    """
    android: dict = {"urgency": "HIGH" if high_priority else "NORMAL"}
    collapse = _hms_collapse_key(body.collapse_key)
    _put(android, "collapse_key", collapse)
    message: dict = {"android": android}
    extras = present_extras(body.extras)
    notification: dict = {}
    if not silent:
        notification = _android_texts(body)
        if body.sound == "default":
            notification["default_sound"] = True
        else:
            _put(notification, "sound", body.sound)
    if notification:
        _put(notification, "tag", body.collapse_key or display)
        notification["click_action"] = {"type": HMS_CLICK_ACTION, "action": body.category} if body.category else {"type": HMS_CLICK_OPEN_APP}
        android["notification"] = notification
    if extras or not notification:
        # A message that shows nothing is a data message, and HMS needs its data.
        message["data"] = orjson.dumps(extras).decode()
    return message


def _hms_collapse_key(collapse_key: str | None) -> int | None:
    """A collapseKey HMS can take as its android.collapse_key (a whole number -1…100), else None."""
    if collapse_key is None or not collapse_key.lstrip("-").isdigit():
        return None
    number = int(collapse_key)
    return number if number in HMS_COLLAPSE_KEYS else None


def hms_ttl_seconds(valid_until: datetime | None, now: datetime) -> int:
    """Seconds HMS may keep the message: what is left of validUntil (HMS's 15 days at most), never negative."""
    if valid_until is None:
        return HMS_MAX_TTL_SECONDS
    return min(HMS_MAX_TTL_SECONDS, max(0, int((valid_until - now).total_seconds())))


class HmsTemplate(_TokenTemplate):
    """An HMS request body (one token per request): ``{"validate_only": false, "message": {"token": [...], ...}}``."""

    def request_body(self, token: str) -> bytes:
        return b'{"validate_only":false,"message":{"token":[' + orjson.dumps(token) + b"]" + self._tail


def _put(target: dict, key: str, value) -> None:
    if value is not None:
        target[key] = value
