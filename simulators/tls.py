"""A CA and a server certificate for the simulators, made once per certificate directory.

Both simulators share the directory; a file lock makes the first one create
the files and the other reuse them, so clients trust one CA (``ca.pem``). The
CA's key (``ca-key.pem``, mode 0600) stays beside it: the APNs simulator takes
client certificates the CA signed (:func:`issue_client_certificate` makes
them, for tests and ``make run``), as Apple takes the ones it issued.
"""
from __future__ import annotations

import datetime
import fcntl
import ipaddress
import os
import ssl
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

#: Names the server certificate is valid for: local runs and docker-compose service names.
SERVER_NAMES = ("localhost", "apns-simulator", "fcm-simulator", "hms-simulator", "simulators")
SERVER_IPS = ("127.0.0.1", "::1")
VALID_DAYS = 3650
#: Validity of a client certificate (Apple's APNs certificates last a year).
CLIENT_VALID_DAYS = 365


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _pem_key(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def ensure_certificates(cert_dir: Path) -> tuple[Path, Path, Path]:
    """Answer (ca.pem, server.pem, server-key.pem) in ``cert_dir``, creating them (and ca-key.pem) if missing."""
    cert_dir.mkdir(parents=True, exist_ok=True)
    ca_file, cert_file, key_file = cert_dir / "ca.pem", cert_dir / "server.pem", cert_dir / "server-key.pem"
    with open(cert_dir / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not all(path.exists() for path in (ca_file, _ca_key_file(cert_dir), cert_file, key_file)):
            _create(cert_dir, ca_file, cert_file, key_file)
    return ca_file, cert_file, key_file


def _ca_key_file(cert_dir: Path) -> Path:
    return cert_dir / "ca-key.pem"


def _create(cert_dir: Path, ca_file: Path, cert_file: Path, key_file: Path) -> None:
    now = datetime.datetime.now(datetime.UTC)
    start, end = now - datetime.timedelta(days=1), now + datetime.timedelta(days=VALID_DAYS)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(_name("push simulators CA"))
        .issuer_name(_name("push simulators CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    alt_names = [x509.DNSName(n) for n in SERVER_NAMES] + [x509.IPAddress(ipaddress.ip_address(i)) for i in SERVER_IPS]
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("localhost"))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    for path, data in (
        (_ca_key_file(cert_dir), _pem_key(ca_key)),
        (key_file, _pem_key(key)),
        (cert_file, cert.public_bytes(serialization.Encoding.PEM)),
        (ca_file, ca_cert.public_bytes(serialization.Encoding.PEM)),
    ):
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(data)
        if path.name.endswith("key.pem"):
            os.chmod(tmp, 0o600)
        tmp.replace(path)


def issue_client_certificate(
    cert_dir: Path | None, topic: str, *, valid_days: int = CLIENT_VALID_DAYS
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A client certificate for ``topic`` (subject UID, as Apple puts the bundle id there) and its key.

    Signed by the simulators' CA in ``cert_dir`` (created if missing), or self-signed
    when ``cert_dir`` is None: a certificate the APNs simulator refuses at TLS.
    A negative ``valid_days`` makes one that has already expired.
    """
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.USER_ID, topic),
            x509.NameAttribute(NameOID.COMMON_NAME, f"Apple Push Services: {topic}"),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "SIMULATED"),
        ]
    )
    if cert_dir is None:
        issuer, signing_key = subject, key
    else:
        ensure_certificates(cert_dir)
        ca_cert = x509.load_pem_x509_certificate((cert_dir / "ca.pem").read_bytes())
        issuer = ca_cert.subject
        signing_key = serialization.load_pem_private_key(_ca_key_file(cert_dir).read_bytes(), password=None)
    now = datetime.datetime.now(datetime.UTC)
    end = now + datetime.timedelta(days=valid_days)
    start = min(now, end) - datetime.timedelta(days=1)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(signing_key, hashes.SHA256())
    )
    return certificate, key


def server_context(cert_file: Path, key_file: Path, *, client_ca: Path | None = None) -> ssl.SSLContext:
    """TLS for the provider port: HTTP/2 by ALPN, HTTP/1.1 for clients that don't offer it.

    With ``client_ca``, clients may present a certificate (``CERT_OPTIONAL``); one
    that CA did not sign fails the handshake.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert_file, key_file)
    context.set_alpn_protocols(["h2", "http/1.1"])
    if client_ca is not None:
        context.verify_mode = ssl.CERT_OPTIONAL
        context.load_verify_locations(client_ca)
    return context
