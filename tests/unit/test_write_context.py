"""Write handlers get their dependencies passed in (workers/writes.py ``apply``): the database, or the whole context."""
from __future__ import annotations

from workers import actors, wc_push
from workers.writes import WriteContext, apply, takes_context


class Commands:
    def __init__(self):
        self.applied = []

    def insert_one(self, record):
        self.applied.append(record)


class Db(dict):
    def __missing__(self, name):
        return self.setdefault(name, Commands())


def test_a_plain_handler_gets_the_database_and_a_marked_one_the_context():
    db = Db()
    ctx = WriteContext(db=db, publisher=object(), settings=None)
    seen = {}

    def plain(got, cmd):
        seen["plain"] = got

    @takes_context
    def with_context(got, cmd):
        seen["context"] = got
        return {"outcome": "new"}

    handlers = {"plain": plain, "context": with_context}
    apply(ctx, {"id": "c1", "kind": "plain"}, handlers)
    apply(ctx, {"id": "c2", "kind": "context"}, handlers)
    assert seen == {"plain": db, "context": ctx}
    assert [r["_id"] for r in db["commands"].applied] == ["c1", "c2"]
    assert db["commands"].applied[1]["result"] == {"outcome": "new"}


def test_every_family_registers_its_dead_token_action_with_the_workers():
    assert actors.DEAD_TOKEN_ACTIONS[wc_push.DEAD_TOKEN_ACTION] is wc_push.delete_dead_clients
    assert "device" in actors.DEAD_TOKEN_ACTIONS
    assert getattr(actors.WRITE_HANDLERS["dead_letter.requeue"], "takes_context", False)
    assert getattr(actors.WRITE_HANDLERS["wcp.notify"], "takes_context", False)
