"""The WalletConnect v1 push/bridge API (seed 000): sessions, call requests, call statuses.

The reference is WalletConnect/py-walletconnect-bridge. Every write is a
command through RabbitMQ (``wc.*`` kinds, applied by :mod:`workers.wc_bridge`)
that the API waits for; reads come straight from MongoDB. Data expires as in
the reference: a session 24 hours after its last write, call data one hour
after it was written (both settings); expired data answers as absent even
before MongoDB's TTL index has removed it.

A call request notifies the wallet once it is stored: through its session's
``push.webhook`` (a POST on the ``deliver.webhook`` queue), or, for push type
``apns``/``fcm`` without a webhook, as a push through the normal send pipeline
with the credentials of the app ``wc_bridge_push_app_id``. A webhook must pass
the outbound check (shared/outbound.py: public addresses, or an allow-listed
host and port).

Requests are validated by the routes' schemas (api/schema.py, also the OpenAPI
document). A JSON body is read here first, whatever its Content-Type (as the
reference), at most ``wc_bridge_max_payload_bytes``. Errors are JSON
``{"message", "field"?}``: 400 names the field, 404 an unknown or expired
session or call, 413 a body over that limit.

Answers carry both forms where they don't conflict (README "Compatibility with
the reference servers"): a stored payload is answered as the seed's top-level
``encryptionPayload`` and, as the reference and its SDK (``walletconnect``
0.7.28, which reads ``response.data``) have it, inside ``data``; both with the
reference's TTL fields ``expires`` (ms since the epoch) and ``ttlInSeconds``
(:func:`payload_answer`, the one place both the Flask routes and the poll
path render an answer). ``"webhook": ""`` is no webhook. ``GET /hello`` and
``GET /info`` answer as the reference does.

The two short-polled GETs (``/session/<id>`` and ``/call-status/<id>``) are
answered one way, from a per-process :class:`PollReader` that reads many
pollers' ids in one query by ``_id`` with a projection and answers a read
again for ``wc_bridge_poll_fresh_seconds`` (:func:`poll_answer` builds the
answer): in the event loop of the RSGI app (:mod:`api.rsgi`), and by the Flask
routes when that read failed (their read then is the reader's again, and its
failure a 503 in this family's format).
"""
from __future__ import annotations

import asyncio
import math
import threading
import time
import uuid
from datetime import UTC, datetime

import orjson
from flask import Blueprint, Response, current_app, request

from api import schema as sc
from api.context import services
from api.errors import ApiError, bad_request, not_found, renders_errors, unavailable
from api.powerauth import VERSION
from api.services import Services
from shared import commands
from shared import db as mongo
from shared.commands import command
from shared.outbound import OutboundRefused, parse
from shared.payload import Body
from shared.send_entry import SendEntry

#: Path prefixes of this API family (its error format applies under them).
PATH_PREFIXES = ("/session", "/call-status")
#: Push types delivered through the send pipeline, and the provider each maps to.
PROVIDER_BY_PUSH_TYPE = {"apns": "apns", "apn": "apns", "ios": "apns", "fcm": "fcm", "android": "fcm"}
#: Deepest nesting of an ``encryptionPayload`` (WalletConnect's is flat; MongoDB stores at most 100 levels).
MAX_PAYLOAD_DEPTH = 32
#: What the wallet's push says.
PUSH_TITLE = "WalletConnect"
PUSH_BODY = "New call request"
#: Content type of the answers without a body (200 to a write, 204 to a poll with nothing yet).
EMPTY_TYPE = "text/plain"
#: What ``GET /info`` names (the reference answers its own name, repository and version).
BRIDGE_NAME = "WalletConnect Bridge Server"
BRIDGE_REPOSITORY = "push-server"

blueprint = Blueprint("wc_bridge", __name__)


def json_response(body, status: int = 200, headers: dict | None = None) -> Response:
    return Response(orjson.dumps(body), status=status, mimetype="application/json", headers=headers)


def empty(status: int = 200) -> Response:
    """An answer without a body; typed, so it matches the OpenAPI document."""
    return Response(status=status, mimetype=EMPTY_TYPE)


def render_error(error: ApiError) -> Response:
    headers = {"Retry-After": str(error.retry_after)} if error.retry_after else None
    body = {"message": error.message}
    if error.field:
        body["field"] = error.field
    return json_response(body, error.status, headers)


renders_errors(blueprint, "wc_bridge", render_error, path_prefixes=PATH_PREFIXES)


# --- reading --------------------------------------------------------------------------------------

def now() -> datetime:
    return datetime.now(UTC)


def stored_date(value) -> datetime:
    """A date as MongoDB answers it; nx-27017 answers a date written by ``$set`` on an existing
    document as a naive UTC string (``2030-01-01 12:00:00.123000``)."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def live(doc: dict | None, at: datetime | None = None) -> dict | None:
    """The document unless it is absent, deleted or past its ``expires_at``."""
    if doc is None or doc.get("deleted"):
        return None
    expires = doc.get(mongo.EXPIRES_AT)
    if expires is not None and stored_date(expires) <= (at or now()):
        return None
    return doc


def stored_payload(doc: dict, at: datetime | None = None) -> dict:
    """A stored payload with the reference's TTL fields: ``expires`` (ms since the epoch) and ``ttlInSeconds``
    (whole seconds left, rounded up: 0 once ``expires_at`` has passed, exactly when :func:`live` says expired)."""
    expires = stored_date(doc[mongo.EXPIRES_AT]).timestamp()
    left = expires - (at.timestamp() if at is not None else time.time())
    return {"encryptionPayload": doc["payload"], "expires": int(expires * 1000), "ttlInSeconds": max(0, math.ceil(left))}


def payload_answer(doc: dict | None, at: datetime | None = None) -> dict | None:
    """The answer to a read of one stored payload (a session, a call, a call status), in both forms; None when
    there is nothing to answer (no document, deleted, expired, or no payload yet).

    The seed's top-level ``encryptionPayload`` and the reference's ``data``
    wrapper (what the ``walletconnect`` SDK reads), each with the TTL fields.
    Every route and the poll path (:func:`poll_answer`) answer through here.
    """
    if doc is None or doc.get("deleted") or doc.get("payload") is None:
        return None
    stored = stored_payload(doc, at)
    if stored["ttlInSeconds"] == 0:  # expired: the one date parse serves the expiry check and the answer
        return None
    return {**stored, "data": stored}


def live_session(session_id: str, projection: dict | None = None) -> dict | None:
    if len(session_id) > sc.MAX_ID_LENGTH:
        return None
    fields = {"deleted": 1, "expires_at": 1, **(projection or {})}
    return live(services().find_one(mongo.WC_SESSIONS, {"_id": session_id}, fields))


def existing_session(session_id: str, projection: dict | None = None) -> dict:
    session = live_session(session_id, projection)
    if session is None:
        raise not_found(f"Session not found or expired: {session_id}", field="sessionId", location="path")
    return session


def existing_call(call_id: str, projection: dict | None = None) -> dict:
    call = None
    if len(call_id) <= sc.MAX_ID_LENGTH:
        fields = {"session_id": 1, "expires_at": 1, **(projection or {})}
        call = live(services().find_one(mongo.WC_CALLS, {"_id": call_id}, fields))
    if call is None:
        raise not_found(f"Call request not found or expired: {call_id}", field="callId", location="path")
    return call


# --- request schemas ------------------------------------------------------------------------------

class PathId(sc.Str):
    """A session or call id in the path: any text; an unknown (or overlong) one answers as absent."""

    def __init__(self, **options):
        super().__init__(max_length=None, **options)

    def clean(self, value, path):
        return value


class EncryptionPayload(sc.Field):
    """WalletConnect's encrypted payload, kept as sent: ``{data, hmac, iv}`` (a non-empty string is taken too).

    It must be storable as it is: no integer beyond 64 bits, no NaN or infinity,
    no key with a NUL character, at most :data:`MAX_PAYLOAD_DEPTH` levels deep.
    """

    def clean(self, value, path):
        if not isinstance(value, dict | str) or not value:
            raise sc.Invalid("must be a non-empty JSON object (data, hmac, iv) or string")
        problem = unstorable(value)
        if problem:
            raise sc.Invalid(problem)
        return value

    def _schema(self, settings):
        return {
            "oneOf": [
                {"type": "object", "minProperties": 1, "example": {"data": "5f2a", "hmac": "9c1e", "iv": "00ff"}},
                {"type": "string", "minLength": 1},
            ]
        }


def unstorable(value) -> str | None:
    """Why MongoDB could not store ``value`` as it is, if it could not (walked without recursion)."""
    pending = [(value, 1)]
    while pending:
        item, depth = pending.pop()
        if isinstance(item, dict | list):
            if depth > MAX_PAYLOAD_DEPTH:
                return f"must not nest deeper than {MAX_PAYLOAD_DEPTH} levels"
            if isinstance(item, dict):
                if any("\x00" in key for key in item):
                    return "must not have a key containing a NUL character"
                items = item.values()
            else:
                items = item
            pending.extend((child, depth + 1) for child in items)
        elif isinstance(item, bool):
            continue
        elif isinstance(item, int) and not -(2**63) <= item < 2**63:
            return "must not hold an integer beyond 64 bits"
        elif isinstance(item, float) and not math.isfinite(item):
            return "must not hold NaN or an infinite number"
    return None


def webhook_url(value: str) -> str | None:
    """The problem with a webhook URL as requests would send it, if any (a Str check; the target is checked after);
    the empty string is "no webhook"."""
    if value == "":
        return None
    try:
        parse(value)
    except OutboundRefused as refused:
        return str(refused)
    return None


SESSION_ID = {"session_id": PathId(description="The session's id (answered by POST /session/new)")}
CALL_ID = {"call_id": PathId(description="The call request's id (answered by POST /session/{session_id}/call/new)")}
SESSION_AND_CALL_ID = {**SESSION_ID, **CALL_ID}
ENCRYPTION_PAYLOAD = EncryptionPayload(required=True, description="Encrypted by the dapp or wallet; stored and answered as sent")
PUSH = sc.Obj(
    {
        "type": sc.Str(required=True, description="apns or fcm (also apn, ios, android) push through this server's "
                                                 "send pipeline when there is no webhook; any other value is kept"),
        "token": sc.Str(required=True, max_length=sc.MAX_TOKEN_LENGTH, description="The wallet's push token"),
        "webhook": sc.Str(max_length=sc.MAX_TOKEN_LENGTH, allow_empty=True, check=webhook_url,
                         description="http(s) URL POSTed {sessionId, callId, pushType, pushToken, dappName} on each call "
                                     "request; it must resolve to a public address, or be an allowed host:port "
                                     "(PUSH_OUTBOUND_ALLOWED_TARGETS); no user name, no backslash. Empty (as wallets send it): "
                                     "no webhook"),
    },
    description="How the wallet is told of a call request",
)
SESSION_UPDATE = sc.Obj({"encryptionPayload": ENCRYPTION_PAYLOAD, "push": PUSH})
NEW_CALL = sc.Obj({"encryptionPayload": ENCRYPTION_PAYLOAD, "dappName": sc.Str(description="Named in the wallet's push")})
NEW_CALL_STATUS = sc.Obj({"encryptionPayload": ENCRYPTION_PAYLOAD})
#: The TTL fields of an answer: when the data expires (ms since the epoch) and the seconds left.
TTL_FIELDS = {
    "expires": sc.Int(required=True, description="When it expires: milliseconds since the epoch"),
    "ttlInSeconds": sc.Int(required=True, minimum=0, description="Seconds until it expires"),
}
#: A stored payload (an object or a string, as it was sent) with its TTL fields.
STORED = {"encryptionPayload": sc.Json(required=True, description="As the dapp or wallet sent it"), **TTL_FIELDS}
#: A stored payload as answered: the seed's top-level form and the reference's ``data`` wrapper.
PAYLOAD_ANSWER = sc.Obj({**STORED, "data": sc.Obj(STORED, required=True, description="The same (the reference's form)")})
EMPTY = (EMPTY_TYPE, None)


def encryption_payload(data: dict):
    """``encryptionPayload`` of a JSON object body, validated: required, an object or a string, storable."""
    return sc.check(ENCRYPTION_PAYLOAD, data.get("encryptionPayload"), "encryptionPayload")


def push_target(data: dict) -> dict | None:
    """``push: {type, token, webhook}`` of a JSON object body, validated; optional, other keys dropped."""
    return _target(sc.check(PUSH, data.get("push"), "push"))


def _target(push: dict | None) -> dict | None:
    if push is None:
        return None
    return {"type": push["type"], "token": push["token"], "webhook": push.get("webhook") or None}


def check_webhook_host(push: dict | None) -> None:
    """400 naming ``push.webhook`` when the outbound check refuses it (shared/outbound.py)."""
    if push is None or push["webhook"] is None:
        return
    try:
        services().outbound.check(push["webhook"], at_intake=True)
    except OutboundRefused as refused:
        raise bad_request("push.webhook", f"not allowed on this server: {refused}") from None


# --- request bodies -------------------------------------------------------------------------------

@blueprint.before_request
def read_body() -> None:
    """Read the JSON body of a route that takes one, before its schema validates it.

    413 over ``wc_bridge_max_payload_bytes``. The body is already whole (the
    RSGI app read it before Flask ran, chunked or not, so its length is known
    and nothing is left to drain). It is JSON whatever its Content-Type, as in
    the reference; JSON that MongoDB or the answers could not hold (a lone
    surrogate, NaN, nesting past what orjson reads) is a 400.
    """
    spec = getattr(current_app.view_functions.get(request.endpoint), "openapi", None)
    if spec is None or spec.body is None:
        return
    limit = services().settings.wc_bridge_max_payload_bytes
    raw = request.get_data(cache=True)
    if len(raw) > limit:
        raise payload_too_large(limit)
    try:
        orjson.loads(raw)
        # Parsed again by Flask for the schema, from the cached body, whatever the Content-Type.
        request.get_json(force=True, silent=True)
    except (orjson.JSONDecodeError, RecursionError):
        raise bad_request("body", "must be a JSON object (Content-Type: application/json)") from None


def payload_too_large(limit: int) -> ApiError:
    return ApiError(413, f"body: must be at most {limit} bytes", field="body", code="ERROR_PAYLOAD_TOO_LARGE")


# --- sessions -------------------------------------------------------------------------------------

def session_ttl() -> float:
    return services().settings.wc_bridge_session_ttl_seconds


def call_ttl() -> float:
    return services().settings.wc_bridge_call_ttl_seconds


@blueprint.get("/hello")
@sc.operation("Liveness line, as the reference answers it (text)", responses={200: [(EMPTY_TYPE, None)]})
def hello():
    return Response(f"Hello World, this is WalletConnect v{VERSION}", mimetype=EMPTY_TYPE)


@blueprint.get("/info")
@sc.operation("The bridge's name and version, as the reference answers them",
             responses={200: sc.Obj({"name": sc.Str(), "repository": sc.Str(), "version": sc.Str()})})
def info():
    return json_response({"name": BRIDGE_NAME, "repository": BRIDGE_REPOSITORY, "version": VERSION})


@blueprint.post("/session/new")
@sc.operation("Create a session (the dapp)",
             responses={200: sc.Obj({"sessionId": sc.Str(required=True, format="uuid"), "expires": TTL_FIELDS["expires"]})})
def new_session():
    session_id = str(uuid.uuid4())
    ttl = session_ttl()
    created = command("wc.session.new", session_id=session_id, ttl_seconds=ttl)
    services().write(created)
    forget_polled(SESSION, session_id)
    # The SDK keeps ``expires`` (ms) with the session it saves; the worker stores the same instant.
    return json_response({"sessionId": session_id, "expires": int((created["received_at"] / 1e9 + ttl) * 1000)})


@blueprint.get("/session/<session_id>")
@sc.operation("The wallet's session details: 204 until the wallet has put them, or when unknown or expired",
             path=SESSION_ID, responses={200: PAYLOAD_ANSWER, 204: EMPTY})
def get_session(session_id: str):
    """Short-polled by the dapp; answered in the event loop (api/rsgi.py) unless its read failed there."""
    return polled(SESSION, session_id)


@blueprint.put("/session/<session_id>")
@sc.operation("Put the wallet's session details and push target (the wallet)", path=SESSION_ID, body=SESSION_UPDATE,
             responses={200: EMPTY})
def update_session(session_id: str):
    data = sc.body()
    push = _target(data.get("push"))
    check_webhook_host(push)
    existing_session(session_id)
    services().write(
        command(
            "wc.session.update",
            session_id=session_id,
            payload=data["encryptionPayload"],
            push=push,
            ttl_seconds=session_ttl(),
        )
    )
    forget_polled(SESSION, session_id)
    return empty()


@blueprint.delete("/session/<session_id>")
@sc.operation("Delete a session and its calls (an unknown session is already gone)", path=SESSION_ID,
             responses={200: EMPTY})
def delete_session(session_id: str):
    """Idempotent, as the reference: an unknown session is already gone."""
    if live_session(session_id) is not None:
        services().write(command("wc.session.delete", session_id=session_id, ttl_seconds=session_ttl()))
        forget_polled(SESSION, session_id)
    return empty()


# --- call requests --------------------------------------------------------------------------------

@blueprint.post("/session/<session_id>/call/new")
@sc.operation("Store a call request for the wallet and push it to the wallet (the dapp)", path=SESSION_ID,
             body=NEW_CALL, responses={200: sc.Obj({"callId": sc.Str(required=True, format="uuid")})})
def new_call(session_id: str):
    data = sc.body()
    payload, dapp_name = data["encryptionPayload"], data.get("dappName")
    session = existing_session(session_id, {"push": 1})
    call_id = str(uuid.uuid4())
    push = session.get("push")
    services().write(
        command(
            "wc.call.new",
            call_id=call_id,
            session_id=session_id,
            payload=payload,
            dapp_name=dapp_name,
            push=push,
            ttl_seconds=call_ttl(),
        )
    )
    if push:
        notify_wallet(session_id, call_id, push, dapp_name)
    return json_response({"callId": call_id})


def notify_wallet(session_id: str, call_id: str, push: dict, dapp_name: str | None) -> None:
    """Publish the wallet's push: to its webhook, else through the send pipeline for apns/fcm."""
    svc = services()
    if push.get("webhook"):
        body = {"sessionId": session_id, "callId": call_id, "pushType": push["type"], "pushToken": push["token"], "dappName": dapp_name}
        job = {
            "id": call_id,
            "url": push["webhook"],
            "body": body,
            "call_id": call_id,
            "session_id": session_id,
            "first_attempt_at": time.time(),
            "attempts": 0,
        }
        svc.publish(commands.DELIVER_CHUNK_WEBHOOK, job)
        return
    provider = PROVIDER_BY_PUSH_TYPE.get(push["type"].lower())
    app_id = svc.settings.wc_bridge_push_app_id
    if provider is None or not app_id:
        return
    app = svc.find_one(mongo.APPS, {"_id": app_id}, {provider: 1})
    if not app or not app.get(provider):
        return
    extras = {"sessionId": session_id, "callId": call_id}
    if dapp_name:
        extras["dappName"] = dapp_name
    body = Body(title=PUSH_TITLE, body=f"{PUSH_BODY} from {dapp_name}" if dapp_name else PUSH_BODY, extras=extras)
    device = {"_id": f"wc-session:{session_id}", "token": push["token"], "platform": provider, "environment": None}
    entry = SendEntry.for_device(device, body.to_json()).to_json()
    svc.publish(commands.EXPAND_SEND, command("send", app_id=app_id, mode="ASYNCHRONOUS", entries=[entry], call_id=call_id))


@blueprint.get("/session/<session_id>/call/<call_id>")
@sc.operation("A call request of the session (the wallet)", path=SESSION_AND_CALL_ID, responses={200: PAYLOAD_ANSWER})
def get_call(session_id: str, call_id: str):
    call = existing_call(call_id, {"payload": 1})
    if call["session_id"] != session_id:
        raise not_found(f"Call request not found or expired: {call_id}", field="callId", location="path")
    return json_response(payload_answer(call))


@blueprint.get("/session/<session_id>/calls")
@sc.operation("Every live call request of the session, by call id (the wallet)", path=SESSION_ID,
             responses={200: sc.Json(object_only=True, description="{callId: {encryptionPayload, expires, ttlInSeconds}, …, "
                                                                  "data: the same map} (call ids are UUIDs, never 'data')")})
def get_calls(session_id: str):
    """The seed's map of calls by id, and the same map under ``data`` (the reference's form, which the SDK reads)."""
    existing_session(session_id)
    svc = services()
    at = now()
    calls = svc.guarded_read(
        lambda: list(svc.db[mongo.WC_CALLS].find({"session_id": session_id}, {"payload": 1, "expires_at": 1}))
    )
    by_id = {call["_id"]: stored_payload(call, at) for call in calls if live(call, at)}
    return json_response({**by_id, "data": by_id})


# --- call statuses --------------------------------------------------------------------------------

@blueprint.post("/call-status/<call_id>/new")
@sc.operation("Put the wallet's answer to a call request (the wallet)", path=CALL_ID, body=NEW_CALL_STATUS,
             responses={200: EMPTY})
def new_call_status(call_id: str):
    payload = sc.body()["encryptionPayload"]
    existing_call(call_id)
    services().write(command("wc.call.status", call_id=call_id, payload=payload, ttl_seconds=call_ttl()))
    forget_polled(CALL_STATUS, call_id)
    return empty()


@blueprint.get("/call-status/<call_id>")
@sc.operation("The wallet's answer to a call request: 204 until there is one, or when unknown or expired (the dapp)",
             path=CALL_ID, responses={200: PAYLOAD_ANSWER, 204: EMPTY})
def get_call_status(call_id: str):
    """Short-polled by the dapp; answered in the event loop (api/rsgi.py) unless its read failed there."""
    return polled(CALL_STATUS, call_id)


# --- the polling fast path ------------------------------------------------------------------------

#: Projection of a polled document: what the answer and the expiry check need.
POLL_PROJECTION = {"payload": 1, "expires_at": 1, "deleted": 1}
NO_CONTENT_HEADERS = [("Content-Type", EMPTY_TYPE)]
JSON_HEADERS = [("Content-Type", "application/json")]
#: Polled kinds: the path prefix and the collection each reads.
SESSION, CALL_STATUS = "session", "call-status"
POLLED = {SESSION: mongo.WC_SESSIONS, CALL_STATUS: mongo.WC_CALL_STATUS}
#: Seconds a poller waits for its batch before the request falls through to Flask's direct read.
POLL_WAIT_SECONDS = 5.0
#: Cached reads kept before the oldest are dropped, and the age (seconds) past which they go.
POLL_CACHE_SIZE = 50_000
POLL_CACHE_KEEP_SECONDS = 10.0
#: Fraction of ``fresh_seconds`` after which a steadily polled id is re-read in the background.
REFRESH_AT = 0.75
#: Marks a cache entry that a write in this process made stale.
STALE = object()
#: What :meth:`PollReader.cached` answers when the id has no fresh read.
MISSING = object()


class _Slot:
    """A poller's place in the next batch: an event for threads, futures for event loops."""

    __slots__ = ("done", "doc", "error", "futures")

    def __init__(self):
        self.done = threading.Event()
        self.doc = None
        self.error = None
        self.futures: list[tuple[asyncio.AbstractEventLoop, asyncio.Future]] = []


def _settle(slots: list[tuple[asyncio.Future, _Slot]]) -> None:
    """In the loop: hand a batch's reads to the futures of this loop's pollers."""
    for future, slot in slots:
        if future.done():
            continue
        if slot.error is not None:
            future.set_exception(slot.error)
        else:
            future.set_result(slot.doc)


class PollReader:
    """Reads polled documents by ``_id``, many pollers' reads in one query, and keeps hot ones fresh.

    A poll answers from this process's last read of the id if that read
    started less than ``fresh_seconds`` ago. Otherwise it waits for the next
    batch: a background thread reads every id wanted since its last query
    with one ``find({"_id": {"$in": ids}})`` per collection, so a poller
    never gets a read that started before it asked, unless it is that fresh.
    While an id keeps being polled, the thread re-reads it in the batch
    shortly before its read goes stale (``REFRESH_AT``), if it was polled
    since, so steady pollers are answered without waiting; an id polled less
    often costs one read per poll. An id never costs more reads than polls,
    nor more than one read per ``REFRESH_AT * fresh_seconds``, per process.

    A write through this process marks its id stale (:meth:`forget`): this
    process sees its own writes at once, another within ``fresh_seconds``.

    Parameters:
      db: the MongoDB database.
      fresh_seconds: how long a read answers again (0: every poll waits for a new read).
    """

    def __init__(self, db, *, fresh_seconds: float):
        self.collections = {kind: db[name] for kind, name in POLLED.items()}
        self.fresh = fresh_seconds
        self.tick = fresh_seconds / 4 if fresh_seconds > 0 else None
        self.cache: dict[tuple[str, str], tuple[float, object]] = {}
        self.hot: dict[tuple[str, str], float] = {}
        self.pending: dict[tuple[str, str], _Slot] = {}
        self.lock = threading.Lock()
        self.wanted = threading.Condition(self.lock)
        self.thread: threading.Thread | None = None

    def cached(self, kind: str, key: str):
        """The document if this process read it less than ``fresh_seconds`` ago (None when absent), else MISSING."""
        name = (kind, key)
        now = time.monotonic()
        entry = self.cache.get(name)
        if self.tick is not None:
            self.hot[name] = now
        if entry is not None and entry[1] is not STALE and now - entry[0] < self.fresh:
            return entry[1]
        return MISSING

    def get(self, kind: str, key: str) -> dict | None:
        """The document (None when absent); raises the read's error, or TimeoutError."""
        doc = self.cached(kind, key)
        if doc is not MISSING:
            return doc
        with self.lock:
            slot = self._slot((kind, key))
        if not slot.done.wait(POLL_WAIT_SECONDS):
            raise TimeoutError("poll read")
        if slot.error is not None:
            raise slot.error
        return slot.doc

    def read_soon(self, kind: str, key: str, loop: asyncio.AbstractEventLoop) -> asyncio.Future:
        """A future of ``loop`` for the document, settled by the next batch (for an event loop, which must not wait).

        Call it after :meth:`cached` answered MISSING; the future gets the
        document (None when absent) or the read's error.
        """
        future = loop.create_future()
        with self.lock:
            self._slot((kind, key)).futures.append((loop, future))
        return future

    def _slot(self, name: tuple[str, str]) -> _Slot:
        """The id's place in the next batch (with the lock held); starts the reading thread."""
        if self.thread is None:
            self.thread = threading.Thread(target=self._run, name="wc-poll-reader", daemon=True)
            self.thread.start()
        slot = self.pending.get(name)
        if slot is None:
            slot = self.pending[name] = _Slot()
            self.wanted.notify()
        return slot

    def forget(self, kind: str, key: str) -> None:
        """A write through this process changed the document: the next poll reads it anew."""
        with self.lock:
            self.cache[(kind, key)] = (time.monotonic(), STALE)

    def _due(self, now: float, batch: dict) -> list[tuple[str, str]]:
        """Hot ids polled since their last read, which is about to go stale; ids no longer polled stop being hot."""
        due = []
        for name, polled_at in list(self.hot.items()):
            if now - polled_at > self.fresh:
                self.hot.pop(name, None)
                continue
            entry = self.cache.get(name)
            if name in batch or entry is None:
                continue
            # Re-read only what was polled since its last read, shortly before that read goes stale.
            if polled_at >= entry[0] and now - entry[0] >= self.fresh * REFRESH_AT:
                due.append(name)
        return due

    def _run(self) -> None:
        while True:
            with self.lock:
                if not self.pending:
                    self.wanted.wait(self.tick)
                batch, self.pending = self.pending, {}
            started = time.monotonic()
            due = self._due(started, batch) if self.tick is not None else []
            if not batch and not due:
                continue
            docs, error = self._read((*batch, *due))
            if error is None:
                self._store((*batch, *due), docs, started)
            self._hand_over(batch, docs, error)

    def _read(self, names) -> tuple[dict, Exception | None]:
        """The documents of ``names`` (kind, id) in one query per kind, or the failure of reading them."""
        docs: dict = {}
        try:
            for kind, collection in self.collections.items():
                ids = [key for k, key in names if k == kind]
                if ids:
                    for doc in collection.find({"_id": {"$in": ids}}, POLL_PROJECTION):
                        docs[(kind, doc["_id"])] = doc
        except Exception as failure:  # noqa: BLE001 - handed to every waiting poller, which falls back
            return docs, failure
        return docs, None

    def _store(self, names, docs: dict, started: float) -> None:
        """Cache what a read started at ``started`` found (a newer entry is kept)."""
        with self.lock:
            for name in names:
                entry = self.cache.get(name)
                if entry is None or entry[0] <= started:
                    self.cache[name] = (started, docs.get(name))
            if len(self.cache) > POLL_CACHE_SIZE:
                self._prune(started)

    @staticmethod
    def _hand_over(batch: dict, docs: dict, error: Exception | None) -> None:
        """Give each waiting slot its document (or the read's failure); settle the futures in their loops."""
        settle: dict[asyncio.AbstractEventLoop, list] = {}
        for name, slot in batch.items():
            slot.doc, slot.error = docs.get(name), error
            slot.done.set()
            # The batch left ``pending`` under the lock: no future joins the slot any more.
            for loop, future in slot.futures:
                settle.setdefault(loop, []).append((future, slot))
        for loop, slots in settle.items():
            try:
                loop.call_soon_threadsafe(_settle, slots)
            except RuntimeError:  # the loop closed (its worker is stopping): nobody waits
                pass

    def _prune(self, now: float) -> None:
        old = [name for name, (at, _) in self.cache.items() if now - at > POLL_CACHE_KEEP_SECONDS]
        for name in old:
            del self.cache[name]
        if len(self.cache) > POLL_CACHE_SIZE:
            self.cache.clear()


def poll_target(path: str) -> tuple[str, str] | None:
    """The polled kind and id of a GET's (percent-decoded) path, if it is one of the two polled routes."""
    if path.startswith("/session/"):
        kind, key = SESSION, path[9:]
    elif path.startswith("/call-status/"):
        kind, key = CALL_STATUS, path[13:]
    else:
        return None
    if key and "/" not in key and len(key) <= sc.MAX_ID_LENGTH:
        return kind, key
    return None


def poll_answer(doc: dict | None) -> tuple[int, list[tuple[str, str]], bytes]:
    """Status, headers and body of a poll's answer, as the Flask routes answer it."""
    answer = payload_answer(doc)
    if answer is None:
        return 204, NO_CONTENT_HEADERS, b""
    body = orjson.dumps(answer)
    return 200, [*JSON_HEADERS, ("Content-Length", str(len(body)))], body


def polled(kind: str, key: str) -> Response:
    """A poll answered by Flask: the reader's read (an id too long to exist is absent); failing, a 503."""
    doc = None
    if len(key) <= sc.MAX_ID_LENGTH:
        try:
            doc = current_app.extensions["wc_bridge_poll"].get(kind, key)
        except Exception:  # noqa: BLE001 - the database unreachable or too slow
            raise unavailable("the database") from None
    status, headers, body = poll_answer(doc)
    return Response(body, status=status, headers=headers)


def install(app, services_: Services) -> None:
    """Give ``app`` its process's poll reader."""
    app.extensions["wc_bridge_poll"] = PollReader(services_.db, fresh_seconds=services_.settings.wc_bridge_poll_fresh_seconds)


def forget_polled(kind: str, key: str) -> None:
    reader = current_app.extensions.get("wc_bridge_poll")
    if reader is not None:
        reader.forget(kind, key)
