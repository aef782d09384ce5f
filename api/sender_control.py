"""Sender control on the PowerAuth routes: validate-only sends (issue 18).

``"validateOnly": true`` on ``/push/message/send``, ``/push/message/batch/send``
and the campaign send routes runs every check a real send runs and answers
what would be sent, per platform, publishing nothing:

- the app exists and the key may act for it, the body passes the route's
  schema and the provider payload sizes (the route did that already);
- the devices the send would reach, chosen exactly as the expansion chooses
  them (``shared.device_lookup.send_targets``: users, activations, personal messages);
- for each platform those devices use, whether the app can send there now
  (credentials present, openable with this server's keys, not suspended);
- the payload each entry would carry, built by the same builders the delivery
  uses (shared/payload.py ``apns_push``, ``fcm_message``).

A send that would fail on a platform is answered ``valid: false`` with the
reason per platform: the request itself is well formed, so this is not a 400.
"""
from __future__ import annotations

from datetime import UTC, datetime

import orjson
from flask import request

from api import schema as sc
from api.errors import bad_request
from api.services import Services
from shared import db as mongo
from shared.commands import command
from shared.device_lookup import send_targets as targets
from shared.payload import Body, apns_push, fcm_message, fcm_ttl_seconds
from shared.scheduling import pending_release
from shared.send_entry import SendEntry

#: Providers the expansion delivers to; a device of another platform (hms) is counted but not sent to.
DELIVERED = ("apns", "fcm")
#: Platforms reported, in this order.
REPORTED = ("apns", "fcm", "hms")
#: Most payloads listed per platform (a batch of 10,000 entries lists its first ones; ``entries`` counts all).
MAX_LISTED_PAYLOADS = 100
#: Campaign users read per query while counting a campaign's devices.
CAMPAIGN_USERS_PER_READ = 1000

#: ``validateOnly`` in a send request's options.
VALIDATE_ONLY = sc.Bool(default=False, description="Check everything a send would and answer what would be sent per platform; "
                                                   "nothing is sent")

PLATFORM_REPORT = sc.Obj(
    {
        "devices": sc.Int(description="Devices of this platform the send would reach"),
        "entries": sc.Int(description="Messages of the send that reach at least one such device"),
        "ready": sc.Bool(description="The app can send on this platform now"),
        "problem": sc.Json(description="Why the devices of this platform would not be sent to, or null"),
        "payloads": sc.List(sc.Json(object_only=True), description="What each message would carry (the first "
                            f"{MAX_LISTED_PAYLOADS}): entry index, provider payload or message, its size in bytes"),
    }
)
VALIDATION = sc.Obj(
    {
        "valid": sc.Bool(description="Every device the send reaches would be sent to"),
        "devices": sc.Int(),
        "platforms": sc.Obj({platform: PLATFORM_REPORT for platform in REPORTED}),
    },
    description="Answered instead of a messageId when validateOnly is true",
)


def provider_problem(svc: Services, app: dict, platform: str) -> str | None:
    """Why the app cannot send on ``platform`` now (as the delivery decides it), or None."""
    if platform not in DELIVERED:
        return f"{platform} delivery is not there yet: its devices are not sent to"
    if not app.get(platform):
        return f"{platform} not configured for the application"
    suspended = (app.get("suspended") or {}).get(platform)
    if suspended:
        return f"{platform} suspended: {suspended}"
    return svc.credential_keys.can_open(app.get(platform))


def payload_of(platform: str, entry: dict, now: datetime) -> dict:
    """The provider payload one entry would carry (without the per-send ``display_id`` and token)."""
    body = Body.from_json(entry["body"])
    silent, high = entry.get("silent", False), entry.get("high_priority", True)
    if platform == "apns":
        push = apns_push(body, silent=silent, high_priority=high)
        headers = {"apns-push-type": push.push_type, "apns-priority": str(push.priority)}
        if push.expiration is not None:
            headers["apns-expiration"] = str(push.expiration)
        if push.collapse_id is not None:
            headers["apns-collapse-id"] = push.collapse_id
        return {"headers": headers, "payload": orjson.loads(push.payload), "bytes": len(push.payload)}
    message = fcm_message(body, silent=silent, high_priority=high)
    message["android"]["ttl"] = f"{fcm_ttl_seconds(body.valid_until, now)}s"
    return {"message": message, "bytes": len(orjson.dumps({"message": message}))}


def _report(svc: Services, app: dict, entries: list[dict], devices_by_platform: dict[str, set],
            entries_by_platform: dict[str, list[int]]) -> dict:
    now = datetime.now(UTC)
    platforms = {}
    for platform in REPORTED:
        devices = len(devices_by_platform.get(platform, ()))
        used = entries_by_platform.get(platform, [])
        problem = provider_problem(svc, app, platform) if devices else None
        payloads = []
        if platform in DELIVERED:
            for index in used[:MAX_LISTED_PAYLOADS]:
                entry = entries[index]
                item = {"entry": index, **payload_of(platform, entry, now)}
                valid_until = entry["body"].get("validUntil")
                if valid_until and Body.from_json({"validUntil": valid_until}).valid_until <= now:
                    item["expired"] = True  # a real send records it expired, sending nothing
                payloads.append(item)
        platforms[platform] = {"devices": devices, "entries": len(used), "ready": problem is None, "problem": problem,
                               "payloads": payloads}
    total = sum(p["devices"] for p in platforms.values())
    return {"valid": all(p["problem"] is None for p in platforms.values()), "devices": total, "platforms": platforms}


def validate_send(svc: Services, app: dict, entries: list[dict]) -> dict:
    """What a send of ``entries`` (cleaned send entries) for ``app`` would do, sending nothing."""
    devices_by_platform: dict[str, set] = {}
    entries_by_platform: dict[str, set] = {}

    def collect():
        for index, device in targets(svc.db, app["_id"], entries):
            devices_by_platform.setdefault(device["platform"], set()).add((index, device["_id"]))
            entries_by_platform.setdefault(device["platform"], set()).add(index)

    svc.guarded_read(collect)
    return _report(svc, app, entries, devices_by_platform, {p: sorted(e) for p, e in entries_by_platform.items()})


def validate_campaign(svc: Services, app: dict, campaign: dict, user_ids: list[str] | None = None) -> dict:
    """What a campaign's live send (or its test send to ``user_ids``) would do, sending nothing.

    The live send reaches each device once however many of its users share it, so devices are counted once.
    """
    entry = SendEntry.for_user(None, campaign["body"]).to_json()  # as the campaign expansion builds it
    devices_by_platform: dict[str, set] = {}

    def count(users: list[str]) -> None:
        for _, device in targets(svc.db, app["_id"], [{**entry, "user_id": u} for u in users]):
            devices_by_platform.setdefault(device["platform"], set()).add(device["_id"])

    def collect():
        if user_ids is not None:
            count(user_ids)
            return
        after = ""
        while True:
            users = mongo.campaign_users_after(svc.db, campaign["_id"], after, CAMPAIGN_USERS_PER_READ)
            if not users:
                return
            count(users)
            after = users[-1]

    svc.guarded_read(collect)
    return _report(svc, app, [entry], devices_by_platform, {p: [0] for p in devices_by_platform})


# --- scheduled sends -------------------------------------------------------------------------------

#: ``sendAt`` in a send request's options.
SEND_AT = sc.Timestamp(description="Send at this time (ISO 8601 with an offset), not now: accepted at once, ASYNCHRONOUS; "
                                   "the detail route shows it scheduled until then")
#: What a detail route adds about a schedule.
SCHEDULE_DETAIL = {"sendAt": sc.Json(description="The scheduled time (ISO 8601), or null"),
                   "scheduled": sc.Bool(description="Still waiting for its sendAt")}


def check_send_at(send_at: datetime, bodies: list[dict], *, explicit_mode: str | None) -> None:
    """Refuse (400 naming ``requestObject.sendAt``) a schedule that a SYNCHRONOUS answer would wait for, or that
    would be sent after a message's ``validUntil``."""
    field = "requestObject.sendAt"
    if explicit_mode == "SYNCHRONOUS":
        raise bad_request(field, "a scheduled send is ASYNCHRONOUS: mode SYNCHRONOUS cannot wait for it")
    for index, body in enumerate(bodies):
        valid_until = body.get("validUntil")
        if valid_until and Body.from_json({"validUntil": valid_until}).valid_until <= send_at:
            where = f" (message {index})" if len(bodies) > 1 else ""
            raise bad_request(field, f"is at or after the message's validUntil{where}: it would never be sent")


def explicit_mode() -> str | None:
    """The ``mode`` the request named itself (the cleaned body has the default filled in), upper-cased."""
    raw = request.get_json(silent=True)
    inner = raw.get("requestObject") if isinstance(raw, dict) else None
    mode = inner.get("mode") if isinstance(inner, dict) else None
    return mode.upper() if isinstance(mode, str) else None


def schedule(svc: Services, target_id: str, app_id: str, send_at: datetime, actor: str, payload: dict, *, kind: str) -> None:
    """Keep a schedule (a write: the persist worker stores it from the confirmed command; shared/scheduling.py)."""
    svc.write(command("send.schedule", target_id=target_id, app_id=app_id, send_at=send_at.timestamp(), actor=actor,
                      actor_kind=kind, payload=payload))


def schedule_detail(svc: Services, target_id: str, send_at) -> dict:
    """``sendAt`` and ``scheduled`` of a message or campaign detail."""
    if send_at is None:
        return {"sendAt": None, "scheduled": False}
    return {"sendAt": send_at if isinstance(send_at, str) else send_at.isoformat(),
            "scheduled": svc.guarded_read(lambda: pending_release(svc.db, target_id))}
