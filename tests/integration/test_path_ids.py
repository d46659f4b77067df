"""Ids are single, quoted URL path segments; unsafe ids fail before any request (issue 18, item 3)."""

from __future__ import annotations

import asyncio
import io

import pytest

from gip_airflow.exceptions import GipError
from gip_airflow.hooks.gip import GipAsyncHook
from tests.integration.hostile_http import DONE, HostileServer, Reply, gip_conn, hook_for

# -- item 3: ids are single, quoted path segments ------------------------------------------------


@pytest.mark.parametrize("bad", ["../../../../../other-ws/x", "r?x=1#frag", "..", ".", "a/b", "x#y", ""])
def test_unsafe_run_id_is_refused_before_any_request(monkeypatch, bad):
    with HostileServer(lambda seen: Reply(200, DONE)) as server, hook_for(monkeypatch, server) as hook:
        with pytest.raises(GipError, match="run_id") as info:
            hook.get_experiment_run("exp-1", bad)
        with pytest.raises(GipError, match="experiment_id"):
            hook.download_run_result(bad, "run-1", io.BytesIO())
    assert server.seen == []
    assert "path segment" in str(info.value) or "empty" in str(info.value)


def test_ids_are_quoted_as_one_segment(monkeypatch):
    with HostileServer(lambda seen: Reply(200, DONE)) as server, hook_for(monkeypatch, server) as hook:
        hook.get_experiment_run("exp 1", "r%2F..;x")
    assert server.paths() == ["/api/workspaces/ws-1/evals/experiments/exp%201/runs/r%252F..%3Bx"]


def test_unsafe_id_in_the_async_hook_is_refused_before_any_request(monkeypatch):
    async def scenario(server):
        monkeypatch.setenv("AIRFLOW_CONN_GIP_HOSTILE", gip_conn(server))
        async with await GipAsyncHook.from_conn_id("gip_hostile") as hook:
            await hook.get_experiment_run("../other", "run-1")

    with (
        HostileServer(lambda seen: Reply(200, DONE)) as server,
        pytest.raises(GipError, match="experiment_id"),
    ):
        asyncio.run(scenario(server))
    assert server.seen == []
