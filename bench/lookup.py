"""How long resolving users to devices takes on nx-27017, by array field vs by ``_id`` lookup.

Runnable alone: ``python -m bench.lookup [--sizes 50000 200000] [--users 500]``.
Starts its own nx-27017 on a free port with a database file in a temporary
directory, seeds devices shaped like ``workers.writes.register_device`` makes
them (half with an activation), and times, for each size:

- ``array_in``: the devices query by ``user_ids`` ``$in`` (what expansion did);
- ``lookup``: ``user_devices`` by ``_id`` ``$in``, then the devices by ``_id`` ``$in``;
- the same for one user (a SYNCHRONOUS send), and for one activation
  (``activation_ids`` ``$in`` vs ``activation_devices`` by ``_id``).
"""
from __future__ import annotations

import argparse
import random
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import pymongo

from devstack.stack import VENV_BIN, free_port, port_open, wait_until
from shared import db as mongo
from shared.device_lookup import activation_key, device_id, user_key

APP = "bench-lookup"
#: Timed repetitions of each query (the median is reported).
REPEATS = 7
#: Documents per insert_many while seeding.
SEED_BATCH = 5000


def seed(db, start: int, count: int) -> None:
    """Devices ``start .. start+count`` with their lookup documents (user ``u<i>``, activation ``a<i>`` on even i)."""
    now = time.time_ns()
    for first in range(start, start + count, SEED_BATCH):
        devices, users, activations = [], [], []
        for i in range(first, min(first + SEED_BATCH, start + count)):
            token = f"{i:064x}"
            _id = device_id(APP, token)
            acts = {f"a{i}": f"u{i}"} if i % 2 == 0 else {}
            devices.append(
                {
                    "_id": _id, "app_id": APP, "token": token, "platform": "apns" if i % 2 else "fcm",
                    "environment": None, "activations": acts, "activation_ids": list(acts), "user_ids": [f"u{i}"],
                    "deleted": False, "active": True, "ts": now, "updated_at": None,
                }
            )
            users.append({"_id": user_key(APP, f"u{i}"), "d": [f"{now}:{_id}"]})
            activations += [{"_id": activation_key(a), "d": [f"{now}:{_id}"]} for a in acts]
        db[mongo.DEVICES].insert_many(devices, ordered=False)
        db[mongo.USER_DEVICES].insert_many(users, ordered=False)
        if activations:
            db[mongo.ACTIVATION_DEVICES].insert_many(activations, ordered=False)


def timed(query) -> tuple[float, int]:
    """Median milliseconds of ``query()`` over REPEATS runs, and how many documents it answered."""
    times, found = [], 0
    for _ in range(REPEATS):
        started = time.perf_counter()
        found = query()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times), found


def queries(db, size: int, users_per_query: int) -> dict:
    devices, user_devices = db[mongo.DEVICES], db[mongo.USER_DEVICES]
    projection = {"token": 1, "platform": 1, "environment": 1, "activations": 1, "user_ids": 1}
    users = [f"u{i}" for i in random.sample(range(size), users_per_query)]
    one = users[:1]
    activation = f"a{random.randrange(0, size, 2)}"

    def array_in(names):
        return lambda: len(list(devices.find(
            {"app_id": APP, "user_ids": {"$in": names}, "deleted": False, "active": True}, projection
        )))

    def lookup(names):
        def run():
            ids = [e.split(":", 1)[1] for doc in user_devices.find({"_id": {"$in": [user_key(APP, u) for u in names]}}) for e in doc["d"]]
            return len([d for d in devices.find({"_id": {"$in": ids}}, {**projection, "deleted": 1, "active": 1}) if not d["deleted"] and d["active"]])
        return run

    def activation_scan():
        return len(list(devices.find({"activation_ids": {"$in": [activation]}}, {"app_id": 1})))

    def activation_lookup():
        doc = db[mongo.ACTIVATION_DEVICES].find_one({"_id": activation_key(activation)})
        ids = [e.split(":", 1)[1] for e in doc["d"]]
        return len(list(devices.find({"_id": {"$in": ids}}, {"app_id": 1})))

    results = {}
    for name, query in (
        (f"array_in_{users_per_query}", array_in(users)),
        (f"lookup_{users_per_query}", lookup(users)),
        ("array_in_1", array_in(one)),
        ("lookup_1", lookup(one)),
        ("activation_array_in", activation_scan),
        ("activation_lookup", activation_lookup),
    ):
        results[name] = timed(query)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="*", default=[50_000, 200_000])
    parser.add_argument("--users", type=int, default=500)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        server = subprocess.Popen(
            [str(VENV_BIN / "nx-27017"), "--db", str(Path(tmp) / "lookup.db"), "--port", str(port),
             "--log-file", str(Path(tmp) / "nx.log"), "--pid-file", str(Path(tmp) / "nx.pid")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        try:
            wait_until(lambda: port_open(port), what="nx-27017")
            db = pymongo.MongoClient(f"mongodb://127.0.0.1:{port}")["lookup"]
            mongo.ensure_indexes(db)
            seeded = 0
            for size in sorted(args.sizes):
                seed(db, seeded, size - seeded)
                seeded = size
                for name, (ms, found) in queries(db, size, args.users).items():
                    print(f"devices={size} {name}: {ms:.1f} ms ({found} devices)", flush=True)
        finally:
            server.terminate()
            server.wait()


if __name__ == "__main__":
    main()
