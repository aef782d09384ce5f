"""Errors the API answers, and each API family's error envelope.

Handlers raise :class:`ApiError`; each blueprint renders it in its own
family's format. Nothing a client sends can produce a 500 or a stack trace:
unexpected exceptions are logged and answered as a generic 500 in the family's
format without details.
"""
from __future__ import annotations

from dataclasses import dataclass

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
