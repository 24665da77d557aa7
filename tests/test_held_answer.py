"""A status read answered with the very bytes of the last one is not decoded again (``WdataHook._answer``).

Against the simulator over real HTTP, with refreshes that keep running; the models' ``from_api`` is counted.
"""

from __future__ import annotations

import asyncio
import collections

import pytest

from airflow_provider_wdata import models, protocol
from airflow_provider_wdata.exceptions import WdataApiError
from airflow_provider_wdata.hooks.wdata import WdataHook
from airflow_provider_wdata.testing import Fault, WdataSimulator
from tests.conftest import CANARY_SECRET, CANARY_TOKEN_PREFIX


@pytest.fixture
def running(monkeypatch):
    """The ``wdata_default`` connection, on a simulator whose refreshes run for an hour."""
    with WdataSimulator(
        client_secret=CANARY_SECRET, token_prefix=CANARY_TOKEN_PREFIX, polls_to_finish=None, seconds_to_finish=3600
    ) as sim:
        monkeypatch.setenv(*sim.airflow_conn_env("wdata_default"))
        yield sim


@pytest.fixture
def built(monkeypatch) -> collections.Counter:
    """How many models of each class were read from JSON."""
    counts: collections.Counter = collections.Counter()
    from_api = models._Model.from_api.__func__  # type: ignore[attr-defined]

    def counted(cls, data):
        counts[cls.__name__] += 1
        return from_api(cls, data)

    monkeypatch.setattr(models._Model, "from_api", classmethod(counted))
    return counts


def status_reads(sim) -> list:
    return [r for r in sim.requests if r.method == "GET" and "/refresh/" in r.path]


def test_an_unchanged_batch_is_read_from_json_once_and_every_read_still_reaches_the_service(running, built):
    hook = WdataHook()
    batch_id = hook.start_batch_refresh(["conn-1", "conn-2"]).batch_refresh_id
    built.clear()
    reads = [hook.get_batch_refresh(batch_id) for _ in range(4)]
    assert len(status_reads(running)) == 4, "each read is a request"
    assert all(read is reads[0] for read in reads) and reads[0].source_status == "running"
    assert built == {"RefreshBatch": 1, "ConnectionRun": 2}, "decoded and built once, for the first answer"


def test_a_changed_answer_another_batch_or_an_error_is_read_again(running, built):
    hook = WdataHook(max_attempts=1)
    first, second = (hook.start_batch_refresh([conn]).batch_refresh_id for conn in ("conn-1", "conn-2"))
    built.clear()
    a, b = hook.get_batch_refresh(first), hook.get_batch_refresh(second)
    assert (a.batch_refresh_id, b.batch_refresh_id) == (first, second), "the held answer is the request's own"
    assert hook.get_batch_refresh(first) is not a, "held: the last read only"
    running.add_fault(Fault(method="GET", path_contains=first, status=500, times=1))
    with pytest.raises(WdataApiError, match="HTTP 500"):
        hook.get_batch_refresh(first)
    held = hook.get_batch_refresh(first)
    assert held == a, "an error answer replaces nothing"
    running.add_fault(Fault(method="GET", path_contains=first, kind="malformed", times=1))
    with pytest.raises(WdataApiError, match="not JSON"):
        hook.get_batch_refresh(first)
    assert hook.get_batch_refresh(first) is held
    assert built["RefreshBatch"] == 3, "first, second, first again; then the held one, past both errors"


def test_async_reads_hold_the_last_answer_too_and_other_calls_are_always_read(running, built):
    async def main():
        hook = WdataHook()
        run = await hook.arefresh_connection("conn-1")
        built.clear()
        reads = [await hook.aget_connection_refresh("conn-1", run.job_id) for _ in range(3)]
        looked_up = [await hook.aget_wdata_connection("conn-1") for _ in range(2)]
        return reads, looked_up

    reads, looked_up = asyncio.run(main())
    assert reads[0] is reads[1] is reads[2] and reads[0].source_status == "running"
    assert looked_up[0] is not looked_up[1], "a lookup is not a status read: read each time"
    assert built["ConnectionRun"] == 1 + 2, "one status answer; each lookup carries the connection's last run"
    assert built["WdataConnection"] == 2


class Replaying:
    """The hook's own transport, but for the answers queued here, sent in its place one by one."""

    def __init__(self, real):
        self.real, self.queued, self.last = real, [], None

    def send(self, request, config, token):
        if self.queued:
            return self.queued.pop(0)
        self.last = self.real.send(request, config, token)
        return self.last

    def post_token(self, config):
        return self.real.post_token(config)


def test_the_same_bytes_are_the_held_answer_only_for_the_same_request_parser_and_http_status(running, built):
    hook = WdataHook(max_attempts=1)
    batch_id = hook.start_batch_refresh(["conn-1"]).batch_refresh_id
    replay = hook._transport = Replaying(hook._transport)
    held = hook.get_batch_refresh(batch_id)
    same = replay.last
    assert not [part for part in hook._held if isinstance(part, bytes) and len(part) > 16], "a digest, not the body"
    built.clear()

    replay.queued = [same._replace(status=500)]
    with pytest.raises(WdataApiError, match="HTTP 500"):
        hook.get_batch_refresh(batch_id)
    replay.queued = [same]
    elsewhere = hook.get_batch_refresh(batch_id, workspace_id="ws-2")
    assert elsewhere == held and elsewhere is not held, "another workspace's read is decoded: its own request"
    replay.queued = [same]
    assert hook._call(lambda body: "parsed again", protocol.get_batch_refresh, batch_id) == "parsed again"
    assert built["RefreshBatch"] == 1

    held = hook.get_batch_refresh(batch_id)  # the first request's answer is held again
    tokens = len(running.token_requests)
    replay.queued = [same._replace(status=401, body=b""), same]
    assert hook.get_batch_refresh(batch_id) is held, "a 401, a fresh token, then the same bytes: the held answer"
    assert len(running.token_requests) == tokens + 1
    assert built["RefreshBatch"] == 2
