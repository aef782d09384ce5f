"""APNs simulator: ``POST /3/device/<token>`` over HTTP/2 with token (ES256 JWT) or certificate auth.

Token auth: an ``authorization: bearer <JWT>`` header, checked against the keys
registered on the control port. Certificate auth: no ``authorization`` header on a
connection whose client presented a certificate the simulators' CA signed (one
from another CA fails the TLS handshake with an ``unknown ca`` alert, as Apple's
servers refuse certificates they did not issue); the request's ``apns-topic``
must be the certificate's topic (subject UID, else CN; ``.voip`` and
``.complication`` too), else ``400 TopicDisallowed``; without ``apns-topic`` the
certificate's topic is used. Neither → ``403 MissingProviderToken``.

Answers as Apple documents (status, ``{"reason": …}``, ``apns-id``), and by the
device token's prefix, so a test says what it expects by the tokens it uses:

  dead…   410 Unregistered (timestamp: its first 410)  bad0…  400 BadDeviceToken
  70c0…   400 DeviceTokenNotForTopic             f503N… 503 for the first N attempts, then 200
  f500N…  500 for the first N attempts (N: one digit)           f429N… 429 TooManyRequests for the first N attempts
  de1aN…  answer 200 after N seconds             anything else (64 hex): 200

With a quota set (``--quota-per-second`` / ``--quota-per-minute``, or the control
port's ``/settings``), requests of one ``apns-topic`` above it get
``429 TooManyRequests`` (Apple sends no ``Retry-After``; neither does this).

Control port: see simulators/control.py, plus ``POST /keys`` {key_id, team_id, public_key_pem}.
"""
from __future__ import annotations

import asyncio
import itertools
import re
import time
import uuid
from collections.abc import Awaitable

import jwt
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from simulators.behaviour import number_after
from simulators.cluster import parse_args, run
from simulators.control import NodeControl
from simulators.ledger import Admission
from simulators.recorder import Recorder
from simulators.server import Connections, Request, Response

MAX_CONCURRENT_STREAMS = 1000
MAX_PAYLOAD_BYTES = 4096
#: A provider token is refused as expired once older than this (Apple: one hour).
TOKEN_MAX_AGE_SECONDS = 3600
PUSH_TYPES = {"alert", "background", "location", "voip", "complication", "fileprovider", "mdm", "liveactivity", "pushtotalk", "widgets"}
TOKEN_FORMAT = re.compile(r"^[0-9a-fA-F]{64}$")
UUID_FORMAT = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
FAILURE_PREFIXES = (("f503", 503, "ServiceUnavailable"), ("f500", 500, "InternalServerError"), ("f429", 429, "TooManyRequests"))
#: Provider tokens whose verification is remembered (by the token's text) before the memory is cleared.
VERIFIED_TOKENS = 10_000
#: Topics a certificate for bundle id B covers: B, B.voip, B.complication (Apple's certificates list them).
CERTIFICATE_TOPIC_SUFFIXES = ("", ".voip", ".complication")
TOKEN, CERTIFICATE = "token", "certificate"
#: An ``apns-id`` made for a request without one: this process's random UUID with a counter in its last 12 digits.
_APNS_ID_PREFIX = str(uuid.uuid4())[:24]
_apns_ids = itertools.count(1)


def _new_apns_id() -> str:
    return f"{_APNS_ID_PREFIX}{next(_apns_ids) & 0xFFFFFFFFFFFF:012x}"


def certificate_topic(certificate: dict | None) -> str | None:
    """The bundle id a verified client certificate is for: its subject UID (where Apple puts it), else its CN."""
    if not certificate:
        return None
    attributes = dict(pair for rdn in certificate.get("subject", ()) for pair in rdn)
    return attributes.get("userId") or attributes.get("commonName")


def auth_seen(request: Request) -> dict:
    """How a request authenticated, for ``/received``: ``auth`` token, certificate (with its topic) or None."""
    if "authorization" in request.headers:
        return {"auth": TOKEN}
    if request.client_certificate is not None:
        return {"auth": CERTIFICATE, "certificate_topic": certificate_topic(request.client_certificate)}
    return {"auth": None}


class ApnsSimulator:
    """The APNs provider API of one serving process.

    Parameters:
      recorder: where it counts and what it knows of faults (default: its own, in this process).
    """

    def __init__(self, *, recorder: Recorder | None = None):
        self.recorder = recorder or Recorder()
        self.connections = Connections()
        self.keys: dict[str, tuple[str, object]] = {}  # key id -> (team id, public key)
        self.verified: dict[str, tuple[str, float] | str] = {}  # jwt -> (key id, iat) or refusal reason

    # --- control -------------------------------------------------------------------------------

    def add_key(self, request: Request) -> Response:
        data = request.json() or {}
        try:
            self.keys[data["key_id"]] = (data["team_id"], load_pem_public_key(data["public_key_pem"].encode()))
        except (KeyError, ValueError, TypeError) as error:
            return Response.json(400, {"error": f"bad key: {error}"})
        self.verified.clear()
        return Response.json(200, {"ok": True})

    def node_control(self) -> NodeControl:
        return NodeControl(self.recorder, self.connections, routes={("POST", "/keys"): self.add_key})

    # --- provider ------------------------------------------------------------------------------

    def _auth_refusal(self, authorization: str | None) -> str | None:
        if not authorization or not authorization.lower().startswith("bearer "):
            return "MissingProviderToken"
        token = authorization[7:].strip()
        known = self.verified.get(token)
        if known is None:
            known = self._verify(token)
            if len(self.verified) > VERIFIED_TOKENS:
                self.verified.clear()
            self.verified[token] = known
        if isinstance(known, str):
            return known
        _key_id, issued_at = known
        if time.time() - issued_at > TOKEN_MAX_AGE_SECONDS:
            return "ExpiredProviderToken"
        return None

    def _verify(self, token: str) -> tuple[str, float] | str:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            return "InvalidProviderToken"
        entry = self.keys.get(header.get("kid", ""))
        if entry is None or header.get("alg") != "ES256":
            return "InvalidProviderToken"
        team_id, public_key = entry
        try:
            claims = jwt.decode(token, public_key, algorithms=["ES256"], options={"verify_aud": False, "verify_iat": False})
        except jwt.PyJWTError:
            return "InvalidProviderToken"
        if claims.get("iss") != team_id or not isinstance(claims.get("iat"), int | float):
            return "InvalidProviderToken"
        return header["kid"], float(claims["iat"])

    def handle(self, request: Request) -> Response | Awaitable[Response]:
        apns_id = request.headers.get("apns-id") or _new_apns_id()
        if not request.path.startswith("/3/device/"):
            return self._refuse(404, "BadPath", apns_id)
        if request.method != "POST":
            return self._refuse(405, "MethodNotAllowed", apns_id)
        token = request.path[len("/3/device/"):]
        numbered = any(number_after(token, prefix, digits=1) is not None for prefix, _status, _reason in FAILURE_PREFIXES)
        admitted = self.recorder.admit(token, numbered=numbered, quota_key=request.headers.get("apns-topic") or "")
        if isinstance(admitted, tuple):
            return self._respond(request, token, apns_id, admitted)
        return self._respond_later(request, token, apns_id, admitted)

    async def _respond_later(self, request: Request, token: str, apns_id: str, admitted: Awaitable[Admission]) -> Response:
        answer = self._respond(request, token, apns_id, await admitted)
        return answer if isinstance(answer, Response) else await answer

    def _respond(self, request: Request, token: str, apns_id: str, admitted: Admission) -> Response | Awaitable[Response]:
        status, reason, delay = self._answer(request, token, admitted, apns_id)
        if delay:
            return self._respond_after(delay, request, token, apns_id, status, reason)
        return self._response(request, token, apns_id, status, reason)

    async def _respond_after(self, delay: float, request: Request, token: str, apns_id: str, status: int, reason: str | None) -> Response:
        await asyncio.sleep(delay)
        answer = self._response(request, token, apns_id, status, reason)
        return answer if isinstance(answer, Response) else await answer

    def _response(self, request: Request, token: str, apns_id: str, status: int, reason: str | None) -> Response | Awaitable[Response]:
        self.recorder.keep(token, request, status, **auth_seen(request))
        if status == 200:
            return Response(200, b"", [("apns-id", apns_id)],
                            on_written=self.recorder.deliverer(token, request.headers.get("apns-collapse-id")))
        if status == 410:
            # When the token stopped being valid: fixed at its first 410 (on any process), so an app that registers
            # it again later has a registration newer than the timestamp (which the provider must keep).
            since = self.recorder.invalid_since(token)
            if isinstance(since, int):
                return Response.json(410, {"reason": reason, "timestamp": since}, [("apns-id", apns_id)])
            return self._gone_later(reason, apns_id, since)
        return Response.json(status, {"reason": reason}, [("apns-id", apns_id)])

    async def _gone_later(self, reason: str | None, apns_id: str, since: Awaitable[int]) -> Response:
        return Response.json(410, {"reason": reason, "timestamp": await since}, [("apns-id", apns_id)])

    def _refuse(self, status: int, reason: str, apns_id: str) -> Response:
        return Response.json(status, {"reason": reason}, [("apns-id", apns_id)])

    def _answer(self, request: Request, token: str, admitted: Admission, apns_id: str) -> tuple[int, str | None, float]:
        attempt, retry_after = admitted
        if self.recorder.unavailable():
            return 503, "ServiceUnavailable", 0
        refusal = self._auth_answer(request) or _request_answer(request, token, apns_id)
        if refusal:
            return refusal
        if retry_after is not None:
            return 429, "TooManyRequests", 0
        return _token_answer(token, attempt)

    def _auth_answer(self, request: Request) -> tuple[int, str, float] | None:
        """The refusal of a request's credentials (certificate and its topic, or provider token), if any."""
        headers = request.headers
        authorization = headers.get("authorization")
        if authorization is None and request.client_certificate is not None:
            allowed = certificate_topic(request.client_certificate)
            topic = headers.get("apns-topic") or allowed
            if not allowed or topic not in {allowed + suffix for suffix in CERTIFICATE_TOPIC_SUFFIXES}:
                return 400, "TopicDisallowed", 0
            return None
        refusal = self._auth_refusal(authorization)
        if refusal:
            return 403, refusal, 0
        if not headers.get("apns-topic"):
            return 400, "MissingTopic", 0
        return None


def _request_answer(request: Request, token: str, apns_id: str) -> tuple[int, str, float] | None:
    """The refusal of a malformed request (headers, token, payload), if any."""
    headers = request.headers
    if not UUID_FORMAT.match(apns_id):
        return 400, "BadMessageId", 0
    if headers.get("apns-push-type") and headers["apns-push-type"] not in PUSH_TYPES:
        return 400, "InvalidPushType", 0
    if headers.get("apns-priority") not in (None, "1", "5", "10"):
        return 400, "BadPriority", 0
    if headers.get("apns-expiration") and not headers["apns-expiration"].isdigit():
        return 400, "BadExpirationDate", 0
    if not TOKEN_FORMAT.match(token):
        return 400, "BadDeviceToken", 0
    if len(request.body) > MAX_PAYLOAD_BYTES:
        return 413, "PayloadTooLarge", 0
    if not request.body:
        return 400, "PayloadEmpty", 0
    return None


def _token_answer(token: str, attempt: int) -> tuple[int, str | None, float]:
    """The answer a well-formed request gets from its token's prefix (dead, bad, failing n times, delayed)."""
    if token.startswith("dead"):
        return 410, "Unregistered", 0
    if token.startswith("bad0"):
        return 400, "BadDeviceToken", 0
    if token.startswith("70c0"):
        return 400, "DeviceTokenNotForTopic", 0
    for prefix, status, reason in FAILURE_PREFIXES:
        failures = number_after(token, prefix, digits=1)
        if failures is not None and attempt <= failures:
            return status, reason, 0
    delay = number_after(token, "de1a", digits=1)
    return 200, None, float(delay or 0)


def serving(recorder: Recorder) -> tuple:
    """The provider handler and node control of one serving process."""
    simulator = ApnsSimulator(recorder=recorder)
    return simulator.handle, simulator.node_control()


def main() -> None:
    args = parse_args("apns", 8443, 8445)
    run("apns", args, serving, max_concurrent_streams=MAX_CONCURRENT_STREAMS, client_certificates=True)


if __name__ == "__main__":
    main()
