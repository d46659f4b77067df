"""Emulator at scale (``make perf``): a 100k-item run, a 100 MB download.

Numbers are printed, not asserted on time; memory of the emulator process is checked to stay flat.
"""

from __future__ import annotations

import time

import psutil
import pytest

pytestmark = pytest.mark.benchmark


def rss_mb(emu) -> float:
    return psutil.Process(emu.process.pid).memory_info().rss / 2**20 if emu.process else float("nan")


def test_100k_item_dataset_run(gip):
    exp = gip.dataset_experiment("synthetic-chat-100k")
    ev = gip.evaluator()
    before = rss_mb(gip.emu)
    started = time.perf_counter()
    run = gip.run_done(exp, ev)
    ran = time.perf_counter() - started
    peak = rss_mb(gip.emu)
    started = time.perf_counter()
    size = 0
    with gip.http.stream(
        "GET", f"/api/workspaces/{gip.ws}/evals/experiments/{exp}/runs/{run['id']}/download"
    ) as r:
        for chunk in r.iter_bytes():
            size += len(chunk)
    fetched = time.perf_counter() - started
    info = gip.emu.run(run["id"])
    print(
        f"\n100k-item dataset run: {info['target_count']} targets in {ran:.1f} s "
        f"({info['target_count'] / ran:.0f} items/s, read over HTTP in pages of 100); "
        f"CSV {size / 2**20:.1f} MiB downloaded at {size / 2**20 / fetched:.0f} MiB/s; "
        f"emulator RSS {before:.0f} -> {peak:.0f} MiB"
    )
    assert info["target_count"] == 98_000
    assert peak - before < 100


def test_100mb_synthetic_download(gip):
    run = gip.emu.synthetic_run(rows=100_000, row_bytes=1000)
    before = rss_mb(gip.emu)
    started = time.perf_counter()
    size = 0
    with gip.http.stream("GET", run["download_path"]) as r:
        for chunk in r.iter_bytes():
            size += len(chunk)
    took = time.perf_counter() - started
    after = rss_mb(gip.emu)
    print(
        f"\nsynthetic CSV: {size / 2**20:.0f} MiB in {took:.2f} s ({size / 2**20 / took:.0f} MiB/s); "
        f"emulator RSS {before:.0f} -> {after:.0f} MiB"
    )
    assert size > 95_000_000
    assert after - before < 50
