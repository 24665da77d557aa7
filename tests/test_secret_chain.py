"""No secret is reachable from an exception the provider raises.

An exception outlives its ``raise``: Airflow logs it, error trackers walk its chain and its frames' locals, and
it stays referenced from the task's frames. So not only its message, but everything reachable from it must be
free of the client secret and of the access tokens: its ``__cause__``/``__context__`` chain (a requests
exception's ``.request.body`` is the token form; an aiohttp exception's frames hold the request body), its
arguments and attributes, and the locals of every frame in its traceback (and in the chained ones'), through
any container.

Each scenario makes a token or API request fail for real (refused, dropped, timed out) against the simulator,
sync and async, then walks the whole object graph reachable from the exception the hook raised.

The walk does not enter the two objects built to hold a secret, :class:`WdataConfig` and
:class:`AccessToken` (every hook frame holds one, as any caller's frame holding a hook does): for them it checks
that their ``repr`` and ``str`` show no secret. Anything else that holds the secret fails the test, at a path
that says where (never the secret itself).
"""

from __future__ import annotations

import asyncio
import collections
import functools
import io
import types
import weakref
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
import requests

from airflow_provider_wdata import protocol
from airflow_provider_wdata.config import WdataConfig
from airflow_provider_wdata.exceptions import WdataError, WdataRefreshMayHaveStartedError, WdataTransportError
from airflow_provider_wdata.hooks.wdata import WdataHook
from airflow_provider_wdata.testing import Fault, WdataSimulator
from airflow_provider_wdata.tokens import AccessToken
from tests.conftest import CANARY_SECRET, CANARY_TOKEN_PREFIX

#: Objects built to hold a secret: not entered, but their repr and str must not show it.
SECRET_HOLDERS = (WdataConfig, AccessToken)
#: Bounds of one walk. Reaching them fails the test: a walk cut short proves nothing.
MAX_DEPTH = 60
MAX_OBJECTS = 300_000
#: The hook's timeout in the timed-out scenarios; the simulator answers later than that.
TIMEOUT = 0.25
SLOW = 1.5


# ---------------------------------------------------------------------------------------------- the walk


@dataclass
class Walk:
    found: list[str]  # paths to a secret, e.g. "error.__context__.request.body"
    visited: int
    kinds: collections.Counter[str]  # what was walked through: "exception", "frame", ...
    truncated: bool


def _attributes(obj: Any) -> Iterable[tuple[str, Any]]:
    """An object's instance attributes, from its __dict__ and its __slots__, without running properties."""
    try:
        namespace = object.__getattribute__(obj, "__dict__")
    except (AttributeError, TypeError):
        namespace = None
    if isinstance(namespace, dict):
        yield from namespace.items()
    for cls in type(obj).__mro__:
        slots = cls.__dict__.get("__slots__", ())
        for name in (slots,) if isinstance(slots, str) else slots:
            if name in ("__dict__", "__weakref__"):
                continue
            try:
                yield name, object.__getattribute__(obj, name)
            except AttributeError:
                continue


def _children(obj: Any, kinds: collections.Counter[str]) -> Iterable[tuple[str, Any]]:
    if isinstance(obj, BaseException):
        kinds["exception"] += 1
        yield ".args", obj.args
        yield ".__cause__", obj.__cause__
        yield ".__context__", obj.__context__
        yield ".__traceback__", obj.__traceback__
        yield ".__notes__", getattr(obj, "__notes__", None)
        yield from ((f".{name}", value) for name, value in _attributes(obj))
        return
    if isinstance(obj, types.TracebackType):
        yield f"<tb {obj.tb_frame.f_code.co_name}>", obj.tb_frame
        yield "", obj.tb_next  # the path names each frame: <tb raised><tb get_batch_refresh>...
        return
    if isinstance(obj, types.FrameType):
        # The frame's locals; not f_back (the callers beyond the exception's own frames: pytest's machinery)
        # nor f_globals (every module).
        kinds["frame"] += 1
        yield from ((f".{name}", value) for name, value in obj.f_locals.items())
        return
    if isinstance(obj, (types.GeneratorType, types.CoroutineType, types.AsyncGeneratorType)):
        frame = getattr(obj, "gi_frame", None) or getattr(obj, "cr_frame", None) or getattr(obj, "ag_frame", None)
        yield ".frame", frame
        return
    if isinstance(obj, (types.ModuleType, type)):
        return  # modules and classes reach the whole process, not this exception
    if isinstance(obj, types.FunctionType):
        for i, cell in enumerate(obj.__closure__ or ()):
            try:
                yield f"<closure {obj.__code__.co_freevars[i]}>", cell.cell_contents
            except ValueError:  # an empty cell
                continue
        yield ".__defaults__", obj.__defaults__
        yield ".__kwdefaults__", obj.__kwdefaults__
        return
    if isinstance(obj, types.MethodType):
        yield ".__self__", obj.__self__
        return
    if isinstance(obj, types.BuiltinMethodType):
        yield ".__self__", obj.__self__
        return
    if isinstance(obj, weakref.ref):
        yield "()", obj()
        return
    if isinstance(obj, functools.partial):
        yield ".func", obj.func
        yield ".args", obj.args
        yield ".keywords", obj.keywords
        return
    if isinstance(obj, (io.BytesIO, io.StringIO)):
        yield ".getvalue()", obj.getvalue()
        return
    if isinstance(obj, memoryview):
        yield ".tobytes()", obj.tobytes()
        return
    if isinstance(obj, Mapping):
        try:
            items = list(obj.items())
        except Exception:  # a mapping that cannot be listed: walk its attributes below
            items = []
        for i, (key, value) in enumerate(items):
            yield f"<key {i}>", key
            yield f"[{key!r}]" if isinstance(key, str) and len(key) <= 40 else f"[<key {i}>]", value
    elif isinstance(obj, (list, tuple, set, frozenset, collections.deque)):
        for i, item in enumerate(list(obj)):
            yield f"[{i}]", item
    yield from ((f".{name}", value) for name, value in _attributes(obj))


def _redacted(path: str, needles: list[str]) -> str:
    """A path is printed when the test fails: a dict key on it may be a secret itself."""
    for needle in needles:
        path = path.replace(needle, "***")
    return path


def walk(root: Any, needles: Iterable[str]) -> Walk:
    """Every path from ``root`` to a string or bytes holding one of ``needles``."""
    needles = [n for n in needles if n]
    raw = [n.encode() for n in needles]
    found: list[str] = []
    kinds: collections.Counter[str] = collections.Counter()
    visited: set[int] = set()
    keep: list[Any] = []  # keeps every visited object alive, so that no id is reused during the walk
    stack: list[tuple[Any, str, int]] = [(root, "error", 0)]
    truncated = False
    while stack:
        obj, path, depth = stack.pop()
        if obj is None or isinstance(obj, (bool, int, float, complex)) or id(obj) in visited:
            continue
        visited.add(id(obj))
        keep.append(obj)
        if len(visited) > MAX_OBJECTS or depth > MAX_DEPTH:
            truncated = True
            continue
        if isinstance(obj, str):
            if any(n in obj for n in needles):
                found.append(_redacted(path, needles))
            continue
        if isinstance(obj, (bytes, bytearray)):
            if any(n in obj for n in raw):
                found.append(_redacted(path, needles))
            continue
        if isinstance(obj, SECRET_HOLDERS):
            kinds["secret holder"] += 1
            if any(n in text for text in (repr(obj), str(obj)) for n in needles):
                found.append(_redacted(f"{path} (its repr or str)", needles))
            continue
        stack.extend((child, path + step, depth + 1) for step, child in _children(obj, kinds))
    return Walk(found, len(visited), kinds, truncated)


def needles_for(sim: WdataSimulator) -> list[str]:
    # The prefix too: a token the simulator issued after the list was taken is still found.
    return [CANARY_SECRET, CANARY_TOKEN_PREFIX, *sim.issued_tokens]


def assert_nothing_reachable(error: BaseException, sim: WdataSimulator) -> Walk:
    result = walk(error, needles_for(sim))
    # Whichever module raised it (transport, or the hook refining a transport error): no chain at all.
    chained = [f"{name}: {type(getattr(error, name)).__name__}" for name in ("__cause__", "__context__")]
    chained = [link for link in chained if not link.endswith(": NoneType")]
    assert not chained and not result.found, f"chained: {chained}; a secret at: {result.found}"
    assert not result.truncated, f"the walk hit its bounds after {result.visited} objects"
    assert result.kinds["frame"] >= 3, "the walk went through the traceback's frames"
    return result


# ---------------------------------------------------------------------------------------------- scenarios


def raised(call: Callable[[], Any]) -> BaseException:
    """The exception ``call`` raises. This frame holds nothing but ``call`` (a bound method of a hook)."""
    try:
        call()
    except WdataError as error:
        return error
    raise AssertionError("the call did not fail")


def raised_async(call: Callable[[], Any]) -> BaseException:
    return raised(lambda: asyncio.run(call()))


def hook_call(mode: str, what: str) -> Callable[[], Any]:
    hook = WdataHook(max_attempts=1, timeout=TIMEOUT)
    sync, coro = {
        "read": (hook.get_batch_refresh, hook.aget_batch_refresh),
        "start": (hook.start_batch_refresh, hook.astart_batch_refresh),
    }[what]
    argument = "b-1" if what == "read" else ["conn-1"]
    if mode == "sync":
        return functools.partial(raised, functools.partial(sync, argument))
    return functools.partial(raised_async, functools.partial(coro, argument))


def warm_token(sim: WdataSimulator) -> None:
    """A cached token, so that the next request is the API request itself, with its Authorization header."""
    WdataHook().get_wdata_connection("conn-1")
    assert len(sim.issued_tokens) == 1


#: Every matching request (aiohttp sends an idempotent request again, once, when its connection drops).
FAULTS = {
    "dropped": {"kind": "drop", "times": None},
    "timed-out": {"kind": "slow", "delay": SLOW, "times": None},
}
TOKEN_PATH = "oauth2/token"
READ_PATH = "/batch/refresh/"


@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize("failure", ["refused", "dropped", "timed-out"])
def test_a_failed_token_request_leaves_the_secret_nowhere_reachable(wdata_conn, mode, failure):
    if failure == "refused":
        wdata_conn.stop_listening()
    else:
        wdata_conn.add_fault(Fault(method="POST", path_contains=TOKEN_PATH, **FAULTS[failure]))

    error = hook_call(mode, "read")()

    assert isinstance(error, WdataTransportError) and str(error).startswith("Token request to ")
    assert error.request_sent is (failure != "refused")
    if failure != "refused":
        assert len(wdata_conn.token_requests) == 1, "the token request reached the simulator"
    assert wdata_conn.issued_tokens == [] or failure == "timed-out"
    assert_nothing_reachable(error, wdata_conn)


@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize("failure", ["refused", "dropped", "timed-out"])
def test_a_failed_api_request_leaves_no_token_reachable(wdata_conn, mode, failure):
    warm_token(wdata_conn)
    if failure == "refused":
        wdata_conn.stop_listening()
    else:
        wdata_conn.add_fault(Fault(method="GET", path_contains=READ_PATH, **FAULTS[failure]))

    error = hook_call(mode, "read")()

    assert isinstance(error, WdataTransportError)
    assert error.request_sent is (failure != "refused")
    reads = [r for r in wdata_conn.requests if READ_PATH in r.path]
    assert (reads == []) is (failure == "refused")
    for read in reads:  # the request carried the token the walk looks for
        assert read.headers["Authorization"] == f"Bearer {wdata_conn.issued_tokens[0]}"
    assert_nothing_reachable(error, wdata_conn)


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_dropped_start_leaves_no_token_reachable_from_the_may_have_started_error(wdata_conn, mode):
    warm_token(wdata_conn)
    wdata_conn.add_fault(Fault(method="POST", path_contains="batch/refresh", kind="drop"))

    error = hook_call(mode, "start")()

    assert isinstance(error, WdataRefreshMayHaveStartedError)
    assert_nothing_reachable(error, wdata_conn)


# ---------------------------------------------------------------------------------------------- the walk sees


def test_the_walk_finds_the_secret_in_a_raw_requests_error_chain(wdata_conn):
    """What the transport used to leave as ``__context__``: the secret is in ``.request.body``."""
    config = WdataHook().config
    wdata_conn.stop_listening()
    try:
        try:
            requests.post(config.token_url, data=protocol.token_request_form(config), timeout=5)
        except requests.ConnectionError:
            raise WdataTransportError("wrapped", request_sent=False) from None
    except WdataTransportError as error:
        result = walk(error, [CANARY_SECRET])
    assert ".__context__.request.body" in " ".join(result.found), result.found


def test_the_walk_finds_the_secret_in_a_raw_aiohttp_error_s_frames(wdata_conn):
    """aiohttp's exceptions hold no request, but their traceback's frames hold its body."""
    config = WdataHook().config
    wdata_conn.stop_listening()

    async def post() -> BaseException:
        async with aiohttp.ClientSession() as session:
            try:
                await session.post(config.token_url, data=protocol.token_request_form(config))
            except aiohttp.ClientError as error:
                return error
        raise AssertionError("the refused POST did not fail")

    error = asyncio.run(post())
    result = walk(error, [CANARY_SECRET])
    assert result.found and all(".__traceback__" in path for path in result.found), result.found


def test_the_walk_looks_into_secret_holders_reprs_and_stops_at_its_bounds():
    class Leaky(AccessToken):
        __slots__ = ()

        def __repr__(self) -> str:
            return f"Leaky({self.value})"

    assert walk(Leaky(CANARY_SECRET, 60, 0), [CANARY_SECRET]).found == ["error (its repr or str)"]
    assert walk(AccessToken(CANARY_SECRET, 60, 0), [CANARY_SECRET]).found == []
    deep: list[Any] = [CANARY_SECRET]
    for _ in range(MAX_DEPTH + 5):
        deep = [deep]
    assert walk(deep, [CANARY_SECRET]).truncated
