"""Retries of one delivery: a few short tries in-process, longer waits back to the queue.

Backoff is tenacity's exponential backoff with jitter, counted over all the
delivery's attempts (also those of earlier runs), and a provider's
``Retry-After`` wins over it. A retryable answer whose next wait is longer
than ``max_in_process_wait``, or the last in-process try, ends the loop with
``requeue_after``: the caller re-enqueues the delivery with that delay so the
worker is free meanwhile.
"""
from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    retry_if_result,
    stop_after_attempt,
    wait_exponential_jitter,
)

from workers.delivery.answer import ProviderAnswer
from workers.delivery.http2 import TransportError
from workers.delivery.outcomes import Outcome


@dataclass(frozen=True)
class RetryPolicy:
    """How a delivery is retried.

    Attributes:
      in_process_tries: attempts in one run before the delivery goes back to the queue.
      max_in_process_wait: the longest wait slept in-process (seconds).
      max_backoff: the longest backoff between two attempts (seconds).
      initial_backoff: the first backoff (seconds); it doubles per attempt, plus jitter.
    """

    in_process_tries: int = 3
    max_in_process_wait: float = 2.0
    max_backoff: float = 300.0
    initial_backoff: float = 0.1

    def backoff(self, attempt: int) -> float:
        """Seconds to wait after the ``attempt``-th failed attempt (1 for the first), with jitter."""
        strategy = wait_exponential_jitter(multiplier=self.initial_backoff, max=self.max_backoff, jitter=self.initial_backoff)
        state = RetryCallState(None, None, (), {})
        state.attempt_number = max(1, attempt)
        return min(self.max_backoff, strategy(state))

    def wait_after(self, attempt: int, answer: ProviderAnswer | None) -> float:
        """The wait before the next attempt: ``Retry-After`` if the provider said, else the backoff."""
        if answer is not None and answer.retry_after is not None:
            return min(self.max_backoff, answer.retry_after)
        return self.backoff(attempt)


Send = Callable[[], Awaitable[ProviderAnswer]]
Classify = Callable[[ProviderAnswer | None], Outcome]


async def deliver_with_retries(send: Send, classify: Classify, policy: RetryPolicy, *, first_attempt: int = 0):
    """Send with in-process retries.

    Answers ``(outcome, answer, tries, requeue_after)``: the last outcome and
    answer (None when the last try got no answer), the tries made in this call,
    and, for a retryable outcome, the seconds to wait before the next attempt.
    """

    # The first try outside tenacity: most sends succeed at once, and building the
    # retrying machinery for each of them is a measurable share of a worker's CPU.
    first_error: TransportError | None = None
    try:
        answer = await send()
    except TransportError as error:
        first_error = error
    else:
        outcome = classify(answer)
        if not outcome.retryable:
            return outcome, answer, 1, None
    if policy.in_process_tries <= 1 or policy.wait_after(first_attempt + 1, None if first_error else answer) > policy.max_in_process_wait:
        last = None if first_error else answer
        return (Outcome.TRANSIENT if first_error else outcome), last, 1, policy.wait_after(first_attempt + 1, last)
    first_attempt += 1
    policy = replace(policy, in_process_tries=policy.in_process_tries - 1)
    await asyncio.sleep(policy.wait_after(first_attempt, None if first_error else answer))

    async def attempt() -> tuple[Outcome, ProviderAnswer | None]:
        answer = await send()
        return classify(answer), answer

    def total_attempts(state: RetryCallState) -> int:
        return first_attempt + state.attempt_number

    def wait(state: RetryCallState) -> float:
        answer = None if state.outcome.failed else state.outcome.result()[1]
        return policy.wait_after(total_attempts(state), answer)

    def too_long(state: RetryCallState) -> bool:
        return (state.upcoming_sleep or 0.0) > policy.max_in_process_wait

    retrying = AsyncRetrying(
        retry=retry_if_result(lambda result: result[0].retryable) | retry_if_exception_type(TransportError),
        wait=wait,
        stop=stop_after_attempt(max(1, policy.in_process_tries)) | too_long,
        retry_error_callback=lambda state: state,
    )
    result = await retrying(attempt)
    if not isinstance(result, RetryCallState):
        return result[0], result[1], 1 + retrying.statistics["attempt_number"], None
    state = result
    answer = None if state.outcome.failed else state.outcome.result()[1]
    outcome = Outcome.TRANSIENT if state.outcome.failed else state.outcome.result()[0]
    return outcome, answer, 1 + state.attempt_number, policy.wait_after(total_attempts(state), answer)
