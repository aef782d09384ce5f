"""FCM HTTP v1 simulator: ``POST /v1/projects/<project>/messages:send`` and the OAuth token endpoint.

``POST /token`` (HTTP/1.1 or HTTP/2) takes a service account's signed JWT
assertion (RFC 7523, as google-auth sends it) and issues an access token for
that account's project. Sends need ``Authorization: Bearer <access token>``.
Errors are FCM v1's: ``{"error": {code, message, status, details: [{"@type": …FcmError, errorCode}]}}``.
Behaviour by registration token prefix:

  dead…          404 NOT_FOUND / UNREGISTERED
  invalid…       400 INVALID_ARGUMENT on message.token
  unavailableN-  503 UNAVAILABLE for the first N attempts, then 200
  internalN-     500 INTERNAL for the first N attempts
  quotaN-        429 RESOURCE_EXHAUSTED / QUOTA_EXCEEDED with Retry-After: 1, first N attempts
  delayN-        200 after N seconds

With a quota set (``--quota-per-second`` / ``--quota-per-minute``, or the control
port's ``/settings``), a project's requests above it are answered as FCM
answers an exhausted quota: 429 RESOURCE_EXHAUSTED with an FcmError detail
``QUOTA_EXCEEDED`` and ``Retry-After`` (the whole seconds until the project may
send again), for all the simulator's processes together.

An access token issued by one serving process is known to all of them before
its answer goes out. Control port: see simulators/control.py, plus
``POST /service-accounts`` {client_email, project_id, public_key_pem}.
"""
from __future__ import annotations

import asyncio
import itertools
import secrets
import time
import urllib.parse
from collections.abc import Awaitable

import jwt
import orjson
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from simulators.behaviour import number_after
from simulators.cluster import parse_args, run
from simulators.control import NodeControl
from simulators.ledger import Admission
from simulators.recorder import Recorder
from simulators.server import Connections, Request, Response

MAX_CONCURRENT_STREAMS = 100
#: Internal control route: an access token another serving process issued.
ACCESS_TOKEN_PATH = "/_access-tokens"
MAX_MESSAGE_BYTES = 4096
ACCESS_TOKEN_SECONDS = 3600
FCM_ERROR = "type.googleapis.com/google.firebase.fcm.v1.FcmError"
BAD_REQUEST = "type.googleapis.com/google.rpc.BadRequest"
FAILURE_PREFIXES = (
    ("unavailable", 503, "UNAVAILABLE", "UNAVAILABLE", "The service is currently unavailable."),
    ("internal", 500, "INTERNAL", "INTERNAL", "Internal error encountered."),
    ("quota", 429, "RESOURCE_EXHAUSTED", "QUOTA_EXCEEDED", "Quota exceeded for quota metric 'Send requests'."),
)
#: Where a token's behaviour starts (a plain token starts with none of them: no behaviour is read for it).
BEHAVIOUR_PREFIXES = ("dead", "invalid", "delay", *(prefix for prefix, *_rest in FAILURE_PREFIXES))
#: The message of FCM's 429 when a project's quota is spent.
QUOTA_MESSAGE = FAILURE_PREFIXES[2][4]


def fcm_error(status: int, grpc_status: str, message: str, error_code: str | None = None, extra_details=(), headers=None) -> Response:
    details = [{"@type": FCM_ERROR, "errorCode": error_code}] if error_code else []
    details += list(extra_details)
    return Response.json(status, {"error": {"code": status, "message": message, "status": grpc_status, "details": details}}, headers)


class FcmSimulator:
    """The FCM HTTP v1 API and OAuth token endpoint of one serving process.

    Parameters:
      recorder: where it counts and what it knows of faults (default: its own, in this process).
    """

    def __init__(self, *, recorder: Recorder | None = None):
        self.recorder = recorder or Recorder()
        self.connections = Connections()
        self.accounts: dict[str, tuple[str, object]] = {}  # client email -> (project id, public key)
        self.access_tokens: dict[str, tuple[str, float]] = {}  # token -> (project id, expiry)
        self.tokens_issued = 0
        # Message names as FCM's ("0:<number>%<hex>"): unique per process without a random draw per answer.
        self.message_ids = itertools.count(1)
        self.message_ids_suffix = secrets.token_hex(8)

    def add_account(self, request: Request) -> Response:
        data = request.json() or {}
        try:
            self.accounts[data["client_email"]] = (data["project_id"], load_pem_public_key(data["public_key_pem"].encode()))
        except (KeyError, ValueError, TypeError) as error:
            return Response.json(400, {"error": f"bad service account: {error}"})
        return Response.json(200, {"ok": True})

    def add_access_token(self, request: Request) -> Response:
        data = request.json()
        self.access_tokens[data["token"]] = (data["project_id"], data["expires_at"])
        return Response.json(200, {"ok": True})

    def node_control(self) -> NodeControl:
        routes = {("POST", "/service-accounts"): self.add_account, ("POST", ACCESS_TOKEN_PATH): self.add_access_token}
        return NodeControl(self.recorder, self.connections, routes=routes, own_stats=lambda: {"access_tokens_issued": self.tokens_issued})

    def handle(self, request: Request) -> Response | Awaitable[Response]:
        path = request.path.split("?", 1)[0]
        if path == "/token" and request.method == "POST":
            return self._token(request)
        if path.startswith("/v1/projects/") and path.endswith("/messages:send") and request.method == "POST":
            return self._send(request, path[len("/v1/projects/"):-len("/messages:send")])
        return fcm_error(404, "NOT_FOUND", f"Not found: {request.method} {path}")

    async def _token(self, request: Request) -> Response:
        form = urllib.parse.parse_qs(request.body.decode("utf-8", "replace"))
        assertion = (form.get("assertion") or [""])[0]
        if (form.get("grant_type") or [""])[0] != "urn:ietf:params:oauth:grant-type:jwt-bearer" or not assertion:
            return Response.json(400, {"error": "unsupported_grant_type", "error_description": "Invalid grant_type or no assertion."})
        try:
            issuer = jwt.decode(assertion, options={"verify_signature": False}).get("iss", "")
            project_id, public_key = self.accounts[issuer]
            jwt.decode(assertion, public_key, algorithms=["RS256"], options={"verify_aud": False})
        except (KeyError, jwt.PyJWTError):
            return Response.json(400, {"error": "invalid_grant", "error_description": "Invalid JWT Signature."})
        token = "ya29.sim-" + secrets.token_urlsafe(32)
        expires_at = time.time() + ACCESS_TOKEN_SECONDS
        self.access_tokens[token] = (project_id, expires_at)
        self.tokens_issued += 1
        # Its next request may reach another serving process: they all know it before the client does.
        await self.recorder.ledger.replicate({"method": "POST", "path": ACCESS_TOKEN_PATH,
                                              "body": orjson.dumps({"token": token, "project_id": project_id, "expires_at": expires_at}).decode()})
        return Response.json(200, {"access_token": token, "expires_in": ACCESS_TOKEN_SECONDS, "token_type": "Bearer"})

    def _send(self, request: Request, project_id: str) -> Response | Awaitable[Response]:
        try:
            message = orjson.loads(request.body)["message"]
            token = message["token"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return fcm_error(400, "INVALID_ARGUMENT", "Request contains an invalid argument.", "INVALID_ARGUMENT")
        if not isinstance(token, str):
            return fcm_error(400, "INVALID_ARGUMENT", "Invalid value at 'message.token'", "INVALID_ARGUMENT",
                             [{"@type": BAD_REQUEST, "fieldViolations": [{"field": "message.token"}]}])
        behaviour = token.startswith(BEHAVIOUR_PREFIXES)
        numbered = behaviour and any(number_after(token, prefix) is not None for prefix, *_rest in FAILURE_PREFIXES)
        admitted = self.recorder.admit(token, numbered=numbered, quota_key=project_id)
        if isinstance(admitted, tuple):
            return self._respond(request, project_id, message, token, admitted, behaviour)
        return self._respond_later(request, project_id, message, token, admitted, behaviour)

    async def _respond_later(self, request: Request, project_id: str, message: dict, token: str, admitted: Awaitable[Admission],
                             behaviour: bool) -> Response:
        answer = self._respond(request, project_id, message, token, await admitted, behaviour)
        return answer if isinstance(answer, Response) else await answer

    def _respond(self, request: Request, project_id: str, message: dict, token: str, admitted: Admission,
                 behaviour: bool) -> Response | Awaitable[Response]:
        """The answer; ``behaviour``: whether the token starts with a behaviour's prefix (else none is looked for)."""
        response = self._refusal(request, project_id, message, token, admitted, behaviour)
        if response is None:
            delay = behaviour and number_after(token, "delay")
            if delay:
                return self._deliver_after(delay, request, project_id, message, token)
            response = self._delivered(project_id, message, token)
        self.recorder.keep(token, request, response.status)
        return response

    async def _deliver_after(self, delay: float, request: Request, project_id: str, message: dict, token: str) -> Response:
        await asyncio.sleep(delay)
        response = self._delivered(project_id, message, token)
        self.recorder.keep(token, request, response.status)
        return response

    def _delivered(self, project_id: str, message: dict, token: str) -> Response:
        return Response.json(200, {"name": f"projects/{project_id}/messages/0:{next(self.message_ids)}%{self.message_ids_suffix}"},
                             on_written=self.recorder.deliverer(token, notification_tag(message)))

    def _refusal(self, request: Request, project_id: str, message: dict, token: str, admitted: Admission,
                 behaviour: bool) -> Response | None:
        attempt, retry_after = admitted
        if self.recorder.unavailable():
            return fcm_error(503, "UNAVAILABLE", "The service is currently unavailable.", "UNAVAILABLE")
        authorization = request.headers.get("authorization", "")
        granted = self.access_tokens.get(authorization[7:]) if authorization.lower().startswith("bearer ") else None
        if granted is None or granted[1] < time.time():
            return fcm_error(401, "UNAUTHENTICATED", "Request had invalid authentication credentials.", "THIRD_PARTY_AUTH_ERROR")
        if granted[0] != project_id:
            return fcm_error(403, "PERMISSION_DENIED", "SenderId mismatch", "SENDER_ID_MISMATCH")
        # The body holds the message: only a body over the limit can hold a message over it (saves a dump per request).
        if len(request.body) > MAX_MESSAGE_BYTES and len(orjson.dumps(message)) > MAX_MESSAGE_BYTES:
            return fcm_error(400, "INVALID_ARGUMENT", "Message is too big", "INVALID_ARGUMENT")
        android = message.get("android") or {}
        if android.get("priority") not in (None, "high", "normal", "HIGH", "NORMAL"):
            return fcm_error(400, "INVALID_ARGUMENT", "Invalid value at 'message.android.priority'", "INVALID_ARGUMENT",
                             [{"@type": BAD_REQUEST, "fieldViolations": [{"field": "message.android.priority"}]}])
        ttl = android.get("ttl")
        if ttl is not None and not (isinstance(ttl, str) and ttl.endswith("s")):
            return fcm_error(400, "INVALID_ARGUMENT", "Invalid value at 'message.android.ttl'", "INVALID_ARGUMENT",
                             [{"@type": BAD_REQUEST, "fieldViolations": [{"field": "message.android.ttl"}]}])
        if retry_after is not None:
            return fcm_error(429, "RESOURCE_EXHAUSTED", QUOTA_MESSAGE, "QUOTA_EXCEEDED", headers=[("retry-after", str(retry_after))])
        return _behaviour_refusal(token, attempt) if behaviour else None


def _behaviour_refusal(token: str, attempt: int) -> Response | None:
    """The answer a behaviour token chooses for this attempt, if any."""
    if token.startswith("dead"):
        return fcm_error(404, "NOT_FOUND", "Requested entity was not found.", "UNREGISTERED")
    if token.startswith("invalid"):
        return fcm_error(400, "INVALID_ARGUMENT", "The registration token is not a valid FCM registration token", "INVALID_ARGUMENT",
                         [{"@type": BAD_REQUEST, "fieldViolations": [{"field": "message.token",
                                                                      "description": "The registration token is not a valid FCM registration token"}]}])
    for prefix, status, grpc_status, code, text in FAILURE_PREFIXES:
        failures = number_after(token, prefix)
        if failures is not None and attempt <= failures:
            return fcm_error(status, grpc_status, text, code, headers=[("retry-after", "1")] if status == 429 else None)
    return None


def notification_tag(message: dict) -> str | None:
    """The tag a displayed Android notification replaces others of the same tag by (data-only: none)."""
    android = message.get("android")
    notification = android.get("notification") if isinstance(android, dict) else None
    tag = notification.get("tag") if isinstance(notification, dict) else None
    return tag if isinstance(tag, str) else None


def serving(recorder: Recorder) -> tuple:
    """The provider handler and node control of one serving process."""
    simulator = FcmSimulator(recorder=recorder)
    return simulator.handle, simulator.node_control()


def main() -> None:
    args = parse_args("fcm", 8444, 8446)
    run("fcm", args, serving, max_concurrent_streams=MAX_CONCURRENT_STREAMS)


if __name__ == "__main__":
    main()
