"""The OpenAPI document is built from the routes' own request schemas and covers every route."""
from __future__ import annotations

import json

import jsonschema
import pytest
from schemathesis.specs.openapi.definitions import OPENAPI_30

from api import openapi
from api import schema as sc
from api.app import create_app

#: Routes that are not API operations: static files of the docs page.
NOT_OPERATIONS = {"static", "openapi.swagger_asset"}


@pytest.fixture(scope="module")
def app():
    return create_app()


@pytest.fixture(scope="module")
def document(app):
    return openapi.build(app, app.extensions["push"].settings)


def test_every_route_declares_its_operation(app):
    missing = [
        f"{sorted(rule.methods - {'HEAD', 'OPTIONS'})} {rule.rule}"
        for rule in app.url_map.iter_rules()
        if rule.endpoint not in NOT_OPERATIONS and getattr(app.view_functions[rule.endpoint], "openapi", None) is None
    ]
    assert missing == []


def test_every_route_and_method_is_in_the_document(app, document):
    for rule in app.url_map.iter_rules():
        if rule.endpoint in NOT_OPERATIONS:
            continue
        path = openapi.RULE_ARGUMENT.sub(lambda m: "{" + m.group("name") + "}", rule.rule)
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            assert method.lower() in document["paths"][path], f"{method} {path}"


def test_the_document_is_valid_openapi_3_0(document):
    jsonschema.validate(json.loads(json.dumps(document)), OPENAPI_30)


def test_errors_are_documented_in_each_family_envelope(document):
    families = {
        "/push/campaign/create": "PowerAuthError",
        "/session/new": "BridgeError",
        "/clients": "WalletConnectPushError",
    }
    for path, name in families.items():
        post = document["paths"][path]["post"]
        assert post["responses"]["4XX"]["content"]["application/json"]["schema"]["$ref"] == f"#/components/schemas/{name}"


def test_the_document_carries_the_bounds_the_api_enforces(app, document):
    settings = app.extensions["push"].settings
    add = document["paths"]["/push/campaign/{campaign_id}/user/add"]["post"]
    users = add["requestBody"]["content"]["application/json"]["schema"]["properties"]["requestObject"]["oneOf"][0]
    assert users["maxItems"] == settings.max_campaign_users_per_request
    listing = {p["name"]: p for p in document["paths"]["/push/campaign/{campaign_id}/user/list"]["get"]["parameters"]}
    assert listing["size"]["schema"]["maximum"] == 10_000 and listing["size"]["in"] == "query"


def test_a_schema_validates_what_it_documents(app):
    spec = sc.Wrapped(sc.Obj({"appId": sc.Id(required=True), "size": sc.Int(minimum=1, maximum=5), "kind": sc.Choice(["apns", "fcm"])}))
    with app.test_request_context():
        assert sc.check(spec, {"requestObject": {"appId": 7, "size": 5, "kind": "APNS"}}, "") == {"appId": "7", "size": 5, "kind": "apns"}
        for body, field in (
            ({}, "requestObject"),
            ({"requestObject": {}}, "requestObject.appId"),
            ({"requestObject": {"appId": "a", "size": 6}}, "requestObject.size"),
            ({"requestObject": {"appId": "a", "size": True}}, "requestObject.size"),
            ({"requestObject": {"appId": "a", "kind": "hms"}}, "requestObject.kind"),
            ({"requestObject": {"appId": ""}}, "requestObject.appId"),
            ({"requestObject": []}, "requestObject"),
        ):
            with pytest.raises(Exception) as failure:
                sc.check(spec, body, "")
            assert failure.value.field == field, (body, failure.value)
            assert failure.value.status == 400


def test_list_items_are_named_by_index(app):
    with app.test_request_context():
        with pytest.raises(Exception) as failure:
            sc.check(sc.List(sc.Str()), ["a", "", "c"], "requestObject.users")
    assert failure.value.field == "requestObject.users[1]"


def test_a_lone_surrogate_is_refused_where_mongodb_could_not_store_it(app):
    with app.test_request_context():
        with pytest.raises(Exception) as failure:
            sc.check(sc.Obj({"userId": sc.Str()}), {"userId": "a\ud800b"}, "requestObject")
        assert failure.value.field == "requestObject.userId"
        assert sc.check(sc.Obj({"userId": sc.Str()}), {"userId": "žluťoučký kůň 🐎"}, "requestObject") == {"userId": "žluťoučký kůň 🐎"}


def test_a_numeric_id_is_held_to_the_id_length(app):
    with app.test_request_context():
        assert sc.check(sc.Id(), 42, "appId") == "42"
        with pytest.raises(Exception) as failure:
            sc.check(sc.Id(max_length=5), 10**6, "appId")
        assert failure.value.field == "appId"


def test_links_lead_from_a_created_resource_to_the_routes_that_use_it(document):
    operation_ids = {op["operationId"] for methods in document["paths"].values() for op in methods.values()}
    links = document["paths"]["/session/new"]["post"]["responses"]["200"]["links"]
    assert links["wc_bridge_update_session_put"]["parameters"] == {"session_id": "$response.body#/sessionId"}
    created = document["paths"]["/push/campaign/create"]["post"]["responses"]["200"]["links"]
    assert {"campaigns_add_users_post", "campaigns_send_live_post"} <= set(created)
    every = [link for methods in document["paths"].values() for op in methods.values()
             for answer in op["responses"].values() for link in (answer.get("links") or {}).values()]
    assert len(every) >= 20
    assert all(link["operationId"] in operation_ids for link in every)
