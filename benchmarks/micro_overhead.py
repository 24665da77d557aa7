"""The provider's own Python work per poll, with the network taken out (not part of ``make bench``).

Replaces ``AsyncTransport.send`` with one that returns a canned 200 answer (the simulator's batch body),
so what is left is what the provider adds around an HTTP exchange: retry loop, token cache, request
building, envelope and model parsing, decision. Each step is also timed alone. Compare with the bare
loop's own work per poll (``json.loads`` + two status checks).

    .venv/bin/python benchmarks/micro_overhead.py [--patch MODULE]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import sys
import tempfile
import time
from typing import Any

os.environ.setdefault("AIRFLOW_HOME", tempfile.mkdtemp(prefix="wdata-micro-"))
os.environ["AIRFLOW_CONN_WDATA_DEFAULT"] = json.dumps(
    {
        "conn_type": "wdata",
        "login": "sim-client",
        "password": "sim-secret",
        "host": "https://127.0.0.1:1/s/wdata/prep",
        "extra": {"token_url": "https://127.0.0.1:1/iam/v1/oauth2/token"},
    }
)

BODY = json.dumps(
    {
        "body": {
            "batchRefreshId": "3f2a6c1e-0000-4000-8000-000000000001",
            "childRefreshes": [
                {
                    "connectionId": "c-p3",
                    "jobId": "9d1e2b3c-0000-4000-8000-000000000002",
                    "sourceStatus": "running",
                    "destinationStatus": "running",
                    "error": None,
                    "created": "2026-01-01T00:00:00.000Z",
                    "createdBy": "sim-user@example.com",
                    "updated": "2026-01-01T00:00:01.000Z",
                    "sourceParameters": {},
                    "destinationParameters": {},
                    "sourceMetadata": {},
                    "destinationMetadata": {},
                    "workspaceId": "sim-workspace",
                    "sourceWorkspaceId": "sim-workspace",
                    "destinationWorkspaceId": "sim-workspace",
                }
            ],
            "sourceStatus": "running",
            "destinationStatus": "running",
            "error": None,
            "created": "2026-01-01T00:00:00.000Z",
            "createdBy": "sim-user@example.com",
            "updated": "2026-01-01T00:00:01.000Z",
        },
        "code": 200,
    }
).encode()


GARBAGE: dict[str, float] = {}


def timeit(label: str, fn: Any, n: int, results: dict[str, float]) -> None:
    for _ in range(min(n // 10, 500)):
        fn()
    gc.collect()
    gc.disable()  # time without collections, then count the cyclic garbage the calls left
    try:
        start = time.process_time()
        for _ in range(n):
            fn()
        results[label] = (time.process_time() - start) / n * 1e6
        GARBAGE[label] = gc.collect() / n
    finally:
        gc.enable()


async def atimeit(label: str, fn: Any, n: int, results: dict[str, float]) -> None:
    for _ in range(min(n // 10, 500)):
        await fn()
    gc.collect()
    gc.disable()
    try:
        start = time.process_time()
        for _ in range(n):
            await fn()
        results[label] = (time.process_time() - start) / n * 1e6
        GARBAGE[label] = gc.collect() / n
    finally:
        gc.enable()


async def main_async(n: int) -> dict[str, float]:
    from multidict import CIMultiDict

    from airflow_provider_wdata import protocol, transport
    from airflow_provider_wdata.decision import decide_batch
    from airflow_provider_wdata.hooks.wdata import WdataHook
    from airflow_provider_wdata.models import RefreshBatch
    from airflow_provider_wdata.protocol import RawResponse
    from airflow_provider_wdata.tokens import TOKENS
    from airflow_provider_wdata.triggers.wdata import BatchRefreshTrigger

    headers = CIMultiDict({"Content-Type": "application/json", "Content-Length": str(len(BODY))})

    async def canned_send(self: Any, request: Any, config: Any, token: Any) -> RawResponse:
        # What the real send does before the network: build method, URL, headers.
        protocol.request_headers(token.value)
        request.url(config.base_url)
        return RawResponse(200, headers, BODY)

    async def canned_token(self: Any, config: Any) -> RawResponse:
        return RawResponse(200, headers, json.dumps({"access_token": "t" * 40, "expires_in": 3600}).encode())

    transport.AsyncTransport.send = canned_send  # type: ignore[method-assign]
    transport.AsyncTransport.post_token = canned_token  # type: ignore[method-assign]

    results: dict[str, float] = {}
    trigger = BatchRefreshTrigger(batch_id="3f2a6c1e-0000-4000-8000-000000000001", deadline=time.time() + 3600)
    hook = WdataHook("wdata_default")
    config = await hook.aget_config()
    log = trigger.log
    batch = RefreshBatch.from_api(json.loads(BODY)["body"])
    request = protocol.get_batch_refresh(trigger.batch_id)
    raw = RawResponse(200, headers, BODY)

    async def one_poll() -> None:  # what run() does per poll, minus the sleep and the network
        trigger.check(await trigger.afetch(hook), log)

    await atimeit("whole poll: afetch + check (network stubbed)", one_poll, n, results)

    await atimeit(
        "hook.aget_batch_refresh (network stubbed)", lambda: hook.aget_batch_refresh(trigger.batch_id), n, results
    )
    await atimeit("hook._asend (retry loop + exchange + envelope)", lambda: hook._asend(request, config), n, results)

    async def one_try() -> None:
        import tenacity

        async for attempt in tenacity.AsyncRetrying(**hook._retrying_args(request)):
            with attempt:
                return

    await atimeit("tenacity.AsyncRetrying, one successful try", one_try, n, results)
    timeit("hook._retrying_args (builds the policy)", lambda: hook._retrying_args(request), n, results)
    await atimeit("TOKENS.aget (cached)", lambda: TOKENS.aget(config.token_key, None, 60), n, results)  # type: ignore[arg-type]
    timeit("config.token_key (sha256 of the secret)", lambda: config.token_key, n, results)
    timeit(
        "protocol.get_batch_refresh (build request)", lambda: protocol.get_batch_refresh(trigger.batch_id), n, results
    )
    timeit(
        "protocol.read_envelope (json.loads + checks)",
        lambda: protocol.read_envelope(request, raw, 1 << 24),
        n,
        results,
    )
    payload = json.loads(BODY)["body"]
    timeit("RefreshBatch.from_api", lambda: RefreshBatch.from_api(payload), n, results)
    timeit("decide_batch", lambda: decide_batch(batch), n, results)
    timeit("trigger.check (decide + log on change)", lambda: trigger.check(batch, log), n, results)
    timeit("aiohttp.ClientTimeout(total=30)", lambda: __import__("aiohttp").ClientTimeout(total=30.0), n, results)

    def bare() -> None:
        body = json.loads(BODY)["body"]
        _ = body["sourceStatus"] in ("complete", "error", "cancelled") and body["destinationStatus"] in (
            "complete",
            "error",
            "cancelled",
        )

    timeit("bare loop's own work: json.loads + status check", bare, n, results)
    return results


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("-n", type=int, default=20000)
    parser.add_argument("--patch", default=None)
    args = parser.parse_args()
    if args.patch:
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        for name in args.patch.split(","):
            __import__(name)
    results = asyncio.run(main_async(args.n))
    width = max(map(len, results))
    for label, us in results.items():
        print(f"{label:<{width}}  {us:8.1f} µs   {GARBAGE.get(label, 0):6.1f} cyclic-garbage objects/call")
    return 0


if __name__ == "__main__":
    sys.exit(main())
