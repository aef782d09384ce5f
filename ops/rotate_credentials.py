"""Rotate the key sealing provider credentials: ``python -m ops.rotate_credentials [--new-key | --dry-run]``.

``--new-key`` prints a fresh ``PUSH_CREDENTIAL_KEYS`` entry. Without it, every
app's stored credentials are re-wrapped under the first key of
``PUSH_CREDENTIAL_KEYS`` (shared/sealed_credentials.py: only the data key is
re-encrypted; credentials still in clear, stored before sealing existed, are
sealed). The procedure:

1. ``python -m ops.rotate_credentials --new-key`` → ``knew:…``;
2. ``PUSH_CREDENTIAL_KEYS=knew:…,kold:…`` on every API and worker (new first, old kept), redeploy;
3. ``python -m ops.rotate_credentials`` with that setting: prints what it re-wrapped;
4. once no queue holds a command sealed with the old key (``python -m ops.queues``: ``persist`` and its
   ``.DQ``/``.XQ`` empty, or the dead letters requeued or purged), drop ``kold`` and redeploy.

An app whose credentials change while it runs is left as the newer write made
it (that write was sealed under the new key already, once step 2 is done); run
it again to be sure, it changes nothing the second time.
"""
from __future__ import annotations

import argparse
import sys
from collections import Counter

from pymongo.database import Database

from shared import db as mongo
from shared.sealed_credentials import SECRET_FIELDS, CredentialKeys, CredentialsUnavailable, new_key_entry
from shared.settings import load


def rotate(db: Database, keys: CredentialKeys, *, dry_run: bool = False) -> Counter:
    """Re-wrap every app's credentials under ``keys.current``; answers counts by what happened to each credential set."""
    if not keys.sealing:
        raise ValueError("PUSH_CREDENTIAL_KEYS is empty: nothing to seal with")
    counts: Counter = Counter()
    projection = {field: 1 for provider in SECRET_FIELDS for field in (provider, f"{provider}_ts")}
    for app in db[mongo.APPS].find({}, projection):
        for provider in SECRET_FIELDS:
            credentials = app.get(provider)
            if not credentials:
                continue
            try:
                rewrapped = keys.rewrap(app["_id"], provider, credentials)
            except CredentialsUnavailable as error:
                print(f"{app['_id']} {provider}: {error}", file=sys.stderr)
                counts["unopenable"] += 1
                continue
            if rewrapped is None:
                counts["already current"] += 1
                continue
            kind = "sealed (was in clear)" if "sealed" not in credentials else "re-wrapped"
            if not dry_run:
                ts_field = f"{provider}_ts"
                # Only if no newer write replaced them meanwhile (that one is sealed by the API already).
                result = db[mongo.APPS].update_one(
                    {"_id": app["_id"], ts_field: app.get(ts_field)}, {"$set": {provider: rewrapped}}
                )
                if not result.modified_count:
                    kind = "changed meanwhile (left as written)"
            counts[kind] += 1
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ops.rotate_credentials", description=__doc__.split("\n\n")[0])
    parser.add_argument("--new-key", action="store_true", help="print a fresh PUSH_CREDENTIAL_KEYS entry and exit")
    parser.add_argument("--dry-run", action="store_true", help="count what would change, change nothing")
    args = parser.parse_args(argv)
    if args.new_key:
        print(new_key_entry())
        return 0
    settings = load()
    keys = CredentialKeys.from_settings(settings)
    counts = rotate(mongo.connect(settings), keys, dry_run=args.dry_run)
    for kind, count in sorted(counts.items()):
        print(f"{kind}: {count}")
    print(f"sealing key: {keys.current}{' (dry run: nothing written)' if args.dry_run else ''}")
    return 1 if counts["unopenable"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
