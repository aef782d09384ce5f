"""The control routes (api/control.py) through Flask's test client: their answers and errors match the document."""
from __future__ import annotations

import jsonschema

from api import openapi
from shared import db as mongo
from shared import halt
from tests.unit.test_schema_powerauth import CREATED, answer_schema, make_client  # noqa: F401 - make_client is a fixture


def test_pause_resume_cancel_write_one_halt_command_each_and_answer_the_state(make_client):  # noqa: F811
    app, http, fake = make_client()
    document = openapi.build(app, fake.settings)
    fake.collections[mongo.CAMPAIGNS] = {"c1": {"_id": "c1", "app_id": "app-a", "body": {}, "created_at": CREATED}}
    fake.collections[mongo.MESSAGES] = {"m1": {"_id": "m1", "app_id": "app-a", "created_at": CREATED}}
    for action, state in (("pause", halt.PAUSED), ("resume", halt.RUNNING), ("cancel", halt.CANCELLED)):
        answer = http.post(f"/push/campaign/c1/{action}")
        assert answer.status_code == 200 and answer.get_json()["responseObject"] == {"id": "c1", "state": state}
        jsonschema.validate(answer.get_json(), answer_schema(document, f"/push/campaign/{{campaign_id}}/{action}", "post", 200))
    for message_id in ("m1", "not-expanded-yet"):
        answer = http.post(f"/push/message/{message_id}/cancel")
        assert answer.get_json()["responseObject"] == {"id": message_id, "state": halt.CANCELLED}
    written = [(c["kind"], c["message_id"], c["state"], c["app_id"]) for c in fake.commands]
    assert written == [("halt.set", "c1", "paused", "app-a"), ("halt.set", "c1", "running", "app-a"),
                       ("halt.set", "c1", "cancelled", "app-a"), ("halt.set", "m1", "cancelled", "app-a"),
                       ("halt.set", "not-expanded-yet", "cancelled", None)]


def test_an_unknown_campaign_is_a_400_naming_the_id(make_client):  # noqa: F811
    app, http, fake = make_client()
    document = openapi.build(app, fake.settings)
    answer = http.post("/push/campaign/nope/pause")
    assert answer.status_code == 400 and answer.get_json()["responseObject"]["code"] == "ERROR_CAMPAIGN_NOT_FOUND"
    jsonschema.validate(answer.get_json(), answer_schema(document, "/push/campaign/{campaign_id}/pause", "post", "4XX"))
    assert fake.commands == []


def test_a_detail_answers_paused_or_cancelled_over_the_stored_state():
    assert halt.shown_state(None, "sending") == "sending"
    assert halt.shown_state({"state": halt.PAUSED}, "sending") == halt.PAUSED
    assert halt.shown_state({"state": halt.PAUSED}, "sent") == "sent"
    assert halt.shown_state({"state": halt.CANCELLED}, "sent") == halt.CANCELLED
