"""``make run``: the whole server in the foreground on the default ports; Ctrl-C stops it.

Data lives under ``var/`` and survives a restart. An app ``demo`` with
credentials for the three simulators (APNs, FCM, HMS) is created if missing, so the README's curl
examples work as written.
"""
from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

import requests

from devstack.credentials import (
    AppCredentials,
    HmsCredentials,
    configure_app,
    configure_hms,
    make_credentials,
    make_hms_credentials,
    register_with_hms_simulator,
    register_with_simulators,
)
from devstack.stack import ROOT, Stack
from shared.sealed_credentials import new_key_entry

DEMO_APP = "demo"


def demo_credentials(stack: Stack) -> AppCredentials:
    """The demo app's keys, made once and kept in var/demo.json."""
    path = stack.var_dir / "demo.json"
    if path.exists():
        return AppCredentials.from_json(json.loads(path.read_text()))
    credentials = make_credentials(DEMO_APP, fcm_origin=f"https://127.0.0.1:{stack.ports.fcm}")
    path.write_text(json.dumps(credentials.to_json()))
    return credentials


def demo_hms_credentials(stack: Stack) -> HmsCredentials:
    """The demo app's HMS client, made once and kept in var/demo-hms.json."""
    path = stack.var_dir / "demo-hms.json"
    if path.exists():
        return HmsCredentials.from_json(json.loads(path.read_text()))
    credentials = make_hms_credentials(DEMO_APP)
    path.write_text(json.dumps(credentials.to_json()))
    return credentials


def credential_keys(var_dir: Path) -> str:
    """The key sealing the demo's provider credentials, made once and kept in var/credential-keys (the data outlives runs)."""
    path = var_dir / "credential-keys"
    if not path.exists():
        var_dir.mkdir(parents=True, exist_ok=True)
        path.write_text(new_key_entry())
        path.chmod(0o600)
    return path.read_text().strip()


def main() -> int:
    # The demo app also serves the WalletConnect routes: pushes to wallets (v1 bridge) and the push
    # server's routes without a tenant. On nx-27017 the bridge's TTL indexes slow every read (README).
    # URLs given to the server (bridge webhooks, token_uri) reach public addresses and the FCM simulator (devstack).
    demo_env = {
        "PUSH_WC_BRIDGE_PUSH_APP_ID": DEMO_APP,
        "PUSH_WC_PUSH_DEFAULT_APP": DEMO_APP,
        "PUSH_WC_BRIDGE_TTL_INDEXES": "0",
    }
    var_dir = Path(ROOT / "var")
    demo_env["PUSH_CREDENTIAL_KEYS"] = os.environ.get("PUSH_CREDENTIAL_KEYS") or credential_keys(var_dir)
    stack = Stack(var_dir=var_dir, log_to_files=False, env=demo_env)
    stopping = False

    def stop(*_):
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    try:
        stack.start()
        credentials = demo_credentials(stack)
        register_with_simulators(
            credentials,
            apns_control=f"http://127.0.0.1:{stack.ports.apns_control}",
            fcm_control=f"http://127.0.0.1:{stack.ports.fcm_control}",
        )
        hms = demo_hms_credentials(stack)
        register_with_hms_simulator(hms, hms_control=f"http://127.0.0.1:{stack.ports.hms_control}")
        detail = requests.get(f"{stack.api_url}/admin/app/detail", params={"appId": DEMO_APP}, timeout=10)
        if detail.status_code != 200:
            configure_app(stack.api_url, DEMO_APP, credentials)
        if detail.status_code != 200 or not detail.json()["responseObject"]["application"].get("hms"):
            configure_hms(stack.api_url, DEMO_APP, hms)
        print(
            f"\npush server ready: API {stack.api_url}, APNs simulator control http://127.0.0.1:{stack.ports.apns_control}, "
            f"FCM simulator control http://127.0.0.1:{stack.ports.fcm_control}, "
            f"HMS simulator control http://127.0.0.1:{stack.ports.hms_control}. Ctrl-C stops.\n",
            flush=True,
        )
        while not stopping:
            for name, process in stack.processes.items():
                if process.poll() is not None:
                    print(f"{name} exited with {process.returncode}; stopping", file=sys.stderr)
                    return 1
            time.sleep(0.5)
        return 0
    finally:
        stack.stop_all()


if __name__ == "__main__":
    sys.exit(main())
