"""The bare delivery limit: the project's own APNs and FCM clients sending straight to the simulators.

No API, queue or database: the same ``ApnsClient``/``FcmClient`` the delivery
workers use, with the same payload templates, in as many processes as the
delivery worker group runs, at several concurrencies; the best is the limit.
Runnable alone: ``python -m bench.limit``.
"""
from __future__ import annotations

import asyncio
import multiprocessing
import ssl
import time

from bench.harness import median
from devstack.credentials import make_credentials, register_with_simulators
from devstack.stack import Stack
from shared.outbound import OutboundPolicy
from shared.payload import Body, FcmTemplate, apns_push, fcm_message
from workers.delivery.apns import ApnsClient, ApnsRequest, ApnsTokenSigner
from workers.delivery.fcm import FcmAuth, FcmClient

CONCURRENCIES = (100, 300, 1000)


def _client_run(args: tuple) -> float:
    """One process: send ``count`` notifications (half APNs, half FCM) at ``concurrency``; answer the seconds taken."""
    stack_ports, ca_file, credentials_json, count, concurrency, connections = args
    from devstack.credentials import AppCredentials  # noqa: PLC0415 - in the child process

    credentials = AppCredentials.from_json(credentials_json)

    async def main() -> float:
        context = ssl.create_default_context(cafile=ca_file)
        context.set_alpn_protocols(["h2"])
        apns = ApnsClient(
            origin=f"https://127.0.0.1:{stack_ports['apns']}",
            signer=ApnsTokenSigner(key_id=credentials.key_id, team_id=credentials.team_id, private_key_pem=credentials.apns_key_pem),
            topic=credentials.bundle, ssl_context=context, connections=connections,
        )
        fcm = FcmClient(
            origin=f"https://127.0.0.1:{stack_ports['fcm']}", project_id=credentials.project_id,
            auth=FcmAuth(service_account_info=credentials.service_account, ca_file=ca_file,
                         outbound=OutboundPolicy.for_urls([credentials.service_account["token_uri"]])), ssl_context=context, connections=connections,
        )
        body = Body.from_json({"title": "limit", "body": "bare delivery"})
        push = apns_push(body, silent=False, high_priority=True)
        template = FcmTemplate(fcm_message(body, silent=False, high_priority=True), ttl_seconds=None)
        semaphore = asyncio.Semaphore(concurrency)
        failures = 0

        async def one(i: int) -> None:
            nonlocal failures
            async with semaphore:
                if i % 2:
                    answer = await apns.send(ApnsRequest(token=f"0{i:063x}", payload=push.payload, push_type=push.push_type, priority=push.priority))
                else:
                    answer = await fcm.send(template.request_body(f"limit-{i}"))
                failures += answer.status != 200

        await asyncio.gather(*(one(i) for i in range(200)))  # warm-up: connections, provider token, OAuth token
        started = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(count)))
        elapsed = time.perf_counter() - started
        await apns.close()
        await fcm.close()
        if failures:
            raise RuntimeError(f"{failures} sends failed in the limit run")
        return elapsed

    return asyncio.run(main())


def measure_limit(stack: Stack, *, notifications: int = 50_000, processes: int = 1, connections: int = 2, repeats: int = 3) -> dict:
    """Delivered per second at the best concurrency (median of ``repeats`` runs at each)."""
    credentials = make_credentials("bench-limit", fcm_origin=f"https://127.0.0.1:{stack.ports.fcm}", key_id="LIMITKEY01")
    register_with_simulators(
        credentials,
        apns_control=f"http://127.0.0.1:{stack.ports.apns_control}",
        fcm_control=f"http://127.0.0.1:{stack.ports.fcm_control}",
    )
    ports = {"apns": stack.ports.apns, "fcm": stack.ports.fcm}
    per_process = notifications // processes
    best = {}
    context = multiprocessing.get_context("spawn")
    with context.Pool(processes) as pool:
        for concurrency in CONCURRENCIES:
            rates = []
            for _ in range(repeats):
                args = (ports, str(stack.ca_file), credentials.to_json(), per_process, concurrency, connections)
                elapsed = pool.map(_client_run, [args] * processes)
                rates.append(per_process * processes / max(elapsed))
            best[concurrency] = median(rates)
    concurrency = max(best, key=best.get)
    return {"limit_per_s": best[concurrency], "limit_concurrency": concurrency}


def main() -> None:
    from bench.harness import bench_stack  # noqa: PLC0415

    stack = bench_stack()
    try:
        stack.start_mongo()
        stack.start_simulators()
        for name, value in measure_limit(stack, notifications=20_000, repeats=1).items():
            print(f"{name}: {value:.1f}", flush=True)
    finally:
        stack.stop_all()


if __name__ == "__main__":
    main()
