"""HMS (Huawei Push Kit) simulator: the OAuth 2.0 token endpoint and ``POST /v2/<project id>/messages:send``.

``POST /oauth2/v3/token`` (form ``grant_type=client_credentials&client_id=…&client_secret=…``,
HTTP/1.1 or HTTP/2) issues an access token to an app registered on the control
port (``POST /apps``) → ``{"access_token", "expires_in": 3600, "token_type": "Bearer"}``;
an unknown client or a wrong secret → 400 ``{"error": 1101, "sub_error": 20186,
"error_description": "invalid client_secret"}``; another grant → 400 ``{"error": 1102, …}``.

Sends need ``Authorization: Bearer <access token>`` and answer HMS's result
codes in ``{"code", "msg", "requestId"}``:

  80000000  200  Success (every token)
  80100000  200  partial success: ``msg`` is the JSON text {"success", "failure", "illegal_tokens"}
  80100001  400  a field of the message is invalid (``msg`` names it: android.urgency, android.ttl, …)
  80100003  400  the message structure is wrong (no JSON, no ``message``, ``data`` not a string,
                 neither ``data`` nor a notification; a notification with ``data`` is taken, as HMS does)
  80200001  401  no, an unknown, or another project's access token
  80200003  401  the access token expired
  80300007  400  all the tokens are invalid
  80300008  400  the message (without its tokens) is over 4096 bytes
  80300010  400  ``message.token`` is not a list of 1 to 1000 token strings
  81000001  500  internal error
  (HTTP 503) flow control: HMS's throttling answer (its body's code is undocumented; this one sends 81000001)

``validate_only: true`` checks everything and delivers nothing. Behaviour by token
(a message with several tokens takes the first behaviour that applies):

  dead…       an invalid token (80300007 when all are; else 80100000 listing it)
  flowN-      HTTP 503 flow control for the token's first N attempts
  internalN-  HTTP 500 / 81000001 for the first N attempts
  delayN-     answer after N seconds

With a quota set, a project's requests above it are answered with the flow
control 503. Counts are per token: ``delivered`` for every valid token of a
delivered message, ``shown`` collapsing on ``android.notification.tag``.
Control port: see simulators/control.py, plus ``POST /apps`` {client_id, client_secret, project_id}.
"""
from __future__ import annotations

import asyncio
import itertools
import secrets
import time
import urllib.parse
from collections.abc import Awaitable

import orjson

from simulators.behaviour import number_after
from simulators.cluster import parse_args, run
from simulators.control import NodeControl
from simulators.ledger import Admission
from simulators.recorder import Recorder
from simulators.server import Connections, Request, Response

MAX_CONCURRENT_STREAMS = 100
ACCESS_TOKEN_SECONDS = 3600
#: Largest message, without its tokens, in bytes (HMS: 4096).
MAX_MESSAGE_BYTES = 4096
#: Most tokens one message may carry (HMS: 1000).
MAX_TOKENS = 1000
#: Internal control route: an access token another serving process issued.
ACCESS_TOKEN_PATH = "/_access-tokens"
SEND_PREFIX, SEND_SUFFIX = "/v2/", "/messages:send"
URGENCIES = ("HIGH", "NORMAL")
#: Token prefix, HTTP status and result code of the answers chosen by token for the first N attempts.
FAILURE_PREFIXES = (("flow", 503, "81000001", "flow control, retry later"), ("internal", 500, "81000001", "System internal error"))
SUCCESS = ("80000000", "Success")
PARTIAL = "80100000"
BAD_FIELD = "80100001"
BAD_STRUCTURE = ("80100003", "Illegal message structure")
AUTH_ERROR = ("80200001", "Oauth authentication error")
TOKEN_EXPIRED = ("80200003", "Access token expired")
ALL_TOKENS_INVALID = ("80300007", "All the tokens are invalid")
TOO_LARGE = ("80300008", "The message body size exceeds the default value")
BAD_TOKEN_COUNT = ("80300010", "The number of tokens in the message body exceeds the default value")


#: Where a token's behaviour starts (a plain token starts with none of them: no behaviour is read for it).
BEHAVIOUR_PREFIXES = ("dead", "delay", *(prefix for prefix, *_rest in FAILURE_PREFIXES))
#: The last digits of a ``requestId`` (after the time in ns): a counter, not a random draw (a syscall) per answer.
_request_ids = itertools.count()
#: The success answer's text before its ``requestId`` (the answer every plain send gets: made without a JSON dump).
_SUCCESS_HEAD = b'{"code":"%s","msg":"%s","requestId":"' % (SUCCESS[0].encode(), SUCCESS[1].encode())
_JSON = ("content-type", "application/json")


def hms_answer(status: int, code: str, msg: str, *, on_written=None) -> Response:
    return Response.json(status, {"code": code, "msg": msg, "requestId": f"{time.time_ns()}{next(_request_ids) % 1000:03d}"},
                         on_written=on_written)


def hms_success(on_written=None) -> Response:
    """``hms_answer(200, *SUCCESS)``, the same bytes."""
    return Response(200, b'%s%d%03d"}' % (_SUCCESS_HEAD, time.time_ns(), next(_request_ids) % 1000), [_JSON], on_written)


def notification_tag(message: dict) -> str | None:
    """The tag a displayed notification replaces others of the same tag by (data messages: none)."""
    android = message.get("android")
    notification = android.get("notification") if isinstance(android, dict) else None
    tag = notification.get("tag") if isinstance(notification, dict) else None
    return tag if isinstance(tag, str) else None


def _structure_refusal(message) -> Response | None:
    if not isinstance(message, dict):
        return hms_answer(400, *BAD_STRUCTURE)
    tokens = message.get("token")
    if not isinstance(tokens, list) or not 1 <= len(tokens) <= MAX_TOKENS or not all(isinstance(t, str) and t for t in tokens):
        return hms_answer(400, *BAD_TOKEN_COUNT)
    android = message.get("android", {})
    if not isinstance(android, dict):
        return hms_answer(400, *BAD_STRUCTURE)
    data = message.get("data")
    shows = "notification" in message or "notification" in android
    # A notification message may carry data too (HMS: message.data "can be a JSON string for notification
    # messages"); a message with neither is refused.
    if (data is not None and not isinstance(data, str)) or (data is None and not shows):
        return hms_answer(400, *BAD_STRUCTURE)
    if android.get("urgency") not in (None, *URGENCIES):
        return hms_answer(400, BAD_FIELD, "Illegal field: message.android.urgency")
    ttl = android.get("ttl")
    if ttl is not None and not (isinstance(ttl, str) and ttl.rstrip("sS").isdigit()):
        return hms_answer(400, BAD_FIELD, "Illegal field: message.android.ttl")
    collapse_key = android.get("collapse_key")
    if collapse_key is not None and not (isinstance(collapse_key, int) and -1 <= collapse_key <= 100):
        return hms_answer(400, BAD_FIELD, "Illegal field: message.android.collapse_key")
    return None


def _too_large(body: bytes, message: dict) -> bool:
    """Whether the message without its tokens is over the limit (only a body over it can hold one: no dump per request)."""
    return len(body) > MAX_MESSAGE_BYTES and len(orjson.dumps({k: v for k, v in message.items() if k != "token"})) > MAX_MESSAGE_BYTES


def _behaviour_refusal(tokens: list[str], admitted: list[Admission]) -> Response | None:
    """The answer the tokens' behaviours choose for these attempts, if any."""
    for token, (attempt, _retry_after) in zip(tokens, admitted, strict=True):
        for prefix, status, code, text in FAILURE_PREFIXES:
            failures = number_after(token, prefix)
            if failures is not None and attempt <= failures:
                return hms_answer(status, code, text)
    if all(token.startswith("dead") for token in tokens):
        return hms_answer(400, *ALL_TOKENS_INVALID)
    return None


class HmsSimulator:
    """The HMS Push Kit server API of one serving process.

    Parameters:
      recorder: where it counts and what it knows of faults (default: its own, in this process).
    """

    def __init__(self, *, recorder: Recorder | None = None):
        self.recorder = recorder or Recorder()
        self.connections = Connections()
        self.apps: dict[str, tuple[str, str]] = {}  # client id -> (client secret, project id)
        self.access_tokens: dict[str, tuple[str, float]] = {}  # token -> (project id, expiry)
        self.tokens_issued = 0

    # --- control -------------------------------------------------------------------------------

    def add_app(self, request: Request) -> Response:
        data = request.json() if request.body else None
        fields = ("client_id", "client_secret", "project_id")
        if not isinstance(data, dict):
            return Response.json(400, {"error": "body: a JSON object {client_id, client_secret, project_id} is expected"})
        for name in fields:
            if not isinstance(data.get(name), str) or not data[name]:
                return Response.json(400, {"error": f"{name}: a non-empty string is expected", "field": name})
        self.apps[data["client_id"]] = (data["client_secret"], data["project_id"])
        return Response.json(200, {"ok": True})

    def add_access_token(self, request: Request) -> Response:
        data = request.json()
        self.access_tokens[data["token"]] = (data["project_id"], data["expires_at"])
        return Response.json(200, {"ok": True})

    def node_control(self) -> NodeControl:
        routes = {("POST", "/apps"): self.add_app, ("POST", ACCESS_TOKEN_PATH): self.add_access_token}
        return NodeControl(self.recorder, self.connections, routes=routes, own_stats=lambda: {"access_tokens_issued": self.tokens_issued})

    # --- provider ------------------------------------------------------------------------------

    def handle(self, request: Request) -> Response | Awaitable[Response]:
        path = request.path.split("?", 1)[0]
        if path == "/oauth2/v3/token" and request.method == "POST":
            return self._token(request)
        if path.startswith(SEND_PREFIX) and path.endswith(SEND_SUFFIX) and request.method == "POST":
            return self._send(request, path[len(SEND_PREFIX):-len(SEND_SUFFIX)])
        return Response.json(404, {"error": f"Not found: {request.method} {path}"})

    async def _token(self, request: Request) -> Response:
        form = urllib.parse.parse_qs(request.body.decode("utf-8", "replace"))
        grant, client_id, secret = ((form.get(name) or [""])[0] for name in ("grant_type", "client_id", "client_secret"))
        if grant != "client_credentials":
            return Response.json(400, {"error": 1102, "sub_error": 20001, "error_description": "unsupported grant_type"})
        app = self.apps.get(client_id)
        if app is None or not secrets.compare_digest(app[0], secret):
            return Response.json(400, {"error": 1101, "sub_error": 20186, "error_description": "invalid client_secret"})
        token = "hms-sim." + secrets.token_urlsafe(32)
        expires_at = time.time() + ACCESS_TOKEN_SECONDS
        self.access_tokens[token] = (app[1], expires_at)
        self.tokens_issued += 1
        # Its next request may reach another serving process: they all know it before the client does.
        await self.recorder.ledger.replicate({"method": "POST", "path": ACCESS_TOKEN_PATH,
                                              "body": orjson.dumps({"token": token, "project_id": app[1], "expires_at": expires_at}).decode()})
        return Response.json(200, {"access_token": token, "expires_in": ACCESS_TOKEN_SECONDS, "token_type": "Bearer"})

    def _send(self, request: Request, project_id: str) -> Response | Awaitable[Response]:
        try:
            body = orjson.loads(request.body)
        except orjson.JSONDecodeError:
            body = None
        message = body.get("message") if isinstance(body, dict) else None
        tokens = message.get("token") if isinstance(message, dict) else None
        if not isinstance(tokens, list) or not all(isinstance(token, str) for token in tokens):
            tokens = []
        behaviours = any(token.startswith(BEHAVIOUR_PREFIXES) for token in tokens)
        admit = self.recorder.admit
        admissions = [admit(token, numbered=behaviours and self._numbered(token), quota_key=project_id if i == 0 else None)
                      for i, token in enumerate(tokens)]
        if all(isinstance(admitted, tuple) for admitted in admissions):
            return self._respond(request, project_id, body, tokens, admissions, behaviours)
        return self._respond_later(request, project_id, body, tokens, admissions, behaviours)

    @staticmethod
    def _numbered(token: str) -> bool:
        return any(number_after(token, prefix) is not None for prefix, *_rest in FAILURE_PREFIXES)

    async def _respond_later(self, request: Request, project_id: str, body, tokens: list[str], admissions: list,
                             behaviours: bool) -> Response:
        admitted = [a if isinstance(a, tuple) else await a for a in admissions]
        answer = self._respond(request, project_id, body, tokens, admitted, behaviours)
        return answer if isinstance(answer, Response) else await answer

    def _respond(self, request: Request, project_id: str, body, tokens: list[str], admitted: list[Admission],
                 behaviours: bool) -> Response | Awaitable[Response]:
        """The answer; ``behaviours``: whether a token starts with a behaviour's prefix (else none is looked for)."""
        response = self._refusal(request, project_id, body, tokens, admitted, behaviours)
        if response is None:
            delay = max((number_after(token, "delay") or 0 for token in tokens), default=0) if behaviours else 0
            if delay:
                return self._deliver_after(delay, request, body, tokens)
            response = self._delivered(body, tokens, behaviours)
        self._keep(request, tokens, response.status)
        return response

    async def _deliver_after(self, delay: float, request: Request, body: dict, tokens: list[str]) -> Response:
        await asyncio.sleep(delay)
        response = self._delivered(body, tokens, True)
        self._keep(request, tokens, response.status)
        return response

    def _keep(self, request: Request, tokens: list[str], status: int) -> None:
        keep = self.recorder.keep
        for token in tokens:
            keep(token, request, status)

    def _refusal(self, request: Request, project_id: str, body, tokens: list[str], admitted: list[Admission],
                 behaviours: bool) -> Response | None:
        if self.recorder.unavailable():
            return hms_answer(503, "81000001", "Service unavailable")
        authorization = request.headers.get("authorization", "")
        granted = self.access_tokens.get(authorization[7:]) if authorization.lower().startswith("bearer ") else None
        if granted is None or granted[0] != project_id:
            return hms_answer(401, *AUTH_ERROR)
        if granted[1] < time.time():
            return hms_answer(401, *TOKEN_EXPIRED)
        if not isinstance(body, dict) or "message" not in body:
            return hms_answer(400, *BAD_STRUCTURE)
        refusal = _structure_refusal(body["message"])
        if refusal is not None:
            return refusal
        if _too_large(request.body, body["message"]):
            return hms_answer(400, *TOO_LARGE)
        if admitted and admitted[0][1] is not None:
            return hms_answer(503, "81000001", "flow control, retry later")
        return _behaviour_refusal(tokens, admitted) if behaviours else None

    def _delivered(self, body: dict, tokens: list[str], behaviours: bool) -> Response:
        message = body["message"]
        illegal = [token for token in tokens if token.startswith("dead")] if behaviours else []
        valid = [token for token in tokens if not token.startswith("dead")] if behaviours else tokens
        deliver = None
        if not body.get("validate_only"):
            tag = notification_tag(message)
            deliverers = [self.recorder.deliverer(token, tag) for token in valid]
            if len(deliverers) == 1:
                deliver = deliverers[0]
            else:
                def deliver() -> None:
                    for delivered in deliverers:
                        delivered()

        if illegal:
            summary = orjson.dumps({"success": len(valid), "failure": len(illegal), "illegal_tokens": illegal}).decode()
            return hms_answer(200, PARTIAL, summary, on_written=deliver)
        return hms_success(deliver)


def serving(recorder: Recorder) -> tuple:
    """The provider handler and node control of one serving process."""
    simulator = HmsSimulator(recorder=recorder)
    return simulator.handle, simulator.node_control()


def main() -> None:
    args = parse_args("hms", 8447, 8448)
    run("hms", args, serving, max_concurrent_streams=MAX_CONCURRENT_STREAMS)


if __name__ == "__main__":
    main()
