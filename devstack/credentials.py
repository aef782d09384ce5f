"""Provider credentials for apps that deliver to the simulators, and their registration.

The APNs simulator verifies ES256 JWTs against the public keys it was told
about, and takes client certificates its CA signed (:func:`apns_certificate_p12`);
the FCM simulator issues OAuth tokens to the service accounts it knows; the
HMS simulator issues OAuth tokens to the app credentials it knows
(:func:`make_hms_credentials`, :func:`register_with_hms_simulator`).
"""
from __future__ import annotations

import base64
import json
import secrets
from dataclasses import dataclass
from pathlib import Path

import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs12

from simulators.tls import CLIENT_VALID_DAYS, issue_client_certificate

#: Seconds for a control-endpoint or API call made while setting up.
SETUP_TIMEOUT_SECONDS = 30


@dataclass(frozen=True)
class AppCredentials:
    """An APNs token key and an FCM service account for one app."""

    bundle: str
    key_id: str
    team_id: str
    apns_key_pem: str
    project_id: str
    service_account: dict

    @property
    def apns_public_pem(self) -> str:
        key = serialization.load_pem_private_key(self.apns_key_pem.encode(), password=None)
        return key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()

    @property
    def fcm_public_pem(self) -> str:
        key = serialization.load_pem_private_key(self.service_account["private_key"].encode(), password=None)
        return key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()

    def to_json(self) -> dict:
        return self.__dict__.copy()

    @classmethod
    def from_json(cls, data: dict) -> AppCredentials:
        return cls(**data)


def make_credentials(app_id: str, *, fcm_origin: str, key_id: str = "DEMOKEY001", team_id: str = "DEMOTEAM01") -> AppCredentials:
    apns_key = ec.generate_private_key(ec.SECP256R1())
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    project_id = f"{app_id}-project"
    pkcs8 = serialization.PrivateFormat.PKCS8
    return AppCredentials(
        bundle=f"com.example.{app_id}",
        key_id=key_id,
        team_id=team_id,
        apns_key_pem=apns_key.private_bytes(serialization.Encoding.PEM, pkcs8, serialization.NoEncryption()).decode(),
        project_id=project_id,
        service_account={
            "type": "service_account",
            "project_id": project_id,
            "private_key_id": "simulated",
            "private_key": rsa_key.private_bytes(serialization.Encoding.PEM, pkcs8, serialization.NoEncryption()).decode(),
            "client_email": f"push@{project_id}.iam.gserviceaccount.com",
            "client_id": "1",
            "token_uri": f"{fcm_origin}/token",
        },
    )


@dataclass(frozen=True)
class HmsCredentials:
    """An HMS (Huawei Push Kit) app's OAuth client and the project it sends for (PowerAuth's ``/admin/app/hms`` fields)."""

    client_id: str
    client_secret: str
    project_id: str

    def to_json(self) -> dict:
        return self.__dict__.copy()

    @classmethod
    def from_json(cls, data: dict) -> HmsCredentials:
        return cls(**data)


def make_hms_credentials(app_id: str) -> HmsCredentials:
    """New HMS credentials for ``app_id``: a numeric client id (as AppGallery Connect's app ids are) and a secret."""
    return HmsCredentials(client_id=str(100_000_000 + secrets.randbelow(900_000_000)), client_secret=secrets.token_hex(32),
                          project_id=f"{app_id}-hms-project")


def register_with_hms_simulator(credentials: HmsCredentials, *, hms_control: str) -> None:
    """Tell the HMS simulator these app credentials are genuine (its token endpoint then issues tokens for them)."""
    requests.post(f"{hms_control}/apps", json=credentials.to_json(), timeout=SETUP_TIMEOUT_SECONDS).raise_for_status()


def configure_hms(api_url: str, app_id: str, credentials: HmsCredentials) -> None:
    """Upload an app's HMS credentials through the PowerAuth admin API (the app exists)."""
    answer = requests.post(f"{api_url}/admin/app/hms", timeout=SETUP_TIMEOUT_SECONDS, json={"requestObject": {
        "appId": app_id, "projectId": credentials.project_id, "clientId": credentials.client_id,
        "clientSecret": credentials.client_secret}})
    if answer.status_code != 200:
        raise RuntimeError(f"/admin/app/hms answered {answer.status_code}: {answer.text}")


def register_with_simulators(credentials: AppCredentials, *, apns_control: str, fcm_control: str) -> None:
    """Tell the simulators these credentials are genuine."""
    requests.post(
        f"{apns_control}/keys",
        json={"key_id": credentials.key_id, "team_id": credentials.team_id, "public_key_pem": credentials.apns_public_pem},
        timeout=SETUP_TIMEOUT_SECONDS,
    ).raise_for_status()
    requests.post(
        f"{fcm_control}/service-accounts",
        json={
            "client_email": credentials.service_account["client_email"],
            "project_id": credentials.project_id,
            "public_key_pem": credentials.fcm_public_pem,
        },
        timeout=SETUP_TIMEOUT_SECONDS,
    ).raise_for_status()


def configure_app(api_url: str, app_id: str, credentials: AppCredentials, *, environment: str = "production") -> None:
    """Create the app through the PowerAuth admin API and upload both providers' credentials."""

    def post(path: str, request_object: dict) -> None:
        answer = requests.post(f"{api_url}{path}", json={"requestObject": request_object}, timeout=SETUP_TIMEOUT_SECONDS)
        if answer.status_code != 200:
            raise RuntimeError(f"{path} answered {answer.status_code}: {answer.text}")

    post("/admin/app/create", {"appId": app_id})
    post(
        "/admin/app/apns",
        {
            "appId": app_id,
            "bundle": credentials.bundle,
            "keyId": credentials.key_id,
            "teamId": credentials.team_id,
            "environment": environment,
            "privateKeyBase64": base64.b64encode(credentials.apns_key_pem.encode()).decode(),
        },
    )
    post(
        "/admin/app/fcm",
        {
            "appId": app_id,
            "projectId": credentials.project_id,
            "privateKeyBase64": base64.b64encode(json.dumps(credentials.service_account).encode()).decode(),
        },
    )


@dataclass(frozen=True)
class SimulatorControls:
    """Where a stack's simulators are told which credentials are genuine (their control endpoints)."""

    fcm_port: int
    apns: str
    fcm: str
    hms: str | None = None

    @classmethod
    def of(cls, ports) -> SimulatorControls:
        """The controls of a stack's ``Ports`` (devstack.stack)."""
        return cls(ports.fcm, f"http://127.0.0.1:{ports.apns_control}", f"http://127.0.0.1:{ports.fcm_control}",
                   f"http://127.0.0.1:{ports.hms_control}")


def provision_app(api_url: str, app_id: str, controls: SimulatorControls, *, hms: bool = True, key_id: str | None = None,
                  environment: str = "production") -> AppCredentials:
    """Create ``app_id`` with APNs and FCM credentials the simulators accept (and HMS ones when ``hms``)."""
    credentials = make_credentials(app_id, fcm_origin=f"https://127.0.0.1:{controls.fcm_port}",
                                   key_id=key_id or f"K{secrets.token_hex(4)}".upper())
    register_with_simulators(credentials, apns_control=controls.apns, fcm_control=controls.fcm)
    configure_app(api_url, app_id, credentials, environment=environment)
    if hms:
        hms_credentials = make_hms_credentials(app_id)
        register_with_hms_simulator(hms_credentials, hms_control=controls.hms)
        configure_hms(api_url, app_id, hms_credentials)
    return credentials


def apns_certificate_p12(topic: str, password: str | None, *, cert_dir: Path | None, valid_days: int = CLIENT_VALID_DAYS) -> bytes:
    """An APNs client certificate for ``topic`` (its subject UID) with its key, as a PKCS#12 (.p12) file.

    Signed by the simulators' CA in ``cert_dir`` (the stack's ``cert_dir``), so the APNs
    simulator accepts it; ``cert_dir`` None makes a self-signed one, which it refuses at TLS.
    ``password`` None leaves the file unencrypted; a negative ``valid_days``, expired.
    """
    certificate, key = issue_client_certificate(cert_dir, topic, valid_days=valid_days)
    encryption = serialization.BestAvailableEncryption(password.encode()) if password else serialization.NoEncryption()
    return pkcs12.serialize_key_and_certificates(topic.encode(), key, certificate, None, encryption)
