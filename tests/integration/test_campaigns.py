"""PowerAuth campaigns end to end: API → RabbitMQ → streamed expansion → simulators."""
from __future__ import annotations

import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import requests

from tests import ledger_view, waiting
from tests.integration.conftest import apns_token, fcm_token, register


def wait_for(check, timeout: float = 90.0, what: str = "condition"):
    return waiting.wait_for(check, timeout=timeout, what=what, every=0.2)

def create_campaign(api, app_id: str, title: str = "Campaign") -> str:
    return api.ok("/push/campaign/create", {"appId": app_id, "message": {"title": title, "body": "for everyone"}})["responseObject"]["id"]


def add_users(api, campaign_id: str, users: list[str]) -> None:
    answer = requests.put(f"{api.base_url}/push/campaign/{campaign_id}/user/add", json={"requestObject": users}, timeout=120)
    assert answer.status_code == 200, answer.text


def detail(api, campaign_id: str) -> dict:
    return api.get(f"/push/campaign/{campaign_id}/detail").json()["responseObject"]


def test_campaign_cycle_each_device_once_even_when_users_share_it_and_send_live_twice(api, new_app, apns_sim, fcm_sim):
    app_id = new_app()
    tag = uuid.uuid4().hex[:6]
    alice, bob, carol = f"alice-{tag}", f"bob-{tag}", f"carol-{tag}"
    shared_token, alice_android, carol_ios = apns_token(), fcm_token(), apns_token()
    register(api, app_id, shared_token, "apns", alice, f"act-a-{tag}")
    register(api, app_id, shared_token, "apns", bob, f"act-b-{tag}")  # one device, two users
    register(api, app_id, alice_android, "fcm", alice, f"act-a2-{tag}")
    register(api, app_id, carol_ios, "apns", carol, f"act-c-{tag}")

    campaign_id = create_campaign(api, app_id, "Spring offer")
    assert detail(api, campaign_id)["sent"] is False
    add_users(api, campaign_id, [carol, alice, bob])
    add_users(api, campaign_id, [alice])  # the same user twice keeps one

    first = api.get(f"/push/campaign/{campaign_id}/user/list", page=0, size=2).json()
    second = api.get(f"/push/campaign/{campaign_id}/user/list", page=1, size=2).json()
    assert (first["page"], first["size"], second["page"]) == (0, 2, 1)
    listed = first["responseObject"]["users"] + second["responseObject"]["users"]
    assert sorted(listed) == sorted([alice, bob, carol]) and len(listed) == 3
    assert api.get(f"/push/campaign/{campaign_id}/user/list", page=0, size=2).json() == first  # stable order

    assert campaign_id not in [c["id"] for c in api.get("/push/campaign/list", all="false").json()["responseObject"]]
    api.ok(f"/push/campaign/send/live/{campaign_id}")
    api.ok(f"/push/campaign/send/live/{campaign_id}")  # twice: still once per device
    done = wait_for(lambda: (d := detail(api, campaign_id))["sent"] and d, what="campaign sent")
    assert done["timestampSent"] and done["progress"]["total"] == 3 and done["progress"]["sent"] == 3
    assert done["progress"]["pending"] == 0 and done["message"]["title"] == "Spring offer"
    api.ok(f"/push/campaign/send/live/{campaign_id}")  # after it was sent: nothing more
    time.sleep(2)
    assert apns_sim.delivered(shared_token) == 1 and apns_sim.delivered(carol_ios) == 1 and fcm_sim.delivered(alice_android) == 1
    assert apns_sim.received(shared_token)[-1]["body"]["aps"]["alert"]["title"] == "Spring offer"
    assert campaign_id in [c["id"] for c in api.get("/push/campaign/list", all="false").json()["responseObject"]]

    answer = api.post(f"/push/campaign/{campaign_id}/delete")
    assert answer.json() == {"status": "OK", "responseObject": {"deleted": True}}
    gone = api.get(f"/push/campaign/{campaign_id}/detail")
    assert gone.status_code == 400 and gone.json()["status"] == "ERROR"
    assert "does not exist" in gone.json()["responseObject"]["message"]


def test_send_test_reaches_only_the_test_user(api, new_app, apns_sim):
    app_id = new_app()
    tester, other = f"tester-{uuid.uuid4().hex[:6]}", f"other-{uuid.uuid4().hex[:6]}"
    tester_token, other_token = apns_token(), apns_token()
    register(api, app_id, tester_token, "apns", tester)
    register(api, app_id, other_token, "apns", other)
    campaign_id = create_campaign(api, app_id, "Test run")
    add_users(api, campaign_id, [other])
    api.ok(f"/push/campaign/send/test/{campaign_id}", {"userId": tester})
    wait_for(lambda: apns_sim.delivered(tester_token) == 1, what="test push delivered")
    assert apns_sim.delivered(other_token) == 0
    assert detail(api, campaign_id)["sent"] is False


def test_unknown_campaign_and_bad_input_get_the_powerauth_envelope(api, new_app):
    answer = api.get("/push/campaign/no-such-campaign/detail")
    assert answer.status_code == 400
    assert answer.json()["status"] == "ERROR" and "does not exist" in answer.json()["responseObject"]["message"]
    answer = requests.put(f"{api.base_url}/push/campaign/no-such-campaign/user/add", json={"requestObject": ["u"]}, timeout=30)
    assert answer.status_code == 400 and "does not exist" in answer.json()["responseObject"]["message"]

    campaign_id = create_campaign(api, new_app())
    answer = requests.put(f"{api.base_url}/push/campaign/{campaign_id}/user/add", json={"requestObject": ["ok", 5]}, timeout=30)
    assert answer.status_code == 400 and "requestObject[1]" in answer.json()["responseObject"]["message"]
    answer = api.get(f"/push/campaign/{campaign_id}/user/list", size="lots")
    assert answer.status_code == 400 and "size" in answer.json()["responseObject"]["message"]
    answer = api.post("/push/campaign/create", {"appId": "no-such-app", "message": {"title": "x"}})
    assert answer.status_code == 400 and "appId" in answer.json()["responseObject"]["message"]
    too_many = ["u"] * 100_001
    answer = requests.put(f"{api.base_url}/push/campaign/{campaign_id}/user/add", json={"requestObject": too_many}, timeout=60)
    assert answer.status_code == 400 and "100000" in answer.json()["responseObject"]["message"]


def test_workers_killed_mid_campaign_still_serve_every_device_exactly_once(api, new_app, stack, apns_sim, fcm_sim):
    app_id = new_app()
    tag = uuid.uuid4().hex[:6]
    count = 600
    # Every fourth device answers slowly, so sends are in flight when the kill lands.
    tokens = [
        (apns_token("de1a3") if i % 4 == 0 else apns_token()) if i % 2 else (fcm_token("delay3-") if i % 4 == 0 else fcm_token())
        for i in range(count)
    ]
    users = [f"kc-{tag}-{i:04d}" for i in range(count)]
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda i: register(api, app_id, tokens[i], "apns" if i % 2 else "fcm", users[i]), range(count)))
    campaign_id = create_campaign(api, app_id, "Survive")
    add_users(api, campaign_id, users)
    db = ledger_view.database(stack)

    api.ok(f"/push/campaign/send/live/{campaign_id}")
    wait_for(lambda: ledger_view.rows(db, campaign_id, "sent"), what="first campaign deliveries sent")
    stack.stop_workers(["core", "deliver"], kill=True)
    # Sends whose answer was in flight at the kill (claimed, no outcome recorded) are the only ones
    # that may reach a device twice: the provider may have taken them an instant before the kill.
    in_flight = ledger_view.tokens(db, campaign_id, "sending")
    recorded = ledger_view.tokens(db, campaign_id, "sent")
    assert not detail(api, campaign_id)["sent"], "the kill landed after the whole campaign; nothing was tested"
    stack.start_workers(["core", "deliver"])

    done = wait_for(lambda: (d := detail(api, campaign_id))["sent"] and d, timeout=180, what="campaign sent after restart")
    assert done["progress"]["total"] == count and done["progress"]["sent"] == count
    apns_counts, fcm_counts = apns_sim.all_counts()["delivered"], fcm_sim.all_counts()["delivered"]
    served = {t: (apns_counts if i % 2 else fcm_counts).get(t, 0) for i, t in enumerate(tokens)}
    assert all(n >= 1 for n in served.values()), "a device was never served"
    repeated = {t for t, n in served.items() if n > 1}
    assert repeated <= in_flight, f"{len(repeated - in_flight)} devices served twice that were not in flight at the kill"
    assert not repeated & recorded, "a send recorded before the kill was sent again"
    assert all(n <= 2 for n in served.values())
    # A repeat carries the first send's display id: the device replaces, never shows it twice.
    apns_shown, fcm_shown = apns_sim.all_counts()["shown"], fcm_sim.all_counts()["shown"]
    shown = {t: (apns_shown if i % 2 else fcm_shown).get(t, 0) for i, t in enumerate(tokens)}
    assert all(n == 1 for n in shown.values()), f"{sum(1 for n in shown.values() if n != 1)} devices did not show the campaign exactly once"
