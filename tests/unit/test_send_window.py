"""The adaptive send gate (workers/delivery/window.py): in flight follows what the provider's answer time needs."""
from __future__ import annotations

import asyncio

from workers.delivery.window import BETA, INITIAL, SendWindow


def settle(window: SendWindow, answer_time, windows: int = 400) -> list[int]:
    """Feed the gate ``windows`` windows of answers, each taking ``answer_time(limit)`` seconds (one window apart in
    time); answer the limits after each."""
    now = [0.0]
    window._clock = lambda: now[0]
    limits = []
    for _ in range(windows):
        seconds = answer_time(window.limit)
        for _ in range(window.limit):
            window.observe(seconds)
        now[0] += seconds
        limits.append(window.limit)
    return limits


def test_a_queueing_provider_gets_few_in_flight_and_a_wan_provider_many():
    # A provider (or event loop) serving requests one after another, 0.2 ms each: more in flight only queue.
    limits = settle(SendWindow(512), lambda in_flight: 0.0002 * in_flight)
    assert max(limits[-100:]) <= INITIAL + BETA  # the least answer time is that of its first window
    # Over a WAN each answer takes 50 ms whatever the number in flight: the limit grows to the maximum.
    assert settle(SendWindow(512), lambda in_flight: 0.05)[-1] == 512
    # 50 ms away and 0.2 ms of this process's time per request: ~250 in flight keep it busy, more only queue.
    limits = settle(SendWindow(512), lambda in_flight: max(0.05, 0.0002 * in_flight))
    assert 250 <= min(limits[-100:]) and max(limits[-100:]) <= 250 + 3 * BETA  # near the need, not the maximum (512)


def test_the_gate_never_lets_more_than_its_limit_in_flight_and_hands_every_slot_back():
    window = SendWindow(16, initial=4)
    seen = []

    async def main():
        async def one():
            async with window.slot():
                seen.append((window.in_flight, window.limit))
                await asyncio.sleep(0)

        await asyncio.gather(*(one() for _ in range(500)))

    asyncio.run(main())
    assert all(in_flight <= limit for in_flight, limit in seen)
    assert window.in_flight == 0 and 4 <= window.limit <= 16


def test_a_cancelled_waiter_gives_its_place_back():
    window = SendWindow(1, minimum=1, initial=1)

    async def main():
        async with window.slot():
            waiter = asyncio.ensure_future(window.slot().__aenter__())
            await asyncio.sleep(0)
            waiter.cancel()
            await asyncio.sleep(0)
        async with window.slot():
            assert window.in_flight == 1

    asyncio.run(main())
    assert window.in_flight == 0
