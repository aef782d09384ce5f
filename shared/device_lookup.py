"""Devices by user and by activation, found by ``_id`` instead of by the devices' array fields.

A device lists its users (``user_ids``) and activations (``activation_ids``)
in arrays. MongoDB serves ``{"user_ids": {"$in": [...]}}`` from a multikey
index, but nx-27017 scans the whole collection for it, so every send cost
more as devices were added. Two lookup collections turn that into queries by
``_id``, which both serve from the primary index:

- ``user_devices``: ``_id`` :func:`user_key` (app and user), ``d`` the entries;
- ``activation_devices``: ``_id`` the activation id, ``d`` the entries.

An entry is ``"<ts>:<device id>"``, ``ts`` being the receive time of the
write that added it. The lookup is a superset: readers fetch the devices it
names by ``_id`` and keep those that really hold the user or activation, so
an entry too many costs a read, never a wrong delivery; an entry too few
would lose deliveries. So writes add their entries before they touch the
device (a crash in between leaves one too many), and an entry is taken off
(``$pull`` of that exact string, never a whole list rewritten) only when one
of two rules says no device state can need it:

- the device was seen at ``ts`` without that user or activation: entries
  older than ``ts`` go (a later write that brings it back adds its own,
  newer, entry before it lands);
- the device holds it: every entry but the newest goes (the newest stays).

Both rules stay right whatever order concurrent writers and redeliveries
run in. A user counts as held by a device that is not deleted and lists
it; an activation by a device that lists it, deleted or not (a tombstone
keeps its activations, and ``api.powerauth`` asks who holds one), until the
tombstone is purged.

Databases written before this module existed are filled by :func:`backfill`,
run once by every worker process at start (``migrations`` records it).
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator

from pymongo import UpdateOne
from pymongo.database import Database

from shared import activation_status, db_counters
from shared import db as mongo
from shared.commands import ACTIVE

#: Keys read or written per query (``$in`` list length, bulk size). A read by ``$in`` asks for all its documents in
#: its first batch: without a batch size nx-27017 answers 101 and then 101 per getMore (nine more round trips for 1,000).
KEYS_PER_QUERY = 1000
#: The fields of a device the lookup rules look at.
FIELDS = {"app_id": 1, "ts": 1, "user_ids": 1, "activation_ids": 1, "deleted": 1}
#: ``migrations`` document recording that :func:`backfill` ran.
BACKFILL_MIGRATION = "device_lookup"
#: Devices read per batch while backfilling.
BACKFILL_BATCH = 5000


def device_id(app_id: str, token: str) -> str:
    """A device's natural ``_id``: one registration per token within an app."""
    return f"{app_id}:{token}"


def user_key(app_id: str, user_id: str) -> str:
    """``_id`` of a user's lookup document; NUL cannot occur in an app id, so the pair is unambiguous."""
    return f"{app_id}\x00{user_id}"


def activation_key(activation_id: str) -> str:
    """``_id`` of an activation's lookup document (activation ids are global, not per app)."""
    return activation_id


def entry(ts: int, device_id: str) -> str:
    return f"{ts}:{device_id}"


def parse_entry(value: str) -> tuple[int, str]:
    ts, device_id = value.split(":", 1)
    return int(ts), device_id


# --- writing ------------------------------------------------------------------------------------

def add(db: Database, app_id: str, device_id: str, ts: int, *, users: Iterable[str] = (), activations: Iterable[str] = ()) -> None:
    """Record that the write at ``ts`` gives device ``device_id`` these users and activations (idempotent)."""
    value = entry(ts, device_id)
    _add_all(db, mongo.USER_DEVICES, [(user_key(app_id, u), value) for u in users])
    _add_all(db, mongo.ACTIVATION_DEVICES, [(activation_key(a), value) for a in activations])


def add_devices(db: Database, devices: Iterable[dict]) -> None:
    """:func:`add` for many stored devices at once (seeding, backfill): entries of each device's state."""
    users, activations = [], []
    for device in devices:
        value = entry(device["ts"], device["_id"])
        if not device.get("deleted"):
            users += [(user_key(device["app_id"], u), value) for u in device.get("user_ids") or ()]
        activations += [(activation_key(a), value) for a in device.get("activation_ids") or ()]
    _add_all(db, mongo.USER_DEVICES, users)
    _add_all(db, mongo.ACTIVATION_DEVICES, activations)


def _add_all(db: Database, collection: str, pairs: list[tuple[str, str]]) -> None:
    by_key: dict[str, list[str]] = {}
    for key, value in pairs:
        by_key.setdefault(key, []).append(value)
    operations = [UpdateOne({"_id": key}, {"$addToSet": {"d": {"$each": values}}}, upsert=True) for key, values in by_key.items()]
    for part in _parts(operations, KEYS_PER_QUERY):
        db[collection].bulk_write(part, ordered=False)


def prune(db: Database, device: dict, *, users: Iterable[str] = (), activations: Iterable[str] = (), gone: bool = False) -> None:
    """Take off the entries of ``device`` that the rules (module docstring) say no state can need.

    ``device`` is a state of the device as stored at its ``ts`` (``_id``, ``app_id``,
    ``ts``, ``user_ids``, ``activation_ids``, ``deleted``); ``gone`` says it was purged.
    ``users`` and ``activations`` are the keys to look at (those it may have held).
    """
    holds_users = set() if gone or device.get("deleted") else set(device.get("user_ids") or ())
    holds_activations = set() if gone else set(device.get("activation_ids") or ())
    _prune(db, mongo.USER_DEVICES, device, {user_key(device["app_id"], u): u in holds_users for u in users})
    _prune(db, mongo.ACTIVATION_DEVICES, device, {activation_key(a): a in holds_activations for a in activations})


def _prune(db: Database, collection: str, device: dict, held_by_key: dict[str, bool]) -> None:
    if not held_by_key:
        return
    operations = []
    for doc in db[collection].find({"_id": {"$in": sorted(held_by_key)}}):
        mine = [(ts, value) for value in doc.get("d") or () for ts, device_id in [parse_entry(value)] if device_id == device["_id"]]
        if not mine:
            continue
        below = max(ts for ts, _ in mine) if held_by_key[doc["_id"]] else device["ts"]
        stale = [value for ts, value in mine if ts < below]
        if stale:
            operations.append(UpdateOne({"_id": doc["_id"]}, {"$pull": {"d": {"$in": stale}}}))
    if operations:
        db[collection].bulk_write(operations, ordered=False)


# --- reading ------------------------------------------------------------------------------------

def device_ids_by_user(db: Database, app_id: str, users: Iterable[str]) -> dict[str, set[str]]:
    """The ids of devices that may hold each user (a superset: check the devices)."""
    user_by_key = {user_key(app_id, u): u for u in users}
    found: dict[str, set[str]] = {}
    for part in _parts(sorted(user_by_key), KEYS_PER_QUERY):
        for doc in db[mongo.USER_DEVICES].find({"_id": {"$in": part}}).batch_size(len(part)):
            found[user_by_key[doc["_id"]]] = {parse_entry(value)[1] for value in doc.get("d") or ()}
    return found


def devices_by_user(db: Database, app_id: str, users: Iterable[str]) -> dict[str, list[dict]]:
    """The live devices (not deleted, active) of each user, by ``_id`` lookups only.

    A device shared by several of the users appears once under each of them, as
    the same dict. The devices are read whole and their flags checked here: on nx-27017
    a projection deep-copies each document and a filter on the flags parses each one in
    SQL, about a quarter of the read's cost, on the one process every worker shares
    (a campaign's expansion was half of nx-27017's time).
    """
    ids_by_user = device_ids_by_user(db, app_id, users)
    wanted = sorted(set().union(*ids_by_user.values())) if ids_by_user else []
    devices = {}
    for part in _parts(wanted, KEYS_PER_QUERY):
        for device in db[mongo.DEVICES].find({"_id": {"$in": part}}).batch_size(len(part)):
            if _live(device):
                devices[device["_id"]] = device
    found: dict[str, list[dict]] = {}
    for user, ids in ids_by_user.items():
        held = [devices[i] for i in sorted(ids) if i in devices and user in devices[i]["user_ids"]]
        if held:
            found[user] = held
    return found


def _live(device: dict) -> bool:
    """What ``{"deleted": False, "active": True}`` matches (nx-27017 may read a boolean it wrote back as 0 or 1)."""
    return "deleted" in device and not device["deleted"] and bool(device.get("active"))


def devices_holding_activation(db: Database, activation_id: str, projection: dict, *, limit: int | None = None) -> list[dict]:
    """The stored devices (tombstones too) that list ``activation_id``."""
    doc = db[mongo.ACTIVATION_DEVICES].find_one({"_id": activation_key(activation_id)})
    ids = sorted({parse_entry(value)[1] for value in (doc or {}).get("d") or ()})
    holders = []
    for part in _parts(ids, KEYS_PER_QUERY):
        for device in db[mongo.DEVICES].find({"_id": {"$in": part}}, {**projection, **FIELDS}).batch_size(len(part)):
            if activation_id in (device.get("activation_ids") or ()):
                holders.append(device)
                if limit is not None and len(holders) >= limit:
                    return holders
    return holders


# --- migration ----------------------------------------------------------------------------------

def backfill(db: Database) -> bool:
    """Fill the lookup from the devices stored, once per database; answer whether it ran.

    Adding entries is always safe (the lookup is a superset), so processes that
    start together may both run it. Writers of a version without the lookup
    must be stopped first: what they register later is not in it (run
    ``python -m shared.device_lookup`` again after a rolling upgrade).
    """
    if db[mongo.MIGRATIONS].find_one({"_id": BACKFILL_MIGRATION}):
        return False
    run_backfill(db)
    db[mongo.MIGRATIONS].update_one({"_id": BACKFILL_MIGRATION}, {"$set": {"done": True}}, upsert=True)
    return True


def run_backfill(db: Database) -> int:
    """Add the entries of every stored device (idempotent); answer how many devices were read."""
    batch, count = [], 0
    for device in db[mongo.DEVICES].find({}, FIELDS):
        batch.append(device)
        if len(batch) == BACKFILL_BATCH:
            add_devices(db, batch)
            count += len(batch)
            batch = []
    add_devices(db, batch)
    return count + len(batch)


def _parts(items: list, size: int) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def main() -> None:
    """``python -m shared.device_lookup``: fill the lookup from the stored devices (again), e.g. after a rolling upgrade."""
    from shared.settings import load

    db = mongo.connect(load())
    print(f"device lookup: {run_backfill(db)} devices read", flush=True)
    db[mongo.MIGRATIONS].update_one({"_id": BACKFILL_MIGRATION}, {"$set": {"done": True}}, upsert=True)


if __name__ == "__main__":
    main()


#: The activation status that receives personal messages (shared/commands.py ``ACTIVE``).
ACTIVE_STATUS = "ACTIVE"


def send_targets(db: Database, app_id: str, entries: list[dict]) -> Iterator[tuple[int, dict]]:
    """(entry index, device) for every device each entry reaches.

    An entry names either a user (PowerAuth: every registration of the user) or
    one ``device`` directly (``{"_id", "token", "platform", "environment"}``:
    the WalletConnect APIs, which know the token already).
    """
    for index, entry in enumerate(entries):
        if entry.get("device"):
            yield index, entry["device"]
    users = {entry["user_id"] for entry in entries if entry.get("user_id")}
    held = devices_by_user(db, app_id, users)
    if users:  # the user lookups, then the devices by _id in parts (shared/device_lookup.py)
        found = len({d["_id"] for devices in held.values() for d in devices})
        db_counters.count(trips=1 + max(1, -(-found // KEYS_PER_QUERY)))
    personal_activations = {
        activation
        for entry in entries
        if entry.get("personal")
        for device in held.get(entry.get("user_id"), ())
        for activation in device["activations"]
    }
    status = activation_status.statuses(db, app_id, personal_activations)
    if personal_activations:
        db_counters.count()
    for index, entry in enumerate(entries):
        for device in held.get(entry.get("user_id"), ()):
            activations = [a for a, user in device["activations"].items() if user == entry["user_id"]]
            if entry.get("activation_id"):
                activations = [a for a in activations if a == entry["activation_id"]]
                if not activations:
                    continue
            if entry.get("personal") and not any(status.get(a, ACTIVE) == ACTIVE for a in activations):
                continue
            yield index, device
