"""Envelope encryption of provider credentials (shared/sealed_credentials.py)."""
from __future__ import annotations

import json

import pytest

from shared.sealed_credentials import SEALED, CredentialKeys, CredentialsUnavailable, check_settings, new_key_entry
from shared.settings import load

APNS = {"auth": "token", "bundle": "com.a", "key_id": "K1", "team_id": "T1", "environment": "production",
        "private_key": "-----BEGIN PRIVATE KEY-----\nSECRET\n-----END PRIVATE KEY-----\n"}
FCM = {"project_id": "p", "service_account": {"client_email": "x@y", "private_key": "FCM-SECRET", "token_uri": "https://t/token"}}
HMS = {"project_id": "101", "client_id": "1010", "client_secret": "HMS-SECRET"}


@pytest.fixture
def keys() -> CredentialKeys:
    return CredentialKeys.parse(new_key_entry())


def test_secrets_are_sealed_and_open_again_while_the_rest_stays_readable(keys):
    for provider, credentials in (("apns", APNS), ("fcm", FCM), ("hms", HMS)):
        sealed = keys.seal("app-a", provider, credentials)
        assert "SECRET" not in json.dumps(sealed)
        assert sealed[SEALED]["kid"] == keys.current
        assert {k: v for k, v in sealed.items() if k != SEALED} == {k: v for k, v in credentials.items()
                                                                   if k not in ("private_key", "service_account", "client_secret")}
        assert keys.open("app-a", provider, sealed) == credentials


def test_a_seal_opens_only_for_its_app_and_provider_and_untouched(keys):
    sealed = keys.seal("app-a", "apns", APNS)
    for app_id, provider in (("app-b", "apns"), ("app-a", "fcm")):
        with pytest.raises(CredentialsUnavailable):
            keys.open(app_id, provider, sealed)
    tampered = {**sealed, SEALED: {**sealed[SEALED], "data": sealed[SEALED]["data"][:-4] + "AAAA"}}
    with pytest.raises(CredentialsUnavailable):
        keys.open("app-a", "apns", tampered)


def test_a_missing_key_is_named_not_guessed(keys):
    sealed = keys.seal("app-a", "fcm", FCM)
    other = CredentialKeys.parse(new_key_entry())
    assert keys.can_open(sealed) is None and keys.can_open(FCM) is None
    assert keys.current in other.can_open(sealed)
    with pytest.raises(CredentialsUnavailable, match="does not hold"):
        other.open("app-a", "fcm", sealed)


def test_rotation_rewraps_the_data_key_under_the_new_key_and_is_idempotent(keys):
    old = keys.seal("app-a", "apns", APNS)
    rotated = CredentialKeys.parse(f"{new_key_entry()},{new_key_entry()}")
    both = CredentialKeys({**rotated.keys, **keys.keys})
    new = both.rewrap("app-a", "apns", old)
    assert new[SEALED]["kid"] == both.current != keys.current
    assert new[SEALED]["data"] == old[SEALED]["data"]  # the secrets are not re-encrypted, only their key
    assert CredentialKeys({both.current: both.keys[both.current]}).open("app-a", "apns", new) == APNS
    assert both.rewrap("app-a", "apns", new) is None
    assert both.rewrap("app-a", "apns", APNS)[SEALED]["kid"] == both.current  # stored in clear before: sealed now


def test_already_sealed_credentials_keep_their_seal_and_no_key_means_clear(keys):
    sealed = keys.seal("app-a", "apns", APNS)
    topic_changed = {**sealed, "bundle": "com.b"}
    assert keys.seal("app-a", "apns", topic_changed) == topic_changed
    assert keys.open("app-a", "apns", topic_changed)["bundle"] == "com.b"
    assert keys.seal("app-a", "apns", None) is None
    assert CredentialKeys.parse("").seal("app-a", "apns", APNS) == APNS


@pytest.mark.parametrize("text", ["k1", "k1:", "k1:not-base64!", "k1:AAAA", ":" + new_key_entry().split(":")[1],
                                  f"k1:{new_key_entry().split(':')[1]},k1:{new_key_entry().split(':')[1]}"])
def test_malformed_keys_are_a_configuration_error(text):
    with pytest.raises(ValueError, match="PUSH_CREDENTIAL_KEYS"):
        CredentialKeys.parse(text)


def test_auth_on_refuses_to_start_with_credentials_in_clear_unless_allowed():
    with pytest.raises(ValueError, match="PUSH_CREDENTIAL_KEYS is empty"):
        check_settings(load({}, auth_enabled=True))
    check_settings(load({}, auth_enabled=True, credentials_unsealed_allowed=True))
    check_settings(load({}, auth_enabled=True, credential_keys=new_key_entry()))
    check_settings(load({}))


def test_the_keys_stay_out_of_the_settings_repr():
    entry = new_key_entry()
    assert entry.split(":")[1] not in repr(load({}, credential_keys=entry))
