"""What one waiting trigger keeps alive (not part of ``make bench``): objects, bytes, and where they come from.

N triggers are run to their first sleep with the network stubbed (a canned "running" answer), then the
heap is compared with the heap before: GC-tracked objects per trigger (what a full collection must walk),
tracemalloc bytes per trigger, and the top allocation sites and object types.

    .venv/bin/python benchmarks/micro_overhead.py  # CPU side
    .venv/bin/python benchmarks/memory_per_trigger.py [--n 2000] [--patch MODULE]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import gc
import os
import sys
import time
import tracemalloc

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import micro_overhead
from _scenario import rss_kb


async def main_async(n: int, top: int) -> None:
    from multidict import CIMultiDict

    from airflow_provider_wdata import transport
    from airflow_provider_wdata.protocol import RawResponse
    from airflow_provider_wdata.triggers.wdata import BatchRefreshTrigger

    body = micro_overhead.BODY
    headers = CIMultiDict({"Content-Type": "application/json", "Content-Length": str(len(body))})

    async def canned_send(self, request, config, token):  # type: ignore[no-untyped-def]
        await asyncio.sleep(0)
        return RawResponse(200, headers, body)

    async def canned_token(self, config):  # type: ignore[no-untyped-def]
        return RawResponse(200, headers, b'{"access_token": "tttttttttttttttttttttttttttttt", "expires_in": 3600}')

    transport.AsyncTransport.send = canned_send  # type: ignore[method-assign]
    transport.AsyncTransport.post_token = canned_token  # type: ignore[method-assign]

    polled = 0

    async def wait_one(i: int) -> None:
        nonlocal polled
        trigger = BatchRefreshTrigger(batch_id=f"batch-{i:06d}", poll_interval=3600, deadline=time.time() + 7200)
        async for _event in trigger.run():
            break

    # warm up: first-use imports, the token, the logger configuration
    warm = [asyncio.ensure_future(wait_one(-1 - i)) for i in range(50)]
    await asyncio.sleep(0.5)
    for task in warm:
        task.cancel()
    await asyncio.gather(*warm, return_exceptions=True)

    gc.collect()
    objects0 = len(gc.get_objects())
    rss0 = rss_kb()
    types0 = collections.Counter(type(o).__qualname__ for o in gc.get_objects())
    tracemalloc.start(12)
    snap0 = tracemalloc.take_snapshot()
    tasks = [asyncio.ensure_future(wait_one(i)) for i in range(n)]
    for _ in range(50):
        await asyncio.sleep(0.05)
    gc.collect()
    snap1 = tracemalloc.take_snapshot()
    tracemalloc.stop()
    objects1 = len(gc.get_objects())
    rss1 = rss_kb()
    types1 = collections.Counter(type(o).__qualname__ for o in gc.get_objects())
    alive = sum(1 for t in tasks if not t.done())

    print(f"{n} triggers waiting ({alive} alive): per trigger")
    print(f"  GC-tracked objects: {(objects1 - objects0) / n:.1f}")
    stats = snap1.compare_to(snap0, "filename")
    total = sum(s.size_diff for s in stats)
    print(f"  tracemalloc bytes:  {total / n:,.0f}")
    print(f"  RSS (KB, noisy):    {(rss1 - rss0) / n:.1f}")
    print("\ntop object types (+count per trigger):")
    for name, count in (types1 - types0).most_common(top):
        print(f"  {count / n:7.2f}  {name}")
    print("\ntop allocation files (bytes per trigger):")
    for stat in stats[:top]:
        print(f"  {stat.size_diff / n:8.0f}  {stat.traceback[0].filename.split('site-packages/')[-1]}")
    print("\ntop allocation lines (bytes per trigger):")
    for stat in snap1.compare_to(snap0, "lineno")[:top]:
        frame = stat.traceback[0]
        print(f"  {stat.size_diff / n:8.0f}  {frame.filename.split('site-packages/')[-1]}:{frame.lineno}")
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--patch", default=None)
    args = parser.parse_args()
    if args.patch:
        for name in args.patch.split(","):
            __import__(name)
    asyncio.run(main_async(args.n, args.top))
    return 0


if __name__ == "__main__":
    sys.exit(main())
