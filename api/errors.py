"""Errors the API answers, and each API family's error envelope.

Handlers raise :class:`ApiError`; each blueprint declares once, with
:func:`renders_errors`, the renderer of its family's format, which answers
every error of its routes. Nothing a client sends can produce a 500 or a stack
trace: unexpected exceptions are logged and answered as a generic 500 in the
family's format without details. A request that matches no route (404, 405) is
answered by :func:`install_fallback`: in the format of the family whose path
prefixes it is under, else the default family's.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from flask import Blueprint, Flask, Response, request
from werkzeug.exceptions import HTTPException

log = logging.getLogger(__name__)

#: Seconds a client is told to wait when RabbitMQ or MongoDB is unreachable.
RETRY_AFTER_SECONDS = 5


@dataclass
class ApiError(Exception):
    """A failure to answer with ``status``; ``field`` names the input at fault, if any.

    Parameters:
      status: HTTP status.
      message: what is wrong, for a person.
      field: the request field at fault (dotted path), if the input is.
      location: where that field is: body, query, header or path.
      code: a short machine code (PowerAuth's ``ERROR_GENERIC`` style).
    """

    status: int
    message: str
    field: str | None = None
    location: str = "body"
    code: str = "ERROR_GENERIC"
    retry_after: int | None = None

    def __str__(self) -> str:
        return self.message


def bad_request(field: str, message: str, *, location: str = "body") -> ApiError:
    return ApiError(400, f"{field}: {message}", field=field, location=location)


def not_found(message: str, *, field: str | None = None, location: str = "body") -> ApiError:
    return ApiError(404, message, field=field, location=location, code="ERROR_NOT_FOUND")


def unavailable(what: str) -> ApiError:
    return ApiError(
        503, f"{what} is unavailable, try again later", code="ERROR_SERVICE_UNAVAILABLE", retry_after=RETRY_AFTER_SECONDS
    )


#: A family's error renderer: an :class:`ApiError` as that family's answer.
Renderer = Callable[[ApiError], Response]
#: The family of a blueprint that declares none (its errors: the fallback's, by path).
DEFAULT_FAMILY = "powerauth"


def from_http(error: HTTPException) -> ApiError:
    """An HTTP error (werkzeug's: a 404, 405, 413 ...) as an :class:`ApiError`."""
    return ApiError(error.code or 500, error.description or error.name, code=f"ERROR_HTTP_{error.code}")


def internal(error: Exception) -> ApiError:
    """An unexpected exception, logged with its trace, as the generic 500 (no details for the client)."""
    log.exception("unexpected error on %s %s", request.method, request.path)
    return ApiError(500, "internal error", code="ERROR_INTERNAL")


def _register(target: Flask | Blueprint, render: Renderer) -> None:
    target.register_error_handler(ApiError, render)
    target.register_error_handler(HTTPException, lambda error: render(from_http(error)))
    target.register_error_handler(Exception, lambda error: render(internal(error)))


def renders_errors(blueprint: Blueprint, family: str, render: Renderer, *, path_prefixes: tuple[str, ...] = ()) -> None:
    """Declare, once, the error format of ``blueprint``'s routes: ``render`` answers every error of their requests
    (an :class:`ApiError`, an HTTP error, an unexpected exception), ``family`` names the envelope in the OpenAPI
    document (api/openapi.py), and a request under ``path_prefixes`` that matches no route is answered by it too."""
    blueprint.error_family = family
    blueprint.error_renderer = render
    blueprint.error_path_prefixes = path_prefixes
    _register(blueprint, render)


def family_of(blueprint: Blueprint | None) -> str:
    """The error family ``blueprint`` declared (:data:`DEFAULT_FAMILY` when it declared none)."""
    return getattr(blueprint, "error_family", DEFAULT_FAMILY)


def install_fallback(app: Flask, default: Renderer) -> None:
    """Answer the errors no blueprint renders (a path no route matches; a blueprint that declared no format):
    in the format of the registered family whose path prefixes the path is under, else with ``default``."""

    def render(error: ApiError) -> Response:
        for blueprint in app.blueprints.values():
            prefixes = getattr(blueprint, "error_path_prefixes", ())
            if prefixes and request.path.startswith(prefixes):
                return blueprint.error_renderer(error)
        return default(error)

    _register(app, render)
