"""Settings of the push server, read from environment variables with one prefix.

Every process (API, workers, simulators' clients, tests, benchmarks) builds one
:class:`Settings` with :func:`load` and passes it down; nothing reads the
environment at import time.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field, fields

#: Every environment variable of the project starts with this.
ENV_PREFIX = "PUSH_"


@dataclass(frozen=True)
class Settings:
    """What can be configured, with the defaults a local run uses.

    Each field is read from ``PUSH_<FIELD NAME IN UPPER CASE>``.
    """

    #: MongoDB connection string; the database name is ``mongo_db``.
    mongo_uri: str = "mongodb://127.0.0.1:27017"
    mongo_db: str = "push"
    #: RabbitMQ connection URL (AMQP 0-9-1); a cluster's nodes as several URLs separated by ``;`` (README "Clusters").
    amqp_url: str = "amqp://guest:guest@127.0.0.1:5672/%2F"
    #: Type of every queue the workers use (with its ``.DQ`` and ``.XQ``): ``classic`` or ``quorum`` (replicated, for a cluster).
    rabbitmq_queue_type: str = "classic"
    #: RabbitMQ management API, for queue depth (``/admin/queues``, ``/metrics``, ``python -m ops.queues``).
    rabbitmq_management_url: str = "http://guest:guest@127.0.0.1:15672"
    #: Port of a worker process group's Prometheus ``/metrics`` (Dramatiq's Prometheus middleware); 0: none.
    #: Each group on one host needs its own port.
    worker_metrics_port: int = 9191
    #: Log lines: ``text`` for humans, ``json`` (one object a line) for log collectors.
    log_format: str = "text"
    #: Prefix of every queue name, so several deployments (or test runs) share one broker.
    queue_prefix: str = ""

    #: Provider endpoints. The APNs ones are chosen per app and device by environment.
    apns_production_url: str = "https://api.push.apple.com"
    apns_development_url: str = "https://api.sandbox.push.apple.com"
    fcm_url: str = "https://fcm.googleapis.com"
    hms_url: str = "https://push-api.cloud.huawei.com"
    #: HMS's OAuth 2.0 token endpoint (requested through the outbound check: public, or an allowed host:port).
    hms_token_url: str = "https://oauth-login.cloud.huawei.com/oauth2/v3/token"
    #: Extra CA bundle trusted for provider and token endpoints (the simulators' CA).
    provider_ca_file: str = ""
    #: HTTP/2 connections per provider pool.
    provider_connections: int = 2
    #: Seconds one provider request may take before it counts as transient failure.
    provider_request_timeout: float = 10.0

    #: Deliveries per chunk message on a deliver queue.
    delivery_chunk_size: int = 500
    #: Campaign users expanded per batch of a live send (memory stays bounded by this).
    campaign_users_per_batch: int = 5000
    #: Most deliveries of one campaign open in the ledger (queued or being sent) before its expansion waits for them
    #: (workers/campaigns.py ``paced``): another app's bulk send then waits behind at most this many of it.
    campaign_deliveries_ahead: int = 20_000
    #: Most open deliveries of an app's other bulk sends (batches, ASYNCHRONOUS messages) before its next ones wait in
    #: MongoDB for room (shared/pacing.py); 0: no bound.
    app_bulk_deliveries_ahead: int = 20_000
    #: Seconds a worker owns the deliveries it claimed; after a crash they are retried once this passes.
    delivery_lease_seconds: float = 60.0
    #: Most provider requests in flight per provider per worker process (bounds what a SIGKILL leaves unrecorded).
    delivery_max_in_flight: int = 64
    #: Days delivery detail (ledger chunks) is kept; each message keeps its counts after that (shared/ledger.py).
    delivery_retention_days: float = 7.0
    #: Delivery gives up (dead-letter) after this many seconds when no validUntil is given.
    delivery_max_age_seconds: float = 86400.0
    #: Short in-process retries before a delivery goes back to the queue with a delay.
    delivery_in_process_tries: int = 3
    #: Longest backoff served in-process; longer ones are re-enqueued with a delay.
    delivery_max_in_process_wait: float = 2.0
    #: Longest backoff of a re-enqueued delivery (well under RabbitMQ's consumer_timeout).
    delivery_max_backoff: float = 300.0

    #: Seconds the API waits for a write to be applied before answering (read-your-writes).
    api_apply_wait_seconds: float = 10.0
    #: Seconds a SYNCHRONOUS send waits for every delivery's outcome.
    api_sync_wait_seconds: float = 30.0
    #: Largest accepted request body, bytes.
    api_max_body_bytes: int = 16 * 1024 * 1024
    #: Threads per API process that Flask runs in (each request once its body is in).
    api_threads: int = 8
    #: SYNCHRONOUS sends per API process that may wait for their outcome at once, each in a blocked thread of its own
    #: (added to ``api_threads``); one more answers at once with its counts so far, still pending.
    api_sync_waiters: int = 512
    #: Seconds a request body may take to arrive in full (read before the request takes a thread); later: 408.
    api_body_timeout_seconds: float = 30.0

    #: Seconds one live check of RabbitMQ and MongoDB answers the unauthenticated status routes again, per API process.
    health_check_cache_seconds: float = 2.0

    #: Auth (README "Security"): require API keys. Off for ``make run``'s demo and the test stack, on in docker-compose.
    auth_enabled: bool = False
    #: The admin key (``/admin/…``, tenant management, key rotation); compared by SHA-256 digest. Empty: no admin key.
    admin_key: str = field(default="", repr=False)
    #: Seconds an API process reuses an app key it looked up (a revoked key stops working within this).
    auth_cache_seconds: float = 2.0
    #: Largest body of most routes, bytes (the batch and campaign user routes take ``api_max_body_bytes``).
    api_max_small_body_bytes: int = 128 * 1024
    #: Largest body of a credential upload (APNs key, FCM service account) and an inbox message, bytes.
    api_max_medium_body_bytes: int = 512 * 1024
    #: Most messages one batch send may carry.
    max_batch_messages: int = 10_000
    #: Most user ids one campaign user add or delete may carry.
    max_campaign_users_per_request: int = 100_000
    #: Largest serialised provider payload accepted by a send (APNs, FCM and HMS all allow 4 KB;
    #: HMS counts its message without the tokens).
    max_apns_payload_bytes: int = 4096
    max_fcm_payload_bytes: int = 4096
    max_hms_payload_bytes: int = 4096
    #: Most deliveries waiting (open in the ledger) per app before its sends are refused with 429 (shared/queue_cap.py);
    #: an app's own cap (``POST /admin/app/limits``) wins. 0: no cap.
    max_queued_deliveries_per_app: int = 5_000_000
    #: Seconds an API process reuses its count of waiting deliveries per app.
    queued_cache_seconds: float = 2.0
    #: Registration rate limits (token bucket per API process): requests per second and burst,
    #: per client IP and per API key. 0: no limit.
    rate_limit_ip_per_second: float = 0.0
    rate_limit_ip_burst: int = 0
    rate_limit_key_per_second: float = 0.0
    rate_limit_key_burst: int = 0

    #: WalletConnect v1 bridge: a session lives this long after its last write, call data after its write.
    wc_bridge_session_ttl_seconds: float = 86400.0
    wc_bridge_call_ttl_seconds: float = 3600.0
    #: WalletConnect v1 bridge: largest request body, bytes (larger answers 413).
    wc_bridge_max_payload_bytes: int = 64 * 1024
    #: WalletConnect v1 bridge: the app whose APNs/FCM credentials push to wallets (push.type apns/fcm); empty: none.
    wc_bridge_push_app_id: str = ""
    #: WalletConnect v1 bridge: declare TTL indexes (MongoDB removes expired data). nx-27017 purges TTL
    #: collections by a full scan on every read, so stacks on nx-27017 turn this off (the purge job and
    #: the read-side expiry check still apply).
    wc_bridge_ttl_indexes: bool = True
    #: Seconds one webhook POST may take.
    wc_bridge_webhook_timeout_seconds: float = 10.0
    #: Seconds a polled session or call status read by one API process answers its pollers again
    #: (reads are batched per process; a write through that process is visible to it at once).
    wc_bridge_poll_fresh_seconds: float = 0.05

    #: WalletConnect push server API: bearer token of tenant management, besides ``admin_key`` (both empty: refused).
    wc_push_admin_token: str = field(default="", repr=False)
    #: Require a relay client JWT (``Authorization: Bearer``) on registration whose issuer is the ``client_id``.
    wc_push_validate_client_jwt: bool = False
    #: Require the relay's Ed25519 signature (``X-Ed25519-Signature``/``-Timestamp``) on sends.
    wc_push_validate_signatures: bool = False
    #: The relay's Ed25519 public key, hex (32 bytes), checked when signatures are required.
    wc_push_relay_public_key: str = ""
    #: Seconds a relay signature's ``X-Ed25519-Timestamp`` may be from this host's time (a captured send replays only within it).
    wc_push_signature_max_age_seconds: float = 300.0
    #: Let a stack with ``auth_enabled`` start with the client JWT or relay signature check off (an open relay).
    wc_push_unauthenticated_allowed: bool = False
    #: App (in the apps collection) whose credentials the routes without a tenant use; empty: tenant ``default``.
    wc_push_default_app: str = ""
    #: HS256 secret of the reference's tenant JWT on tenant management (its ``sub`` is the one tenant it manages); empty: none.
    wc_push_tenant_jwt_secret: str = field(default="", repr=False)

    #: Keys sealing provider credentials (shared/sealed_credentials.py): ``<key id>:<base64 of 32 bytes>``, comma-separated;
    #: the first seals, all open. Empty: credentials in clear (refused at start-up with auth on, unless allowed below).
    credential_keys: str = field(default="", repr=False)
    #: Let a stack with ``auth_enabled`` start without ``credential_keys`` (credentials in clear in RabbitMQ and MongoDB).
    credentials_unsealed_allowed: bool = False

    #: Outbound requests to URLs someone gave the server (webhooks, token_uri): ``host:port`` targets that may resolve to
    #: loopback or private addresses (every other target must resolve to a public one), comma-separated (shared/outbound.py).
    outbound_allowed_targets: str = ""
    #: Outbound requests reach only the targets of ``outbound_allowed_targets``.
    outbound_allowed_only: bool = False

    extra: dict = field(default_factory=dict)


def _convert(raw: str, kind: type):
    if kind is bool:
        return raw.strip().lower() in ("1", "true", "yes", "on")
    return kind(raw)


def load(environ: dict | None = None, **overrides) -> Settings:
    """Build settings from ``environ`` (default ``os.environ``), then ``overrides``."""
    environ = os.environ if environ is None else environ
    values = {}
    for f in fields(Settings):
        if f.name == "extra":
            continue
        raw = environ.get(ENV_PREFIX + f.name.upper())
        if raw is not None:
            kind = type(f.default)
            values[f.name] = _convert(raw, kind)
    values.update(overrides)
    return Settings(**values)
