"""A download whose completeness cannot be shown is not taken as complete (issue 18, item 9)."""

from __future__ import annotations

import hashlib
import io

import pytest

from gip_airflow.exceptions import GipApiError
from tests.integration.hostile_http import CSV, HostileServer, Reply, Seen, hook_for

# -- item 9: a body whose completeness cannot be shown ------------------------------------------------


def test_close_delimited_download_that_differs_is_refused(monkeypatch):
    calls = []

    def route(seen: Seen) -> Reply:  # each answer ends early at a different place, without framing
        calls.append(seen)
        return Reply(200, CSV[: len(CSV) // (len(calls) + 1)], {"Content-Type": "text/csv"}, "close")

    with HostileServer(route) as server, hook_for(monkeypatch, server) as hook:
        with pytest.raises(GipApiError, match="complete") as info:
            hook.download_run_result("exp-1", "run-1", io.BytesIO())
    assert len(server.seen) >= 2
    assert "Content-Length" in str(info.value)


def test_close_delimited_download_is_accepted_when_two_copies_match(monkeypatch):
    with HostileServer(lambda seen: Reply(200, CSV, {"Content-Type": "text/csv"}, "close")) as server:
        with hook_for(monkeypatch, server) as hook:
            out = io.BytesIO()
            written = hook.download_run_result("exp-1", "run-1", out)
    assert out.getvalue() == CSV and written == len(CSV)
    assert len(server.seen) == 2


@pytest.mark.parametrize("framing", ["length", "chunked"])
def test_framed_download_is_fetched_once(monkeypatch, framing):
    with HostileServer(lambda seen: Reply(200, CSV, {"Content-Type": "text/csv"}, framing)) as server:
        with hook_for(monkeypatch, server) as hook:
            out = io.BytesIO()
            hook.download_run_result("exp-1", "run-1", out)
    assert hashlib.sha256(out.getvalue()).digest() == hashlib.sha256(CSV).digest()
    assert len(server.seen) == 1
