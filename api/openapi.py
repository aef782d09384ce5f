"""The OpenAPI 3 document of every route, built from the routes' own request schemas (api/schema.py).

``/openapi.json`` walks the app's URL map: each route's view carries the
:class:`~api.schema.Operation` it validates requests with, so the document
describes exactly what the API enforces. Errors are documented in each API
family's own envelope. ``/docs`` is Swagger UI over that document, served
from the ``swagger-ui-bundle`` package (no CDN).
"""
from __future__ import annotations

import re
from pathlib import Path

from flask import Blueprint, Flask, Response, current_app, send_from_directory

from api import accepted, auth
from api.errors import family_of, renders_errors
from api.powerauth_envelope import render_error
from api.schema import Field, Json, Obj, Operation, operation
from shared.settings import Settings

blueprint = Blueprint("openapi", __name__)
renders_errors(blueprint, "powerauth", render_error)

TITLE = "Push server: PowerAuth Push, WalletConnect bridge and WalletConnect push APIs"
VERSION = "1.0.0"

TAG_OF_BLUEPRINT = {
    "powerauth": "PowerAuth push",
    "auth": "Admin: API keys",
    "inbox": "PowerAuth inbox",
    "campaigns": "PowerAuth campaigns",
    "control": "PowerAuth: control of running sends",
    "failures": "PowerAuth push",
    "outcome_feed": "PowerAuth push",
    "budgets": "PowerAuth push",
    "admin_ops": "Admin: operations",
    "audit": "Admin: audit log",
    "openapi": "Documentation",
    "wc_bridge": "WalletConnect v1 bridge",
    "wc_push": "WalletConnect push server",
}

#: Each family's error envelope (api/errors.py, and the renderers of api/powerauth.py, wc_bridge.py, wc_push.py).
ERROR_SCHEMAS = {
    "powerauth": {
        "type": "object",
        "required": ["status", "responseObject"],
        "properties": {
            "status": {"type": "string", "enum": ["ERROR"]},
            "responseObject": {
                "type": "object",
                "required": ["code", "message"],
                "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
            },
        },
    },
    "wc_bridge": {
        "type": "object",
        "required": ["message"],
        "properties": {"message": {"type": "string"}, "field": {"type": "string"}},
    },
    "wc_push": {
        "type": "object",
        "required": ["status", "errors"],
        "properties": {
            "status": {"type": "string", "enum": ["FAILED"]},
            "errors": {
                "type": "array",
                "minItems": 1,
                "items": {
                    "type": "object",
                    "required": ["name", "description"],
                    "properties": {"name": {"type": "string"}, "description": {"type": "string"}},
                },
            },
            "fields": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["field", "description", "location"],
                    "properties": {
                        "field": {"type": "string"},
                        "description": {"type": "string"},
                        "location": {"type": "string", "enum": ["body", "query", "header", "path"]},
                    },
                },
            },
        },
    },
}
ERROR_NAMES = {"powerauth": "PowerAuthError", "wc_bridge": "BridgeError", "wc_push": "WalletConnectPushError"}

#: What the HTTP server (granian) itself answers before the API sees a request: request line and headers
#: over its 8 KB buffer, or more than 100 headers. No body and no Content-Type; the connection is closed.
SERVER_REFUSAL = {"description": "The HTTP server's own refusal: the request line and headers are over 8 KB, or more "
                                 "than 100 headers; an empty body, and the connection is closed"}
#: The 4XX answers' description; a request the HTTP server cannot parse is its own 400, with an empty body.
CLIENT_ERROR = ("Invalid request, unknown resource, not authorised, or over a limit (the field at fault is named). "
                "A request the HTTP server cannot parse (a malformed request line, header or Content-Length) is "
                "answered 400 by the server itself, with an empty body, and the connection is closed")

#: Werkzeug's ``<converter:name>`` in a rule.
RULE_ARGUMENT = re.compile(r"<(?:(?P<converter>[a-zA-Z_]+)(?:\([^>]*\))?:)?(?P<name>[a-zA-Z_][a-zA-Z0-9_]*)>")


#: OpenAPI links: where an answer's id goes next (schemathesis's stateful phase follows them, so it
#: reaches the handlers behind a resource that exists). Each: source endpoint, method, status, and
#: the targets (endpoint, method) with their parameters as runtime expressions.
_SESSION = {"session_id": "$response.body#/sessionId"}
_CAMPAIGN = {"campaign_id": "$response.body#/responseObject/id"}
_TENANT = {"tenant_id": "$request.body#/id"}
LINKS: list[tuple[str, str, int, list[tuple[str, str, dict]]]] = [
    ("wc_bridge.new_session", "POST", 200, [
        ("wc_bridge.update_session", "PUT", _SESSION), ("wc_bridge.get_session", "GET", _SESSION),
        ("wc_bridge.new_call", "POST", _SESSION), ("wc_bridge.get_calls", "GET", _SESSION),
        ("wc_bridge.delete_session", "DELETE", _SESSION),
    ]),
    ("wc_bridge.new_call", "POST", 200, [
        ("wc_bridge.get_call", "GET", {"session_id": "$request.path.session_id", "call_id": "$response.body#/callId"}),
        ("wc_bridge.new_call_status", "POST", {"call_id": "$response.body#/callId"}),
        ("wc_bridge.get_call_status", "GET", {"call_id": "$response.body#/callId"}),
    ]),
    ("campaigns.create_campaign", "POST", 200, [
        ("campaigns.campaign_detail", "GET", _CAMPAIGN), ("campaigns.add_users", "POST", _CAMPAIGN),
        ("campaigns.list_users", "GET", _CAMPAIGN), ("campaigns.send_test", "POST", _CAMPAIGN),
        ("campaigns.send_live", "POST", _CAMPAIGN), ("campaigns.delete_campaign", "POST", _CAMPAIGN),
    ]),
    ("powerauth.send_message", "POST", 200, [
        ("powerauth.message_detail", "GET", {"message_id": "$response.body#/responseObject/messageId"}),
    ]),
    ("wc_push.create_tenant", "POST", 200, [
        ("wc_push.get_tenant", "GET", _TENANT), ("wc_push.update_apns", "POST", _TENANT),
        ("wc_push.update_fcm_v1", "POST", _TENANT), ("wc_push.register", "POST", _TENANT),
    ]),
    ("wc_push.register", "POST", 200, [
        ("wc_push.send", "POST", {"tenant_id": "$request.path.tenant_id", "client_id": "$request.body#/client_id"}),
        ("wc_push.unregister", "DELETE", {"tenant_id": "$request.path.tenant_id", "client_id": "$request.body#/client_id"}),
    ]),
]


def _add_links(paths: dict, operation_ids: dict[tuple[str, str], tuple[str, str, str]]) -> None:
    """Put :data:`LINKS` on the answers they start from (a link whose route is absent is skipped)."""
    for source, method, status, targets in LINKS:
        if (source, method) not in operation_ids:
            continue
        path, key, _ = operation_ids[(source, method)]
        answer = paths[path][key]["responses"].get(str(status))
        if answer is None:
            continue
        for endpoint, target_method, parameters in targets:
            target = operation_ids.get((endpoint, target_method))
            if target is None:
                continue
            target_path, _, target_id = target
            # A parameter the target's path does not have (e.g. a tenant route's alias without it) is left out.
            used = {k: v for k, v in parameters.items() if "{" + k + "}" in target_path}
            answer.setdefault("links", {})[target_id] = {"operationId": target_id, "parameters": used}


def build(app: Flask, settings: Settings) -> dict:
    """The document for ``app``'s routes; every route must declare an operation (tests check it)."""
    paths: dict[str, dict] = {}
    seen_ids: set[str] = set()
    #: (endpoint, method) → (path, method key, operationId) of its first rule with all the link's parameters.
    operation_ids: dict[tuple[str, str], tuple[str, str, str]] = {}
    for rule in sorted(app.url_map.iter_rules(), key=lambda r: (r.rule, r.endpoint)):
        if rule.endpoint in ("static", "openapi.swagger_asset"):
            continue
        view = app.view_functions[rule.endpoint]
        spec: Operation | None = getattr(view, "openapi", None)
        if spec is None:
            continue
        blueprint_name = rule.endpoint.split(".", 1)[0]
        family = family_of(app.blueprints.get(blueprint_name))  # the envelope its blueprint declared (api/errors.py)
        path = RULE_ARGUMENT.sub(lambda m: "{" + m.group("name") + "}", rule.rule)
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            operation_id = _unique(f"{rule.endpoint.replace('.', '_')}_{method.lower()}", seen_ids)
            paths.setdefault(path, {})[method.lower()] = _operation(
                spec, rule, family, TAG_OF_BLUEPRINT.get(blueprint_name, blueprint_name), operation_id, method, settings
            )
            known = operation_ids.get((rule.endpoint, method))
            if known is None or known[0].count("{") < path.count("{"):  # prefer the rule with the most parameters
                operation_ids[(rule.endpoint, method)] = (path, method.lower(), operation_id)
    _add_links(paths, operation_ids)
    return {
        "openapi": "3.0.3",
        "info": {
            "title": TITLE,
            "version": VERSION,
            "description": (
                "One server speaking three push APIs. Every write is validated here, then queued (RabbitMQ) "
                "and applied by workers; errors use each API family's own envelope and name the field at fault. "
                "Generated from the request schemas the API validates with (api/schema.py)."
            ),
        },
        "tags": [{"name": tag} for tag in dict.fromkeys(TAG_OF_BLUEPRINT.values())],
        "paths": paths,
        "components": {
            "schemas": {ERROR_NAMES[family]: schema for family, schema in ERROR_SCHEMAS.items()},
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "description": "An app's API key, or the admin key"},
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-Api-Key"},
            },
        },
    }


def _unique(name: str, seen: set[str]) -> str:
    candidate, index = name, 2
    while candidate in seen:
        candidate, index = f"{name}_{index}", index + 1
    seen.add(candidate)
    return candidate


def _parameters(spec: Operation, rule, settings: Settings) -> list[dict]:
    parameters = []
    for name in rule.arguments:
        field = spec.path.get(name)
        schema = field.schema(settings) if field is not None else {"type": "string", "minLength": 1}
        parameters.append({"name": name, "in": "path", "required": True, "schema": schema})
    for name, field in spec.query.items():
        schema = field.schema(settings)
        parameter = {"name": name, "in": "query", "required": field.required, "schema": schema}
        if schema.get("type") == "array":
            parameter.update(style="form", explode=False)
        parameters.append(parameter)
    for name, field in spec.headers.items():
        parameters.append({"name": name, "in": "header", "required": False, "schema": field.schema(settings)})
    return parameters


def _content(field: Field | None, media_type: str, settings: Settings) -> dict:
    return {media_type: {"schema": field.schema(settings) if field is not None else {}}}


def _operation(spec: Operation, rule, family: str, tag: str, operation_id: str, method: str, settings: Settings) -> dict:
    result: dict = {"operationId": operation_id, "summary": spec.summary, "tags": spec.tags or [tag]}
    if spec.description:
        result["description"] = spec.description
    if spec.deprecated:
        result["deprecated"] = True
    parameters = _parameters(spec, rule, settings)
    if parameters:
        result["parameters"] = parameters
    if method in ("POST", "PUT", "PATCH", "DELETE"):
        if spec.form:
            form = Obj(spec.form).schema(settings)
            result["requestBody"] = {
                "required": any(f.required for f in spec.form.values()),
                "content": {"multipart/form-data": {"schema": form}, "application/x-www-form-urlencoded": {"schema": form}},
            }
        elif spec.body is not None:
            result["requestBody"] = {"required": spec.body_required, "content": _content(spec.body, "application/json", settings)}
    responses: dict = {}
    for status, answers in (spec.responses or {200: None}).items():
        # One answer, or a list of them in different media types (e.g. text, or JSON on request).
        content: dict = {}
        for answer in answers if isinstance(answers, list) else [answers]:
            media_type, field = answer if isinstance(answer, tuple) else ("application/json", answer)
            content.update(_content(field, media_type, settings))
        responses[str(status)] = {"description": "Success" if int(status) < 300 else "Answer", "content": content}
    if method != "GET" and "200" in responses and "202" not in responses:
        # A write RabbitMQ confirmed but not seen applied within the wait: the same answer, 202 (api/accepted.py).
        responses["202"] = {
            **responses["200"],
            "description": "Accepted: queued durably but not yet seen applied (it will be); do not retry",
            "headers": {accepted.COMMAND_ID_HEADER: {"schema": {"type": "string"}, "description": "The write's id"}},
        }
    error = {"content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{ERROR_NAMES[family]}"}}}}
    responses["4XX"] = {"description": CLIENT_ERROR, **error}
    responses["431"] = SERVER_REFUSAL
    # A route that declares its own 503 (a health check's answer) documents that one instead.
    responses.setdefault("503", {"description": "RabbitMQ or MongoDB unreachable: retry after Retry-After seconds",
                                 "headers": {"Retry-After": {"schema": {"type": "integer"}}}, **error})
    result["responses"] = responses
    needed = auth.route_class(rule.rule)
    if needed is not None:
        # Keys are checked when PUSH_AUTH_ENABLED is on (docker-compose); `make run`'s demo has them off.
        result["security"] = [{"bearer": []}, {"apiKey": []}]
        result["description"] = (result.get("description", "") + "\n\n" + (
            "Needs the admin key." if needed == "admin" else "Needs the app's API key (or the admin key).")).strip()
    else:
        result["security"] = []
    return result


# --- serving ---------------------------------------------------------------------------------------

def _swagger_dir() -> Path:
    import swagger_ui_bundle

    return Path(swagger_ui_bundle.swagger_ui_path)


DOCS_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Push server API</title>
<link rel="stylesheet" href="/docs/assets/swagger-ui.css"></head>
<body><div id="swagger-ui"></div>
<script src="/docs/assets/swagger-ui-bundle.js"></script>
<script>window.ui = SwaggerUIBundle({url: "/openapi.json", dom_id: "#swagger-ui", deepLinking: true});</script>
</body></html>
"""


@blueprint.get("/openapi.json")
@operation("This OpenAPI 3 document", responses={200: Json(object_only=True)})
def openapi_json():
    document = current_app.extensions.get("openapi")
    if document is None:
        import json

        document = json.dumps(build(current_app, current_app.extensions["push"].settings))
        current_app.extensions["openapi"] = document
    return Response(document, mimetype="application/json")


@blueprint.get("/docs")
@blueprint.get("/docs/")
@operation("Swagger UI over this document", responses={200: ("text/html", None)})
def docs():
    return Response(DOCS_PAGE, mimetype="text/html")


@blueprint.get("/docs/assets/<path:name>")
def swagger_asset(name: str):
    return send_from_directory(_swagger_dir(), name, max_age=3600)
