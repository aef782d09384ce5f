"""Proving an uploaded FCM service account: one OAuth2 access token fetched from its ``token_uri``.

The reference (WalletConnect/push-server) refuses FCM v1 credentials it cannot
get a token with (its test ``tenant_update_fcm_v1_invalidated``), so a tenant
learns at upload, not at its first notification, that its key was revoked or
belongs to no project. The token is fetched as delivery fetches it
(workers/delivery/fcm.py ``FcmAuth``: google-auth's JWT-bearer grant,
trusting ``provider_ca_file``). The ``token_uri`` comes from the uploader:
:func:`prove_service_account` is the one place that request leaves the API,
and it goes through the outbound check (shared/outbound.py: public addresses or
an allowed host:port, the checked address connected to, no redirect).
"""
from __future__ import annotations

import google.auth.exceptions
import google.auth.transport.requests
from google.oauth2 import service_account

from shared.outbound import OutboundPolicy, OutboundRefused, OutboundSession
from shared.settings import Settings

#: The scope delivery asks for (FCM HTTP v1).
SCOPES = ("https://www.googleapis.com/auth/firebase.messaging",)
#: Seconds the token endpoint may take to answer.
TOKEN_TIMEOUT_SECONDS = 10
#: Longest part of the token endpoint's refusal quoted back to the uploader.
MAX_REASON_LENGTH = 300


class ServiceAccountRefused(Exception):
    """No access token could be had with the service account; the message says why."""


class _TokenRequest(google.auth.transport.requests.Request):
    """google-auth's requests transport over an outbound session, trusting ``ca_file`` on each call."""

    def __init__(self, ca_file: str | None, outbound: OutboundPolicy):
        super().__init__(OutboundSession(outbound))
        self.ca_file = ca_file

    def __call__(self, url, method="GET", body=None, headers=None, timeout=None, **kwargs):
        if self.ca_file:
            kwargs.setdefault("verify", self.ca_file)
        return super().__call__(url, method=method, body=body, headers=headers, timeout=timeout or TOKEN_TIMEOUT_SECONDS, **kwargs)


def prove_service_account(info: dict, settings: Settings, *, outbound: OutboundPolicy) -> None:
    """Fetch an access token with the service account ``info``; raise :class:`ServiceAccountRefused` when none comes."""
    try:
        credentials = service_account.Credentials.from_service_account_info(info, scopes=list(SCOPES))
        credentials.refresh(_TokenRequest(settings.provider_ca_file or None, outbound))
    except OutboundRefused as refused:
        raise ServiceAccountRefused(f"token_uri not allowed: {refused}") from None
    except (ValueError, google.auth.exceptions.GoogleAuthError) as error:
        reason = str(error) or type(error).__name__
        raise ServiceAccountRefused(reason[:MAX_REASON_LENGTH]) from None
