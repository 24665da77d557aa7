"""The checked Airflow connection, shared by the hooks of one event loop (a triggerer's waits) for a short time.

Airflow's connection lookup costs more than a status read, and a triggerer that takes over hundreds of waits
would make it hundreds of times at once. A lookup in flight is shared: hooks that ask meanwhile await it. A
failed lookup is not: each of them makes its own, and raises its own error. A hook cancelled while it waits
leaves the lookup to the others; a lookup whose own hook is cancelled counts as failed.
"""

from __future__ import annotations

import asyncio
import time
import weakref
from collections.abc import Awaitable, Callable, Hashable

from airflow_provider_wdata.config import WdataConfig

# Per loop: key -> (the lookup's future, which holds None if it failed; when reuse ends, time.monotonic()).
_LOOPS: weakref.WeakKeyDictionary[
    asyncio.AbstractEventLoop, dict[Hashable, tuple[asyncio.Future[WdataConfig | None], float]]
] = weakref.WeakKeyDictionary()


async def shared_config(key: Hashable, look_up: Callable[[], Awaitable[WdataConfig]], seconds: float) -> WdataConfig:
    """The config under ``key`` in this loop, from ``look_up()`` once per ``seconds`` however many ask at once."""
    configs = _LOOPS.setdefault(asyncio.get_running_loop(), {})
    reused = configs.get(key)
    if reused is not None and reused[1] > time.monotonic():
        # Shielded: a waiter cancelled (its trigger ended) must not cancel the lookup the others are waiting on.
        config = await asyncio.shield(reused[0])
        if config is not None:
            return config
    looked_up: asyncio.Future[WdataConfig | None] = asyncio.get_running_loop().create_future()
    configs[key] = (looked_up, time.monotonic() + seconds)
    try:
        config = await look_up()
    except BaseException:
        looked_up.set_result(None)
        if configs.get(key, (None, 0.0))[0] is looked_up:
            del configs[key]
        raise
    looked_up.set_result(config)
    return config


def forget(key: Hashable) -> None:
    """Look ``key`` up again on its next use in this loop (its credentials or fields were refused)."""
    configs = _LOOPS.get(asyncio.get_running_loop())
    if configs is not None:
        configs.pop(key, None)
