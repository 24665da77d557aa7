"""A/B in ONE client process (not part of ``make bench``): triggers vs the bare loop, alternating phases.

Same heap, same imports, same simulator process: isolates the per-poll CPU difference from process-level
effects. ``python benchmarks/ab_inprocess.py --n 100 --interval 5 --rounds 3 [--patch MODULE]``
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import os
import shutil
import ssl
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_triggers import SimProcess, start_batches

TERMINAL = frozenset({"complete", "error", "cancelled"})


async def measure(coro_factory, interval: float, counter) -> tuple[float, int, float, int]:  # type: ignore[no-untyped-def]
    """Run a phase; CPU and polls over the whole phase and over its steady window (after every first poll)."""
    mark: dict[str, float] = {}

    async def steady() -> None:
        await asyncio.sleep(interval + 0.3)
        mark["cpu"], mark["polls"] = time.process_time(), counter()

    start = time.process_time()
    marker = asyncio.ensure_future(steady())
    await coro_factory()
    end = time.process_time()
    await marker
    return end - start, counter(), end - mark["cpu"], counter() - int(mark["polls"])


async def phase_triggers(ids: list[str], interval: float, polls: int) -> tuple[float, int, float, int]:
    from airflow_provider_wdata.triggers.wdata import BatchRefreshTrigger

    count = 0

    class Counted(BatchRefreshTrigger):
        async def afetch(self, hook):  # type: ignore[no-untyped-def]
            nonlocal count
            count += 1
            return await super().afetch(hook)

    async def one(i: int) -> None:
        await asyncio.sleep(i * interval / len(ids))
        trigger = Counted(batch_id=ids[i], poll_interval=interval, deadline=time.time() + 600)
        async with contextlib.aclosing(trigger.run()) as events:
            async for _ in events:
                break

    return await measure(lambda: asyncio.gather(*(one(i) for i in range(len(ids)))), interval, lambda: count)


async def phase_bare(
    ids: list[str], interval: float, sim: SimProcess, session, ctx, token, variant: str = "bare"
) -> tuple[float, int, float, int]:  # type: ignore[no-untyped-def]
    """The bare loop; ``bare+opts`` adds the provider's request options, ``bare+opts+wait_for`` and
    ``bare+opts+timeout_cm`` also bound each read (as the trigger did before it kept one timer per wait);
    ``transport`` and ``hook`` read through ``AsyncTransport.send`` and ``WdataHook._asend``."""
    import aiohttp

    count = 0
    prefix = sim.info["base_url"] + "/api/v1/connections/batch/refresh/"
    headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
    options: dict = {"headers": headers, "ssl": ctx}
    if "opts" in variant:
        options.update(
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=30.0, sock_read=30.0),
            allow_redirects=False,
            params=(),
            json=None,
            headers={**headers, "User-Agent": "airflow-provider-wdata/x apache-airflow/3 python/3"},
        )

    async def read(url: str) -> tuple[str, str]:
        async with session.request("GET", url, **options) as resp:
            body = (await resp.json())["body"]
        return body["sourceStatus"], body["destinationStatus"]

    if variant in ("transport", "hook"):
        from airflow_provider_wdata import protocol
        from airflow_provider_wdata.hooks.wdata import WdataHook
        from airflow_provider_wdata.tokens import TOKENS

        hook = WdataHook()
        config = await hook.aget_config()

        async def read(url: str) -> tuple[str, str]:
            request = protocol.get_batch_refresh(url.rsplit("/", 1)[1])
            if variant == "hook":
                body = (await hook._asend(request, config)).body
            else:
                token = await TOKENS.aget(config.token_key, functools.partial(hook._afetch_token, config), 60)
                raw = await hook._atransport.send(request, config, token)
                body = json.loads(raw.body)["body"]
            return body["sourceStatus"], body["destinationStatus"]

    async def status(url: str) -> tuple[str, str]:
        if "wait_for" in variant:
            return await asyncio.wait_for(read(url), 3600)
        if "timeout_cm" in variant:
            async with asyncio.timeout(3600):
                return await read(url)
        return await read(url)

    async def one(i: int) -> None:
        nonlocal count
        await asyncio.sleep(i * interval / len(ids))
        while True:
            s, d = await status(prefix + ids[i])
            count += 1
            if s in TERMINAL and d in TERMINAL:
                return
            await asyncio.sleep(interval)

    return await measure(lambda: asyncio.gather(*(one(i) for i in range(len(ids)))), interval, lambda: count)


async def main_async(args: argparse.Namespace, sim: SimProcess, workdir: Path) -> None:
    import aiohttp

    import airflow_provider_wdata.triggers.wdata  # noqa: F401

    ctx = ssl.create_default_context(cafile=str(sim.ca))
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=100))
    form = {
        "grant_type": "client_credentials",
        "client_id": sim.info["client_id"],
        "client_secret": sim.info["client_secret"],
    }
    async with session.post(sim.info["token_url"], data=form, ssl=ctx) as resp:
        token = (await resp.json())["access_token"]
    loop = asyncio.get_running_loop()
    rows = []
    names = ["ours", "bare", *args.variants]
    for r in range(args.rounds):
        for name in names:
            ids = await loop.run_in_executor(
                None, start_batches, sim, f"c-p{args.polls}", args.n, workdir / f"ids-{r}-{name}.txt"
            )
            ids = ids.read_text().split()
            await asyncio.sleep(0.5)
            if name == "ours":
                cpu, polls, scpu, spolls = await phase_triggers(ids, args.interval, args.polls)
            else:
                cpu, polls, scpu, spolls = await phase_bare(ids, args.interval, sim, session, ctx, token, name)
            rows.append((r, name, scpu / spolls * 1e6))
            print(
                f"round {r} {name}: steady {scpu / spolls * 1e6:.0f} us CPU per poll ({spolls} polls); "
                f"whole {cpu / polls * 1e6:.0f} us ({polls} polls)",
                flush=True,
            )
    for name in names:
        values = sorted(v for _, n, v in rows if n == name)
        print(f"{name}: steady µs/poll median {values[len(values) // 2]:.0f}, all {[round(v) for v in values]}")
    await session.close()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--interval", type=float, default=5.0)
    parser.add_argument("--polls", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--patch", default=None)
    parser.add_argument(
        "--variants", nargs="*", default=[], help="bare+opts, bare+opts+wait_for, bare+opts+timeout_cm, transport, hook"
    )
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="wdata-ab-"))
    (workdir / "airflow_home").mkdir()
    sim = SimProcess("ab", workdir)
    os.environ["AIRFLOW_HOME"] = str(workdir / "airflow_home")
    os.environ["AIRFLOW_CONN_WDATA_DEFAULT"] = sim.airflow_conn()
    if args.patch:
        for name in args.patch.split(","):
            __import__(name)
    try:
        asyncio.run(main_async(args, sim, workdir))
    finally:
        sim.close()
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
