"""Declarative request schemas: one definition both validates a request and documents it.

Each route declares what it reads with :func:`operation`: its JSON body, its
query parameters, its path parameters and form fields, as trees of the field
types below. The wrapper validates the request against them before the
handler runs (every failure is an :class:`~api.errors.ApiError` naming the
field, rendered in the route's API family's own envelope) and hands the
handler the cleaned values (:func:`body`, :func:`query`, :func:`path`,
:func:`form`). ``api/openapi.py`` turns the same declarations into the
OpenAPI document served at ``/openapi.json``, so the document cannot drift
from what the API accepts.

The schemas check shape: types, lengths, bounds, choices, required fields.
What needs the database (does this app exist?) stays in the handlers.
"""
from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from flask import current_app, g, request

from api.errors import ApiError, bad_request
from shared.payload import parse_timestamp

#: Longest identifier (app, user, activation, client, session, call id) accepted unless a field says otherwise.
MAX_ID_LENGTH = 256
#: Longest device token (and WalletConnect bridge webhook URL) accepted (FCM tokens are ~160 characters today).
MAX_TOKEN_LENGTH = 4096
#: A route's body-size class (``operation(..., body_size=...)``): most routes take small bodies; the
#: limits are the settings PUSH_API_MAX_SMALL_BODY_BYTES, PUSH_API_MAX_MEDIUM_BODY_BYTES, PUSH_API_MAX_BODY_BYTES.
SMALL_BODY, MEDIUM_BODY, LARGE_BODY = "small", "medium", "large"
BODY_SIZES = frozenset({SMALL_BODY, MEDIUM_BODY, LARGE_BODY})
#: A route's rate limit (``operation(..., rate_limit=...)``): registrations, per client IP and per API key.
REGISTRATION = "registration"
RATE_LIMITS = frozenset({None, REGISTRATION})

#: A bound may be a number or a function of the settings (e.g. the configurable batch size).
Bound = int | Callable[[Any], int] | None

_MISSING = object()


def _settings():
    return current_app.extensions["push"].settings


def resolve(bound: Bound, settings=None) -> int | None:
    """A bound's value: a callable is called with the settings (the app's, unless given)."""
    if callable(bound):
        return bound(settings if settings is not None else _settings())
    return bound


class Invalid(Exception):
    """A value that does not fit its field; ``path`` is filled in on the way out."""

    def __init__(self, message: str, path: str = ""):
        super().__init__(message)
        self.message = message
        self.path = path


def _join(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key


class Field:
    """A value in a request.

    Parameters:
      required: the request fails without it (``null`` counts as absent).
      default: the cleaned value when absent.
      description: for the document.
      example: for the document.
    """

    json_type: str | None = None

    def __init__(self, *, required: bool = False, default: Any = _MISSING, description: str | None = None,
                 example: Any = _MISSING, deprecated: bool = False):
        self.required = required
        self.default = default
        self.description = description
        self.example = example
        self.deprecated = deprecated

    # --- validation ---
    def clean(self, value: Any, path: str) -> Any:
        """The cleaned value of a present, non-null ``value``; raises :class:`Invalid`."""
        return value

    def clean_text(self, text: str, path: str) -> Any:
        """The cleaned value of a query, path or form parameter (always text on the wire)."""
        return self.clean(text, path)

    # --- document ---
    def schema(self, settings) -> dict:
        """This field as an OpenAPI 3.0 schema object."""
        result = self._schema(settings)
        if self.description:
            result["description"] = self.description
        if self.default is not _MISSING and self.default is not None and not callable(self.default):
            result["default"] = self.default
        if self.example is not _MISSING:
            result["example"] = self.example
        if self.deprecated:
            result["deprecated"] = True
        return result

    def _schema(self, settings) -> dict:
        return {"type": self.json_type} if self.json_type else {}


class Str(Field):
    """A string; by default not blank and at most :data:`MAX_ID_LENGTH` characters."""

    json_type = "string"

    def __init__(self, *, max_length: Bound = MAX_ID_LENGTH, allow_empty: bool = False, no_spaces: bool = False,
                 enum: list[str] | None = None, pattern: str | None = None, pattern_help: str | None = None,
                 format: str | None = None, check: Callable[[str], str | None] | None = None, **options):
        super().__init__(**options)
        self.max_length = max_length
        self.allow_empty = allow_empty
        self.no_spaces = no_spaces
        self.enum = enum
        self.pattern = pattern
        self.pattern_help = pattern_help
        self.format = format
        self.check = check

    def clean(self, value, path):
        if not isinstance(value, str):
            raise Invalid("must be a string")
        if not self.allow_empty and not value.strip():
            raise Invalid("must not be empty")
        limit = resolve(self.max_length)
        if limit is not None and len(value) > limit:
            raise Invalid(f"must be at most {limit} characters")
        if not value.isascii():
            try:
                value.encode()
            except UnicodeEncodeError:  # a lone surrogate (JSON's "\ud800"): MongoDB cannot store it
                raise Invalid("must be valid Unicode text (no lone surrogates)") from None
        if self.no_spaces and any(c.isspace() for c in value):
            raise Invalid("must not contain white space")
        if self.enum is not None and value not in self.enum:
            raise Invalid(f"must be one of {', '.join(self.enum)}")
        if self.pattern is not None:
            import re

            if re.fullmatch(self.pattern, value) is None:
                raise Invalid(self.pattern_help or f"must match {self.pattern}")
        if self.check is not None:
            problem = self.check(value)
            if problem:
                raise Invalid(problem)
        return value

    def _schema(self, settings):
        result: dict = {"type": "string"}
        if not self.allow_empty:
            result["minLength"] = 1
        limit = resolve(self.max_length, settings)
        if limit is not None:
            result["maxLength"] = limit
        if self.enum is not None:
            result["enum"] = list(self.enum)
        if self.pattern is not None:
            result["pattern"] = f"^{self.pattern}$"
        if self.format:
            result["format"] = self.format
        return result


class Choice(Field):
    """One of ``options`` (case-insensitive); cleans to the canonical value the option maps to."""

    json_type = "string"

    def __init__(self, options: Mapping[str, str] | list[str], **options_):
        super().__init__(**options_)
        self.options = dict(options) if isinstance(options, Mapping) else {o.lower(): o for o in options}

    def clean(self, value, path):
        if not isinstance(value, str) or value.lower() not in self.options:
            raise Invalid(f"must be one of {', '.join(sorted(self.options))}")
        return self.options[value.lower()]

    def _schema(self, settings):
        values = sorted(set(self.options) | {v for v in self.options.values()})
        return {"type": "string", "enum": values, "x-case-insensitive": True}


class Int(Field):
    """An integer (not a boolean), optionally bounded; from text in query and path parameters."""

    json_type = "integer"

    def __init__(self, *, minimum: Bound = None, maximum: Bound = None, **options):
        super().__init__(**options)
        self.minimum = minimum
        self.maximum = maximum

    def clean(self, value, path):
        if not isinstance(value, int) or isinstance(value, bool):
            raise Invalid("must be an integer")
        low, high = resolve(self.minimum), resolve(self.maximum)
        if low is not None and high is not None and not low <= value <= high:
            raise Invalid(f"must be between {low} and {high}")
        if low is not None and value < low:
            raise Invalid(f"must be at least {low}")
        if high is not None and value > high:
            raise Invalid(f"must be at most {high}")
        return value

    def clean_text(self, text, path):
        try:
            number = int(text.strip(), 10)
        except ValueError:
            raise Invalid("must be an integer") from None
        return self.clean(number, path)

    def _schema(self, settings):
        result: dict = {"type": "integer"}
        low, high = resolve(self.minimum, settings), resolve(self.maximum, settings)
        if low is not None:
            result["minimum"] = low
        if high is not None:
            result["maximum"] = high
        return result


class Bool(Field):
    """``true`` or ``false`` (in JSON; in query parameters the words, any case)."""

    json_type = "boolean"

    def clean(self, value, path):
        if not isinstance(value, bool):
            raise Invalid("must be true or false")
        return value

    def clean_text(self, text, path):
        if text.lower() not in ("true", "false"):
            raise Invalid("must be true or false")
        return text.lower() == "true"


class Id(Str):
    """An identifier given as a string or, as PowerAuth's numeric ``appId``, a JSON integer; cleans to a string."""

    def clean(self, value, path):
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        return super().clean(value, path)

    def schema(self, settings):
        string = super().schema(settings)
        description = string.pop("description", None)
        result: dict = {"oneOf": [string, {"type": "integer"}]}
        if description:
            result["description"] = description
        return result


class Timestamp(Str):
    """An ISO-8601 timestamp; cleans to an aware datetime."""

    def __init__(self, **options):
        super().__init__(format="date-time", **options)

    def clean(self, value, path):
        if not isinstance(value, str):
            raise Invalid("must be an ISO-8601 timestamp string")
        try:
            return parse_timestamp(value)
        except ValueError:
            raise Invalid("must be an ISO-8601 timestamp, e.g. 2030-01-01T12:00:00Z") from None

    def _schema(self, settings):
        return {"type": "string", "format": "date-time"}


class List(Field):
    """A JSON array of ``items``; in a query parameter, repeated or comma-separated."""

    json_type = "array"

    def __init__(self, items: Field, *, min_items: int = 0, max_items: Bound = None, unique: bool = False, **options):
        super().__init__(**options)
        self.items = items
        self.min_items = min_items
        self.max_items = max_items
        self.unique = unique

    def clean(self, value, path):
        if not isinstance(value, list):
            raise Invalid(f"must be a list of {self.items.json_type or 'value'}s")
        if len(value) < self.min_items:
            raise Invalid("must not be empty" if self.min_items == 1 else f"must have at least {self.min_items} items")
        limit = resolve(self.max_items)
        if limit is not None and len(value) > limit:
            raise Invalid(f"must have at most {limit} items")
        cleaned = []
        for index, item in enumerate(value):
            item_path = f"{path}[{index}]"
            if item is None:
                raise Invalid("must not be null", item_path)
            cleaned.append(_clean_at(self.items, item, item_path))
        if self.unique:
            cleaned = list(dict.fromkeys(cleaned))
        return cleaned

    def clean_text(self, text, path):
        return self.clean([part for part in text.split(",") if part != ""], path)

    def _schema(self, settings):
        result: dict = {"type": "array", "items": self.items.schema(settings)}
        if self.min_items:
            result["minItems"] = self.min_items
        limit = resolve(self.max_items, settings)
        if limit is not None:
            result["maxItems"] = limit
        return result


class Obj(Field):
    """A JSON object with named ``properties``; other keys are kept as they are unless ``closed``."""

    json_type = "object"

    def __init__(self, properties: Mapping[str, Field] | None = None, *, closed: bool = False, name: str | None = None,
                 **options):
        super().__init__(**options)
        self.properties = dict(properties or {})
        self.closed = closed
        #: The shape's name (e.g. PowerAuth's ``PushMessage``), the schema's ``title`` in the document.
        self.name = name

    def clean(self, value, path):
        if not isinstance(value, dict):
            raise Invalid("must be a JSON object")
        cleaned = {} if self.closed else dict(value)
        for key, spec in self.properties.items():
            item = value.get(key)
            item_path = _join(path, key)
            if item is None:
                cleaned.pop(key, None)
                if spec.required:
                    raise Invalid("is required", item_path)
                if spec.default is not _MISSING:
                    cleaned[key] = spec.default() if callable(spec.default) else spec.default
                continue
            cleaned[key] = _clean_at(spec, item, item_path)
        if self.closed:
            for key in value:
                if key not in self.properties:
                    raise Invalid("is not a known field", _join(path, key))
        return cleaned

    def _schema(self, settings):
        result: dict = {"type": "object", "properties": {k: f.schema(settings) for k, f in self.properties.items()}}
        required = [k for k, f in self.properties.items() if f.required]
        if required:
            result["required"] = required
        if self.closed:
            result["additionalProperties"] = False
        if self.name:
            result["title"] = self.name
        return result


class Json(Field):
    """Any JSON value (or, with ``object_only``, any JSON object), taken as it is."""

    def __init__(self, *, object_only: bool = False, **options):
        super().__init__(**options)
        self.object_only = object_only

    def clean(self, value, path):
        if self.object_only and not isinstance(value, dict):
            raise Invalid("must be a JSON object")
        return value

    def _schema(self, settings):
        return {"type": "object"} if self.object_only else {}


class Either(Field):
    """The first of ``alternatives`` whose JSON type the value has (e.g. a list, or an object wrapping one)."""

    def __init__(self, *alternatives: Field, **options):
        super().__init__(**options)
        self.alternatives = alternatives

    def clean(self, value, path):
        for alternative in self.alternatives:
            if _json_type_of(value) == alternative.json_type:
                return _clean_at(alternative, value, path)
        kinds = " or ".join(f"a JSON {a.json_type}" for a in self.alternatives)
        raise Invalid(f"must be {kinds}")

    def _schema(self, settings):
        return {"oneOf": [a.schema(settings) for a in self.alternatives]}


class Wrapped(Field):
    """A JSON object whose ``key`` holds ``inner`` (PowerAuth's ``{"requestObject": ...}``); cleans to the inner value.

    With ``bare_ok`` a body without ``key`` is taken as the inner value itself
    (older clients); errors still name ``key.<field>``.
    """

    json_type = "object"

    def __init__(self, inner: Field, *, key: str = "requestObject", bare_ok: bool = False, **options):
        super().__init__(**options)
        self.inner = inner
        self.key = key
        self.bare_ok = bare_ok

    def clean(self, value, path):
        if not isinstance(value, dict):
            raise Invalid("must be a JSON object (Content-Type: application/json)", path or "body")
        inner_path = _join(path, self.key)
        if value.get(self.key) is not None:
            return _clean_at(self.inner, value[self.key], inner_path)
        if self.bare_ok and self.key not in value:
            return _clean_at(self.inner, value, inner_path)
        raise Invalid("is required", inner_path)

    def _schema(self, settings):
        return {"type": "object", "required": [self.key], "properties": {self.key: self.inner.schema(settings)}}


class Binary(Field):
    """A form field that may be an uploaded file (bytes) or text; cleans to bytes or str as sent."""

    json_type = "string"

    def clean(self, value, path):
        if not isinstance(value, str | bytes):
            raise Invalid("must be a file or text")
        return value

    def _schema(self, settings):
        return {"type": "string", "format": "binary"}


def _json_type_of(value) -> str | None:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return None


def _clean_at(spec: Field, value, path: str):
    """``spec.clean`` with the failure's path filled in (a nested failure keeps its deeper path)."""
    try:
        return spec.clean(value, path)
    except Invalid as invalid:
        if not invalid.path:
            invalid.path = path
        raise


# --- operations -----------------------------------------------------------------------------------

@dataclass
class Operation:
    """What one route reads and answers; built by :func:`operation`, read by api/openapi.py.

    ``body`` is the JSON body (``body_name`` names it in errors when it is not an
    object at all); ``query``, ``path`` and ``form`` map parameter names to fields.
    ``responses`` maps a status to the schema (a :class:`Field`) or ``None`` of
    its body; the family's error envelope is added for 4XX and 503.
    ``body_size`` is the route's body-size class and ``rate_limit`` its rate
    limit, if any (both enforced by api/limits.py before the route runs).
    """

    summary: str
    description: str | None = None
    body: Field | None = None
    body_required: bool = True
    query: dict[str, Field] = field(default_factory=dict)
    path: dict[str, Field] = field(default_factory=dict)
    form: dict[str, Field] = field(default_factory=dict)
    responses: dict[int, Field | None] = field(default_factory=dict)
    tags: list[str] = field(default_factory=list)
    #: Request headers, documented only (``in: header``, not required): the route's own authentication reads them.
    headers: dict[str, Field] = field(default_factory=dict)
    #: A route kept for older clients: the document marks it deprecated (its summary names the route to use).
    deprecated: bool = False
    #: :data:`SMALL_BODY`, :data:`MEDIUM_BODY` or :data:`LARGE_BODY` (api/limits.py maps each to its setting).
    body_size: str = SMALL_BODY
    #: None, or :data:`REGISTRATION`: the POST is rate limited per client IP and per API key (api/limits.py).
    rate_limit: str | None = None

    def __post_init__(self):
        if self.body_size not in BODY_SIZES:
            raise ValueError(f"body_size must be one of {sorted(BODY_SIZES)}, not {self.body_size!r}")
        if self.rate_limit not in RATE_LIMITS:
            raise ValueError(f"rate_limit must be {REGISTRATION!r} or None, not {self.rate_limit!r}")


def operation(summary: str, **options) -> Callable:
    """Declare and enforce a route's request schema (see :class:`Operation`).

    Put it under the route decorators. The handler reads the cleaned values with
    :func:`body`, :func:`query`, :func:`path` and :func:`form`.
    """
    spec = Operation(summary=summary, **options)

    def decorate(view: Callable) -> Callable:
        @functools.wraps(view)
        def validated(*args, **kwargs):
            g.schema_path = _validate_params(spec.path, kwargs, "path")
            g.schema_query = _validate_params(spec.query, request.args, "query")
            if spec.form:
                g.schema_form = _validate_form(spec.form)
            if spec.body is not None:
                g.schema_body = _validate_body(spec)
            return view(*args, **kwargs)

        validated.openapi = spec
        return validated

    return decorate


def check(spec: Field, value: Any, path: str, *, location: str = "body") -> Any:
    """``spec``'s cleaned ``value`` at ``path``, or the 400 naming the field at fault."""
    try:
        if value is None:
            if spec.required:
                raise Invalid("is required", path)
            return None
        return _clean_at(spec, value, path)
    except Invalid as invalid:
        raise bad_request(invalid.path or path, invalid.message, location=location) from None


def _raise(invalid: Invalid, location: str) -> None:
    raise bad_request(invalid.path, invalid.message, location=location) from None


def _validate_params(fields: dict[str, Field], source, location: str) -> dict:
    cleaned: dict = {}
    for name, spec in fields.items():
        if isinstance(spec, List) and hasattr(source, "getlist"):
            values = [v for text in source.getlist(name) for v in text.split(",") if v != ""]
            text = ",".join(values) if values else None
        else:
            text = source.get(name)
        if text is None or text == "":
            if spec.required:
                raise bad_request(name, "is required", location=location)
            if spec.default is not _MISSING:
                cleaned[name] = spec.default
            continue
        try:
            cleaned[name] = spec.clean_text(text, name)
        except Invalid as invalid:
            _raise(Invalid(invalid.message, invalid.path or name), location)
    return cleaned


def _validate_form(fields: dict[str, Field]) -> dict:
    """Form fields (multipart or urlencoded; or a JSON object's string values) by lower-case name."""
    sent: dict[str, str | bytes] = {}
    if request.mimetype == "application/json":
        try:
            data = request.get_json(silent=True)
        except RecursionError:
            raise ApiError(400, "body: JSON nested too deeply", field="body") from None
        if isinstance(data, dict):
            sent = {k.lower(): v for k, v in data.items() if isinstance(v, str)}
    else:
        # A part without a name (``Content-Disposition: form-data``) has the key None: not a field.
        sent = {k.lower(): v for k, v in request.form.items() if k is not None}
        sent.update({k.lower(): f.read() for k, f in request.files.items() if k is not None})
    cleaned: dict = {}
    for name, spec in fields.items():
        value = sent.get(name)
        if value is None or value == "" or value == b"":
            if spec.required:
                raise bad_request(name, "is required")
            continue
        try:
            cleaned[name] = spec.clean(value, name) if isinstance(value, bytes) else spec.clean_text(value, name)
        except Invalid as invalid:
            _raise(Invalid(invalid.message, invalid.path or name), "body")
    return cleaned


def _validate_body(spec: Operation):
    try:
        data = request.get_json(silent=True)
    except RecursionError:  # nesting deeper than Python's parser goes
        raise ApiError(400, "body: JSON nested too deeply", field="body") from None
    if data is None:
        if not spec.body_required and not request.get_data(cache=True):
            return spec.body.clean({}, "") if isinstance(spec.body, Obj) else None
        raise ApiError(400, "body: must be a JSON object (Content-Type: application/json)", field="body")
    try:
        return _clean_at(spec.body, data, "")
    except Invalid as invalid:
        _raise(Invalid(invalid.message, invalid.path or "body"), "body")


def body() -> Any:
    """The cleaned JSON body of the current request."""
    return g.get("schema_body")


def query() -> dict:
    """The cleaned query parameters of the current request."""
    return g.get("schema_query") or {}


def path() -> dict:
    """The cleaned path parameters of the current request."""
    return g.get("schema_path") or {}


def form() -> dict:
    """The cleaned form fields of the current request (lower-case names)."""
    return g.get("schema_form") or {}


# --- more field types: bounded text, flags, fast objects ------------------------------------------

class Text(Str):
    """A string of ``min_length`` to ``max_length`` characters (blank allowed unless ``allow_empty=False``)."""

    def __init__(self, *, min_length: int = 0, allow_empty: bool = True, **options):
        super().__init__(allow_empty=allow_empty, **options)
        self.min_length = min_length

    def clean(self, value, path):
        value = super().clean(value, path)
        if len(value) < self.min_length:
            raise Invalid(f"must be at least {self.min_length} characters")
        return value

    def _schema(self, settings):
        result = super()._schema(settings)
        if self.min_length:
            result["minLength"] = self.min_length
        return result


#: Words a :class:`Flag` query parameter reads as true and as false (any case).
FLAG_TRUE = ("true", "1", "yes", "on")
FLAG_FALSE = ("false", "0", "no", "off")


class Flag(Bool):
    """A boolean that, as a query parameter, also takes 1/0, yes/no and on/off (any case)."""

    def clean_text(self, text, path):
        word = text.strip().lower()
        if word in FLAG_TRUE:
            return True
        if word in FLAG_FALSE:
            return False
        raise Invalid("must be true or false")


class FastObj(Obj):
    """An :class:`Obj` that cleans to the same value, and fails with the same error, with less work: for shapes
    cleaned thousands of times in one request (a batch send's messages).

    It visits only the keys present and copies the object only when a value changes (so an object that is
    already clean is answered as it is); should anything fail it cleans again as :class:`Obj` does, property
    by property in declaration order, so the error named is the one :class:`Obj` names.
    """

    def __init__(self, properties: Mapping[str, Field] | None = None, **options):
        super().__init__(properties, **options)
        self._required = tuple(k for k, f in self.properties.items() if f.required)
        self._defaults = tuple((k, f.default) for k, f in self.properties.items() if not f.required and f.default is not _MISSING)

    def clean(self, value, path):
        if not isinstance(value, dict):
            raise Invalid("must be a JSON object")
        try:
            return self._clean_present(value, path)
        except Invalid:
            return super().clean(value, path)

    def _clean_present(self, value: dict, path: str) -> dict:
        properties, closed = self.properties, self.closed
        cleaned = value  # copied on the first change
        for key, item in value.items():
            spec = properties.get(key)
            if spec is None:
                if closed:
                    raise Invalid("is not a known field")
                continue
            if item is None:
                if cleaned is value:
                    cleaned = dict(value)
                del cleaned[key]
                continue
            new = spec.clean(item, f"{path}.{key}" if path else key)
            if new is not item and not (type(new) is str and type(item) is str and new == item):
                if cleaned is value:
                    cleaned = dict(value)
                cleaned[key] = new
        for key in self._required:
            if value.get(key) is None:
                raise Invalid("is required")
        return self._with_defaults(value, cleaned) if self._defaults else cleaned

    def _with_defaults(self, value: dict, cleaned: dict) -> dict:
        """``cleaned`` with the declared defaults of the fields absent (or null) in ``value``; copied on the first change."""
        for key, default in self._defaults:
            if value.get(key) is None:
                if cleaned is value:
                    cleaned = dict(value)
                cleaned[key] = default() if callable(default) else default
        return cleaned
