"""The retry policy: in-process tries, Retry-After, hand-back to the queue."""
import asyncio

from workers.delivery.answer import ProviderAnswer
from workers.delivery.http2 import TransportError
from workers.delivery.outcomes import Outcome, classify_apns
from workers.delivery.retry import RetryPolicy, deliver_with_retries

FAST = RetryPolicy(in_process_tries=3, max_in_process_wait=0.5, max_backoff=300, initial_backoff=0.001)


def run(answers, policy=FAST, first_attempt=0):
    calls = []

    async def send():
        calls.append(1)
        answer = answers[min(len(calls), len(answers)) - 1]
        if isinstance(answer, Exception):
            raise answer
        return answer

    return asyncio.run(deliver_with_retries(send, classify_apns, policy, first_attempt=first_attempt)), len(calls)


def test_transient_answers_are_retried_in_process_until_sent():
    (outcome, answer, tries, requeue_after), calls = run([ProviderAnswer(503), ProviderAnswer(500), ProviderAnswer(200)])
    assert (outcome, tries, requeue_after, calls) == (Outcome.SENT, 3, None, 3)


def test_final_answers_are_not_retried():
    (outcome, _answer, tries, requeue_after), calls = run([ProviderAnswer(410, "Unregistered")])
    assert (outcome, tries, requeue_after, calls) == (Outcome.DEAD_TOKEN, 1, None, 1)


def test_after_the_last_in_process_try_the_delivery_goes_back_to_the_queue():
    (outcome, _answer, tries, requeue_after), calls = run([ProviderAnswer(503)])
    assert outcome is Outcome.TRANSIENT and tries == calls == 3 and requeue_after > 0


def test_a_long_retry_after_is_not_slept_in_process_but_handed_back():
    (outcome, answer, tries, requeue_after), calls = run([ProviderAnswer(429, "TooManyRequests", retry_after=30)])
    assert outcome is Outcome.THROTTLED and calls == tries == 1 and requeue_after == 30


def test_transport_errors_are_transient_and_retried():
    (outcome, answer, tries, _requeue_after), calls = run([TransportError("reset"), ProviderAnswer(200)])
    assert outcome is Outcome.SENT and calls == 2


def test_backoff_grows_with_the_attempts_of_earlier_runs_and_is_capped():
    policy = RetryPolicy(initial_backoff=0.1, max_backoff=300)
    assert policy.backoff(1) < 1 < policy.backoff(6) < policy.backoff(10) <= 300
    assert policy.backoff(40) == 300
    (_outcome, _answer, _tries, late), _ = run([ProviderAnswer(503)], policy=FAST, first_attempt=12)
    assert late > 3


def test_retry_after_wins_over_backoff_but_is_capped():
    policy = RetryPolicy(max_backoff=60)
    assert policy.wait_after(1, ProviderAnswer(429, retry_after=5)) == 5
    assert policy.wait_after(1, ProviderAnswer(429, retry_after=5000)) == 60
