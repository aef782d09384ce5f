"""PowerAuth as the reference's clients call it (wultra/powerauth-push-server): credential routes old and new,
HMS credentials, devices and delivery, payload mapping, and the APNs 410 timestamp, end to end on the real stack."""
from __future__ import annotations

import base64
import json
import uuid

import pymongo
import pytest

from shared import db as mongo
from shared.sealed_credentials import CredentialKeys
from tests.integration.conftest import TEST_SETTINGS, apns_token, fcm_token, register
from tests.waiting import wait_for

#: HMS credentials as Huawei issues them (project and client ids are numbers, the secret 64 hex characters).
HMS = {"projectId": "101234567", "clientId": "107654321", "clientSecret": "5ec7e7" * 10 + "abcd"}


def user() -> str:
    return f"user-{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="module")
def database(stack):
    client = pymongo.MongoClient(stack.mongo_uri, tz_aware=True)
    yield client["push"]
    client.close()


def detail(api, app_id: str) -> dict:
    return api.ok("/admin/app/detail", {"appId": app_id})["responseObject"]


def bare_app(api) -> str:
    """An app without credentials."""
    app_id = f"bare-{uuid.uuid4().hex[:8]}"
    api.ok("/admin/app/create", {"appId": app_id})
    return app_id


def test_credentials_are_removed_with_the_app_id_in_the_query_and_no_body(api, new_app):
    app_id = new_app()
    for provider in ("apns", "fcm"):
        answer = api.session.delete(f"{api.base_url}/admin/app/{provider}", params={"appId": app_id}, timeout=60)
        assert answer.status_code == 200 and answer.json() == {"status": "OK"}, answer.text
    application = detail(api, app_id)["application"]
    assert not application["apns"] and not application["fcm"] and not application["ios"] and not application["android"]
    missing = api.session.delete(f"{api.base_url}/admin/app/apns", timeout=60)
    assert missing.status_code == 400 and "appId" in missing.json()["responseObject"]["message"]
    unknown = api.session.delete(f"{api.base_url}/admin/app/fcm", params={"appId": "nobody-" + uuid.uuid4().hex}, timeout=60)
    assert unknown.status_code == 400 and "Application not found" in unknown.json()["responseObject"]["message"]


def test_unconfigured_apps_are_listed(api, new_app):
    bare, configured = bare_app(api), new_app()
    for method in ("GET", "POST"):
        answer = api.session.request(method, f"{api.base_url}/admin/app/unconfigured/list", timeout=60)
        assert answer.status_code == 200, answer.text
        listed = {a["appId"]: a for a in answer.json()["responseObject"]["applicationList"]}
        assert bare in listed and configured not in listed
        assert not any(listed[bare][name] for name in ("apns", "fcm", "hms", "ios", "android", "huawei"))


def test_the_deprecated_credential_routes_set_and_remove_each_provider(api, new_app, database):
    source = new_app()  # credentials the simulators know, uploaded again through the old routes
    app_id = bare_app(api)
    stored = database[mongo.APPS].find_one({"_id": source})
    # Sealed at rest (shared/sealed_credentials.py): opened with the stack's key to upload them again.
    keys = CredentialKeys.parse(TEST_SETTINGS["PUSH_CREDENTIAL_KEYS"])
    stored = {**stored, "apns": keys.open(source, "apns", stored["apns"]), "fcm": keys.open(source, "fcm", stored["fcm"])}
    api.ok("/admin/app/ios/update", {"appId": app_id, "bundle": stored["apns"]["bundle"], "keyId": stored["apns"]["key_id"],
                                     "teamId": stored["apns"]["team_id"],
                                     "privateKeyBase64": base64.b64encode(stored["apns"]["private_key"].encode()).decode()}, method="PUT")
    api.ok("/admin/app/android/update", {"appId": app_id, "projectId": stored["fcm"]["project_id"],
                                         "privateKeyBase64": base64.b64encode(json.dumps(stored["fcm"]["service_account"]).encode()).decode()})
    api.ok("/admin/app/huawei/update", {"appId": app_id, **HMS})
    after = detail(api, app_id)
    assert after["application"]["ios"] and after["application"]["android"] and after["application"]["huawei"]
    assert after["hmsProjectId"] == HMS["projectId"] and after["hmsClientSecretPresent"] is True

    alice = user()
    ios, android = apns_token(), fcm_token()
    register(api, app_id, ios, "ios", alice)
    register(api, app_id, android, "android", alice)
    result = api.ok("/push/message/send", {"appId": app_id, "message": {"userId": alice, "body": {"title": "old routes"}}})["responseObject"]["result"]
    assert result["ios"]["sent"] == 1 and result["android"]["sent"] == 1

    api.ok("/admin/app/ios/remove", {"appId": app_id}, method="DELETE")
    api.ok("/admin/app/android/remove", {"appId": app_id})
    api.ok("/admin/app/huawei/remove", {"appId": app_id}, method="DELETE")
    application = detail(api, app_id)["application"]
    assert not any(application[name] for name in ("apns", "fcm", "hms"))


def test_hms_credentials_are_stored_and_never_answered(api, database):
    app_id = bare_app(api)
    api.ok("/admin/app/hms", {"appId": app_id, **HMS})

    stored = database[mongo.APPS].find_one({"_id": app_id})["hms"]
    assert HMS["clientSecret"] not in str(stored)  # sealed at rest (shared/sealed_credentials.py)
    opened = CredentialKeys.parse(TEST_SETTINGS["PUSH_CREDENTIAL_KEYS"]).open(app_id, "hms", stored)
    assert opened == {"project_id": HMS["projectId"], "client_id": HMS["clientId"], "client_secret": HMS["clientSecret"]}
    answers = [api.post("/admin/app/detail", {"appId": app_id}).text, api.get("/admin/app/detail", appId=app_id).text,
               api.get("/admin/app/list").text, api.get("/admin/app/unconfigured/list").text]
    assert not any(HMS["clientSecret"] in text for text in answers)
    assert detail(api, app_id)["application"]["hms"] is True

    removed = api.session.delete(f"{api.base_url}/admin/app/hms", params={"appId": app_id}, timeout=60)
    assert removed.status_code == 200, removed.text
    assert detail(api, app_id)["application"]["hms"] is False


def test_hms_credentials_land_on_an_app_created_before_hms_was_known(api, database):
    app_id = f"older-{uuid.uuid4().hex[:8]}"
    # As create_app wrote apps before: no hms_ts.
    database[mongo.APPS].insert_one({"_id": app_id, "apns_ts": 0, "fcm_ts": 0, "suspended": {}})
    api.ok("/admin/app/hms", {"appId": app_id, **HMS})
    assert database[mongo.APPS].find_one({"_id": app_id})["hms"]["project_id"] == HMS["projectId"]


def test_hms_devices_register_and_the_result_reports_hms_and_huawei(api, new_app, database, apns_sim, hms_sim):
    app_id = new_app()
    dave = user()
    ios = apns_token()
    huawei, hms = "hms-token-" + uuid.uuid4().hex, "hms-token-" + uuid.uuid4().hex
    register(api, app_id, ios, "apns", dave)
    register(api, app_id, huawei, "huawei", dave)
    register(api, app_id, hms, "hms", dave)
    platforms = sorted(d["platform"] for d in database[mongo.DEVICES].find({"app_id": app_id}))
    assert platforms == ["apns", "hms", "hms"]

    result = api.ok("/push/message/send", {"appId": app_id, "message": {"userId": dave, "body": {"title": "hi"}}})["responseObject"]["result"]

    zero = {"sent": 0, "pending": 0, "failed": 0, "total": 0}
    assert result["apns"] == result["ios"] == {"sent": 1, "pending": 0, "failed": 0, "total": 1}
    assert result["hms"] == result["huawei"] == {"sent": 2, "pending": 0, "failed": 0, "total": 2}
    assert result["fcm"] == result["android"] == zero
    assert apns_sim.delivered(ios) == 1
    assert hms_sim.delivered(huawei) == hms_sim.delivered(hms) == 1


def test_collapse_key_is_also_the_thread_id_and_null_extras_are_left_out(api, new_app, apns_sim, fcm_sim):
    app_id = new_app()
    erin = user()
    ios, android = apns_token(), fcm_token()
    register(api, app_id, ios, "apns", erin)
    register(api, app_id, android, "fcm", erin)
    body = {"title": "t", "collapseKey": "chat-42", "extras": {"gone": None, "kept": "v", "nested": {"inner": None}}}

    api.ok("/push/message/send", {"appId": app_id, "message": {"userId": erin, "body": body}})

    apns_payload = apns_sim.received(ios)[-1]["body"]
    assert apns_payload["aps"]["thread-id"] == "chat-42"
    assert "gone" not in apns_payload and apns_payload["kept"] == "v" and apns_payload["nested"] == {"inner": None}
    assert apns_sim.received(ios)[-1]["headers"]["apns-collapse-id"] == "chat-42"
    assert fcm_sim.received(android)[-1]["body"]["message"]["data"] == {"kept": "v", "nested": '{"inner":null}'}


def test_a_registration_written_after_the_410_timestamp_is_not_deactivated_by_it(api, new_app, database, apns_sim):
    app_id = new_app()
    frank = user()
    dead = apns_token("dead")
    device = {"_id": f"{app_id}:{dead}"}
    register(api, app_id, dead, "apns", frank)
    first = api.ok("/push/message/send", {"appId": app_id, "message": {"userId": frank, "body": {"title": "1"}}})["responseObject"]
    assert first["result"]["apns"]["failed"] == 1
    assert database[mongo.DEVICES].find_one(device)["active"] in (False, 0)  # nx-27017 answers a $set boolean as 0

    register(api, app_id, dead, "apns", frank)  # the app registered the token again, after APNs' timestamp
    assert database[mongo.DEVICES].find_one(device)["active"] in (True, 1)
    second = api.ok("/push/message/send", {"appId": app_id, "message": {"userId": frank, "body": {"title": "2"}}})["responseObject"]

    # APNs still says 410, with its first timestamp; the answer comes once the dead-token action was applied.
    assert second["result"]["apns"] == {"sent": 0, "pending": 0, "failed": 1, "total": 1}
    assert apns_sim.counts(dead)["attempts"] == 2
    assert database[mongo.DEVICES].find_one(device)["active"] in (True, 1)


def test_a_campaign_reaches_every_provider_hms_too(api, new_app, apns_sim, hms_sim):
    app_id = new_app()
    gina = user()
    ios, hms = apns_token(), "hms-token-" + uuid.uuid4().hex
    register(api, app_id, ios, "apns", gina)
    register(api, app_id, hms, "hms", gina)
    campaign_id = api.ok("/push/campaign/create", {"appId": app_id, "message": {"title": "Campaign"}})["responseObject"]["id"]
    api.ok(f"/push/campaign/{campaign_id}/user/add", [gina], method="PUT")

    api.ok(f"/push/campaign/send/live/{campaign_id}")

    done = wait_for(lambda: (d := api.get(f"/push/campaign/{campaign_id}/detail").json()["responseObject"])["sent"] and d,
                    what="campaign sent")
    assert done["progress"]["total"] == 2 and done["progress"]["sent"] == 2
    assert done["progress"]["hms"] == {"total": 1, "sent": 1, "failed": 0, "pending": 0}
    assert apns_sim.delivered(ios) == 1 and hms_sim.delivered(hms) == 1
