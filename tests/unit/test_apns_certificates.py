"""APNs certificate uploads: .p12 decoding, parsing, the field each fault names, the topic."""
from __future__ import annotations

import base64
import datetime

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import NameOID

from api.apns_certificates import (
    CERTIFICATE_FIELD,
    PASSWORD_FIELD,
    CertificateError,
    decode_upload,
    looks_like_pkcs12,
    parse_p12,
)
from devstack.credentials import apns_certificate_p12
from simulators.tls import issue_client_certificate

TOPIC = "com.example.wallet"


def certificate_for(key, subject: list[x509.NameAttribute], *, days: int = 30) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    name = x509.Name(subject)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=days))
        .sign(key, hashes.SHA256())
    )


def p12(key, certificate, password: bytes | None = b"secret", chain=None) -> bytes:
    encryption = serialization.BestAvailableEncryption(password) if password else serialization.NoEncryption()
    return pkcs12.serialize_key_and_certificates(b"apns", key, certificate, chain, encryption)


def fault(data: bytes, password: str | None) -> CertificateError:
    with pytest.raises(CertificateError) as raised:
        parse_p12(data, password)
    return raised.value


def test_a_p12_yields_pems_that_load_and_the_uid_as_topic():
    parsed = parse_p12(apns_certificate_p12(TOPIC, "pw", cert_dir=None), "pw")
    assert parsed.topic == TOPIC
    certificate = x509.load_pem_x509_certificate(parsed.certificate_pem.encode())
    key = serialization.load_pem_private_key(parsed.private_key_pem.encode(), password=None)
    assert key.public_key() == certificate.public_key()
    assert parsed.not_after == certificate.not_valid_after_utc


def test_an_unencrypted_p12_needs_no_password():
    assert parse_p12(apns_certificate_p12(TOPIC, None, cert_dir=None), None).topic == TOPIC


def test_an_rsa_key_as_apple_issues_and_the_chain_is_kept():
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    certificate = certificate_for(key, [x509.NameAttribute(NameOID.USER_ID, TOPIC), x509.NameAttribute(NameOID.COMMON_NAME, "x")])
    intermediate = certificate_for(ec.generate_private_key(ec.SECP256R1()), [x509.NameAttribute(NameOID.COMMON_NAME, "WWDR")])
    parsed = parse_p12(p12(key, certificate, chain=[intermediate]), "secret")
    assert parsed.topic == TOPIC
    assert len(x509.load_pem_x509_certificates(parsed.certificate_pem.encode())) == 2


def test_legacy_triple_des_p12_from_older_keychains_opens():
    certificate, key = issue_client_certificate(None, TOPIC)
    encryption = (
        serialization.PrivateFormat.PKCS12.encryption_builder()
        .kdf_rounds(2048)
        .key_cert_algorithm(pkcs12.PBES.PBESv1SHA1And3KeyTripleDESCBC)
        .hmac_hash(hashes.SHA1())
        .build(b"old")
    )
    data = pkcs12.serialize_key_and_certificates(b"apns", key, certificate, None, encryption)
    assert parse_p12(data, "old").topic == TOPIC


def test_without_uid_there_is_no_topic():
    key = ec.generate_private_key(ec.SECP256R1())
    certificate = certificate_for(key, [x509.NameAttribute(NameOID.COMMON_NAME, "Apple Push Services")])
    assert parse_p12(p12(key, certificate), "secret").topic is None


@pytest.mark.parametrize("password", ["wrong", None, ""])
def test_a_wrong_or_missing_password_names_the_password_field(password):
    assert fault(apns_certificate_p12(TOPIC, "right", cert_dir=None), password).field == PASSWORD_FIELD


@pytest.mark.parametrize(
    "data",
    [b"", b"garbage", b"\x30\x03\x02\x01\x03", b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n", bytes(range(256))],
)
def test_what_is_not_a_p12_names_the_certificate_field(data):
    assert fault(data, "pw").field == CERTIFICATE_FIELD


def test_an_expired_certificate_is_refused():
    error = fault(apns_certificate_p12(TOPIC, "pw", cert_dir=None, valid_days=-1), "pw")
    assert error.field == CERTIFICATE_FIELD and "expired" in error.description


def test_a_p12_without_its_key_is_refused():
    certificate, _key = issue_client_certificate(None, TOPIC)
    no_key = pkcs12.serialize_key_and_certificates(b"apns", None, certificate, None, serialization.BestAvailableEncryption(b"pw"))
    error = fault(no_key, "pw")
    assert error.field == CERTIFICATE_FIELD and "no private key" in error.description


def test_uploads_are_raw_bytes_or_base64_text_or_a_file_of_base64():
    data = apns_certificate_p12(TOPIC, "pw", cert_dir=None)
    text = base64.b64encode(data).decode()
    wrapped = "\n".join(text[i : i + 64] for i in range(0, len(text), 64))
    assert decode_upload(data) == data
    assert decode_upload(text) == data
    assert decode_upload(wrapped.encode()) == data
    for garbage in ("not base64!", b"\xff\xfe binary", "   "):
        with pytest.raises(CertificateError) as raised:
            decode_upload(garbage)
        assert raised.value.field == CERTIFICATE_FIELD


def test_the_pkcs12_shape_check():
    assert looks_like_pkcs12(apns_certificate_p12(TOPIC, "pw", cert_dir=None))
    assert looks_like_pkcs12(apns_certificate_p12(TOPIC, None, cert_dir=None))
    certificate, _key = issue_client_certificate(None, TOPIC)
    assert not looks_like_pkcs12(certificate.public_bytes(serialization.Encoding.DER))  # DER, but a certificate
    assert not looks_like_pkcs12(b"\x30\x82\xff\xff\x02\x01\x03")  # truncated
