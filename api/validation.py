"""Small validators for JSON request bodies; each failure names the field.

Hand-written rather than a schema library: the API's request shapes are few,
and the error must be in each API family's own format.
"""
from __future__ import annotations

from datetime import datetime
from typing import Any

from api.errors import bad_request
from shared.payload import parse_timestamp

#: Longest identifier (app, user, activation, client id) accepted.
MAX_ID_LENGTH = 256
#: Longest device token accepted (FCM tokens are ~160 characters today).
MAX_TOKEN_LENGTH = 4096


def json_object(value: Any, field: str) -> dict:
    if not isinstance(value, dict):
        raise bad_request(field, "must be a JSON object")
    return value


def required(data: dict, key: str, prefix: str = "") -> Any:
    if data.get(key) is None:
        raise bad_request(prefix + key, "is required")
    return data[key]


def string(data: dict, key: str, prefix: str = "", *, required_: bool = False, max_length: int = MAX_ID_LENGTH, allow_empty: bool = False) -> str | None:
    value = data.get(key)
    if value is None:
        if required_:
            raise bad_request(prefix + key, "is required")
        return None
    if not isinstance(value, str):
        raise bad_request(prefix + key, "must be a string")
    if not value.strip() and not allow_empty:
        raise bad_request(prefix + key, "must not be empty")
    if len(value) > max_length:
        raise bad_request(prefix + key, f"must be at most {max_length} characters")
    return value


def identifier(data: dict, key: str, prefix: str = "", *, required_: bool = False) -> str | None:
    """An id that may come as a JSON number (PowerAuth's numeric appId) or a string."""
    value = data.get(key)
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return string(data, key, prefix, required_=required_)


def boolean(data: dict, key: str, prefix: str = "", *, default: bool = False) -> bool:
    value = data.get(key)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise bad_request(prefix + key, "must be true or false")
    return value


def integer(data: dict, key: str, prefix: str = "", *, minimum: int | None = None, maximum: int | None = None) -> int | None:
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool):
        raise bad_request(prefix + key, "must be an integer")
    if minimum is not None and value < minimum:
        raise bad_request(prefix + key, f"must be at least {minimum}")
    if maximum is not None and value > maximum:
        raise bad_request(prefix + key, f"must be at most {maximum}")
    return value


def choice(data: dict, key: str, options: dict[str, str], prefix: str = "", *, default: str | None = None) -> str | None:
    """One of ``options`` (case-insensitive); answers the canonical value it maps to."""
    value = data.get(key)
    if value is None:
        if default is None:
            raise bad_request(prefix + key, "is required")
        return default
    if not isinstance(value, str) or value.lower() not in options:
        raise bad_request(prefix + key, f"must be one of {', '.join(sorted(options))}")
    return options[value.lower()]


def string_list(data: dict, key: str, prefix: str = "", *, required_: bool = False, max_items: int | None = None) -> list[str] | None:
    value = data.get(key)
    if value is None:
        if required_:
            raise bad_request(prefix + key, "is required")
        return None
    if not isinstance(value, list):
        raise bad_request(prefix + key, "must be a list of strings")
    if max_items is not None and len(value) > max_items:
        raise bad_request(prefix + key, f"must have at most {max_items} items")
    for index, item in enumerate(value):
        if not isinstance(item, str) or not item.strip():
            raise bad_request(f"{prefix}{key}[{index}]", "must be a non-empty string")
        if len(item) > MAX_ID_LENGTH:
            raise bad_request(f"{prefix}{key}[{index}]", f"must be at most {MAX_ID_LENGTH} characters")
    return value


def timestamp(data: dict, key: str, prefix: str = "") -> datetime | None:
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise bad_request(prefix + key, "must be an ISO-8601 timestamp string")
    try:
        return parse_timestamp(value)
    except ValueError:
        raise bad_request(prefix + key, "must be an ISO-8601 timestamp, e.g. 2030-01-01T12:00:00Z") from None
