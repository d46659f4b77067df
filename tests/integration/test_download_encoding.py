"""Downloads ask for identity encoding and decode a compressed answer anyway (issue 18, item 6)."""

from __future__ import annotations

import gzip
import io

import pytest

from tests.integration.hostile_http import CSV, HostileServer, Reply, Seen, hook_for

# -- item 6: compressed downloads -----------------------------------------------------------------


@pytest.mark.parametrize("framing", ["length", "chunked"])
def test_gzip_encoded_download_is_written_decoded(monkeypatch, framing):
    def route(seen: Seen) -> Reply:  # a server (or proxy) that compresses whatever was asked
        return Reply(
            200, gzip.compress(CSV), {"Content-Encoding": "gzip", "Content-Type": "text/csv"}, framing
        )

    with HostileServer(route) as server, hook_for(monkeypatch, server) as hook:
        out = io.BytesIO()
        hook.download_run_result("exp-1", "run-1", out)
    assert out.getvalue() == CSV
    assert server.seen[0].headers.get("Accept-Encoding") == "identity"
