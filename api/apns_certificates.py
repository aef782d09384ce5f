"""APNs certificate credentials: a PKCS#12 (.p12) upload → certificate and key PEMs, and its topic.

Apple issues an APNs certificate per app: the subject's UID is the app's bundle id
(the ``apns-topic``), the key is usually RSA 2048. The delivery workers present it
as a TLS client certificate, so what is kept is what ``ssl`` loads: the
certificate (then any chain certificates the file holds) and the unencrypted
private key, both PEM, stored and hidden as the token key is. No Flask here: the
route turns a :class:`CertificateError` into its 400.
"""
from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from datetime import UTC, datetime

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import NameOID

CERTIFICATE_FIELD = "apns_certificate"
PASSWORD_FIELD = "apns_certificate_password"
#: DER of the content types a PKCS#12 file's authSafe carries: pkcs7-data or pkcs7-signedData.
PKCS7_CONTENT_TYPES = (bytes.fromhex("06092a864886f70d010701"), bytes.fromhex("06092a864886f70d010702"))
DER_SEQUENCE, DER_INTEGER = 0x30, 0x02


class CertificateError(ValueError):
    """The upload is not usable; ``field`` says which input is at fault."""

    def __init__(self, field: str, description: str):
        super().__init__(description)
        self.field = field
        self.description = description


@dataclass(frozen=True)
class ApnsCertificate:
    """What a .p12 yields.

    Attributes:
      certificate_pem: the client certificate, then any chain certificates of the file.
      private_key_pem: its key, PKCS#8, unencrypted.
      topic: the subject's UID (the bundle id), or None.
      not_after: the end of the certificate's validity.
    """

    certificate_pem: str
    private_key_pem: str
    topic: str | None
    not_after: datetime


def decode_upload(value: str | bytes) -> bytes:
    """The .p12's bytes from an uploaded file (raw) or base64 text (a form field, or a file holding base64)."""
    if isinstance(value, bytes) and looks_like_pkcs12(value):
        return value
    try:
        text = value.decode("ascii") if isinstance(value, bytes) else value
        data = base64.b64decode("".join(text.split()), validate=True)
    except (UnicodeDecodeError, binascii.Error, ValueError):
        raise CertificateError(CERTIFICATE_FIELD, "apns_certificate must be a PKCS#12 (.p12) file, raw or base64") from None
    if not data:
        raise CertificateError(CERTIFICATE_FIELD, "apns_certificate is empty")
    return data


def looks_like_pkcs12(data: bytes) -> bool:
    """Whether ``data`` has a PKCS#12 file's outer shape: SEQUENCE { INTEGER 3, SEQUENCE { pkcs7 content type, … }, … }.

    OpenSSL answers a wrong password and a file that is no .p12 with the same
    error; this tells the two apart, so the answer names the right field.
    """
    try:
        tag, start, _end = _der_element(data, 0)
        if tag != DER_SEQUENCE:
            return False
        tag, version_start, version_end = _der_element(data, start)
        if tag != DER_INTEGER or data[version_start:version_end] != b"\x03":
            return False
        tag, content_start, _end = _der_element(data, version_end)
    except ValueError:
        return False
    return tag == DER_SEQUENCE and data[content_start : content_start + 11] in PKCS7_CONTENT_TYPES


def _der_element(data: bytes, offset: int) -> tuple[int, int, int]:
    """(tag, content start, content end) of the DER (or BER indefinite-length) element at ``offset``."""
    if offset + 2 > len(data):
        raise ValueError("truncated")
    tag, length = data[offset], data[offset + 1]
    start = offset + 2
    if length == 0x80:  # BER indefinite length (some exporters write it): runs to its end-of-contents
        return tag, start, len(data)
    if length & 0x80:
        count = length & 0x7F
        if count > 4 or start + count > len(data):
            raise ValueError("bad length")
        length = int.from_bytes(data[start : start + count], "big")
        start += count
    if start + length > len(data):
        raise ValueError("truncated")
    return tag, start, start + length


def parse_p12(data: bytes, password: str | None, *, now: datetime | None = None) -> ApnsCertificate:
    """Open a .p12 and check it can authenticate to APNs now; :class:`CertificateError` names the field at fault."""
    if not looks_like_pkcs12(data):
        raise CertificateError(CERTIFICATE_FIELD, "apns_certificate is not a PKCS#12 (.p12) file")
    try:
        key, certificate, chain = pkcs12.load_key_and_certificates(data, password.encode() if password else None)
    except ValueError:
        if password:
            raise CertificateError(PASSWORD_FIELD, "apns_certificate_password does not open apns_certificate (or the file is damaged)") from None
        raise CertificateError(PASSWORD_FIELD, "apns_certificate is encrypted: send its apns_certificate_password") from None
    if key is None:
        raise CertificateError(CERTIFICATE_FIELD, "apns_certificate holds no private key: export the certificate with its key")
    if certificate is None:
        raise CertificateError(CERTIFICATE_FIELD, "apns_certificate holds no certificate for its private key")
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        raise CertificateError(CERTIFICATE_FIELD, "apns_certificate's key must be RSA or EC")
    # OpenSSL pairs key and certificate by the file's localKeyID: a crafted file can pair a foreign key,
    # which would fail only later, in every delivery worker's TLS set-up.
    public_format = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    if key.public_key().public_bytes(*public_format) != certificate.public_key().public_bytes(*public_format):
        raise CertificateError(CERTIFICATE_FIELD, "apns_certificate's private key does not belong to its certificate")
    now = now or datetime.now(UTC)
    if certificate.not_valid_after_utc <= now:
        raise CertificateError(CERTIFICATE_FIELD, f"apns_certificate expired on {certificate.not_valid_after_utc.isoformat()}")
    if certificate.not_valid_before_utc > now:
        raise CertificateError(CERTIFICATE_FIELD, f"apns_certificate is not valid before {certificate.not_valid_before_utc.isoformat()}")
    return ApnsCertificate(
        certificate_pem="".join(c.public_bytes(serialization.Encoding.PEM).decode() for c in (certificate, *chain)),
        private_key_pem=key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ).decode(),
        topic=certificate_topic(certificate),
        not_after=certificate.not_valid_after_utc,
    )


def certificate_topic(certificate: x509.Certificate) -> str | None:
    """The bundle id Apple puts in the subject's UID, or None."""
    values = certificate.subject.get_attributes_for_oid(NameOID.USER_ID)
    value = values[0].value if values else None
    return (value.strip() or None) if isinstance(value, str) else None
