"""One real stack for the fuzz run: its own var dir, ports and queue prefix; its queues are deleted at the end.

Auth is off so that the fuzzer reaches the handlers (tests/integration/test_auth_limits.py
tries to get past auth); outbound requests (bridge webhooks, token_uri) reach only the
allow-listed FCM simulator, so nothing the fuzzer makes up is sent anywhere, nor even resolved.
"""
from __future__ import annotations

import pytest

from devstack.credentials import configure_app, make_credentials, register_with_simulators
from shared.sealed_credentials import new_key_entry
from tests.stacks import running_stack

#: The app the document's examples name (``demo``, as in `make run`): with working credentials, the
#: fuzzer's sends that pass validation go all the way to the simulators.
FUZZ_APP = "demo"

#: Tenant management (WalletConnect push) needs an admin token; the fuzzer sends it on every request.
FUZZ_ADMIN_TOKEN = "fuzz-admin-token"

FUZZ_SETTINGS = {
    # Provider credentials sealed, as in production (shared/sealed_credentials.py).
    "PUSH_CREDENTIAL_KEYS": new_key_entry(),
    "PUSH_WC_PUSH_ADMIN_TOKEN": FUZZ_ADMIN_TOKEN,
    "PUSH_AUTH_ENABLED": "false",
    "PUSH_OUTBOUND_ALLOWED_ONLY": "true",
    "PUSH_API_SYNC_WAIT_SECONDS": "5",
    "PUSH_WC_BRIDGE_PUSH_APP_ID": FUZZ_APP,
    "PUSH_WC_PUSH_DEFAULT_APP": FUZZ_APP,
}


@pytest.fixture(scope="session")
def stack(tmp_path_factory):
    with running_stack(tmp_path_factory.mktemp("fuzz-var"), "fuzz", FUZZ_SETTINGS) as stack:
        credentials = make_credentials(FUZZ_APP, fcm_origin=f"https://127.0.0.1:{stack.ports.fcm}")
        register_with_simulators(credentials, apns_control=f"http://127.0.0.1:{stack.ports.apns_control}",
                                 fcm_control=f"http://127.0.0.1:{stack.ports.fcm_control}")
        configure_app(stack.api_url, FUZZ_APP, credentials)
        yield stack
