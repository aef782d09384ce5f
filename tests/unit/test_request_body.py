"""Reading a request body whole before Flask runs (api/request_body.py) and the route's limit it is held to."""
from __future__ import annotations

import asyncio

import pytest

from api import request_body
from api.limits import body_limit_of
from tests.unit import fakes


async def chunks(*parts: bytes, pause: float = 0.0, error: Exception | None = None):
    for part in parts:
        if pause:
            await asyncio.sleep(pause)
        yield part
    if error is not None:
        raise error


def read(source, *, declared=None, limit=100, seconds=5.0):
    return asyncio.run(request_body.read_whole(source, declared=declared, limit=limit, seconds=seconds))


def test_a_body_within_the_limit_is_read_whole():
    assert read(chunks(b"ab", b"cd"), declared=4) == (b"abcd", request_body.COMPLETE)
    assert read(chunks(b"ab", b"cd")) == (b"abcd", request_body.COMPLETE)  # chunked: no declared length


def test_reading_stops_one_byte_past_the_limit():
    consumed = []

    async def endless():
        while True:
            consumed.append(1)
            yield b"x" * 40

    body, outcome = read(endless(), limit=100)
    assert outcome == request_body.OVER_LIMIT and len(body) == 101 and len(consumed) == 3


def test_a_body_that_does_not_arrive_in_time_times_out():
    assert read(chunks(b"a", b"b", b"c", pause=0.2), seconds=0.3) == (b"", request_body.TIMED_OUT)


def test_a_body_shorter_than_declared_or_broken_off_is_cut_short():
    assert read(chunks(b"ab"), declared=10)[1] == request_body.CUT_SHORT
    assert read(chunks(b"ab", error=RuntimeError("closed")))[1] == request_body.CUT_SHORT


@pytest.mark.parametrize("value, expected", [("12", 12), (None, None), ("x", None)])
def test_a_declared_length(value, expected):
    assert request_body.declared_length(value) == expected


@pytest.mark.parametrize(
    ("method", "path", "limit"),
    [
        ("POST", "/push/message/batch/send", "api_max_body_bytes"),
        ("POST", "/push/device/create", "api_max_small_body_bytes"),
        ("POST", "/admin/app/apns", "api_max_medium_body_bytes"),
        ("POST", "/no/such/route", "api_max_small_body_bytes"),
        ("GET", "/push/message/batch/send", "api_max_small_body_bytes"),  # a method the route does not take
    ],
)
def test_the_limit_of_a_route_is_known_before_flask_runs(method, path, limit):
    app, fake = fakes.app_with(fakes.FakeServices)
    assert body_limit_of(app, method, path) == getattr(fake.settings, limit)
