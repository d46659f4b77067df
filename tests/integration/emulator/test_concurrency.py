"""Many clients at once: 200 concurrent pollers of run status, all answered without errors."""

from __future__ import annotations

import asyncio
import ssl
import statistics
import time

import httpx

from gip_airflow.api import Paths

CLIENTS = 200
POLLS = 5


async def poll_all(
    base_url: str, headers: dict[str, str], paths: list[str]
) -> tuple[list[float], list[str], float]:
    tls = ssl.create_default_context()  # one context for all clients (plain HTTP; avoids 200 cert loads)
    latencies: list[float] = []
    problems: list[str] = []

    async def client(index: int) -> None:
        async with httpx.AsyncClient(base_url=base_url, headers=headers, timeout=60, verify=tls) as http:
            for poll in range(POLLS):
                started = time.perf_counter()
                try:
                    answer = await http.get(paths[(index + poll) % len(paths)])
                except httpx.HTTPError as exc:
                    problems.append(f"{type(exc).__name__}: {exc}")
                    continue
                latencies.append(time.perf_counter() - started)
                if answer.status_code != 200 or "status" not in answer.json():
                    problems.append(f"{answer.status_code}: {answer.text[:100]}")

    started = time.perf_counter()
    await asyncio.gather(*(client(i) for i in range(CLIENTS)))
    return latencies, problems, time.perf_counter() - started


def test_200_clients_polling_run_status(gip):
    exp, ev = gip.dataset_experiment(), gip.evaluator()
    gip.emu.set_run_speed(run_seconds=1.0)
    runs = [gip.start_run(exp, ev, display_name=f"polled {i}")["id"] for i in range(4)]
    paths = [Paths.run(gip.ws, exp, run_id) for run_id in runs]
    latencies, problems, wall = asyncio.run(poll_all(gip.emu.base_url, gip.emu.headers(), paths))
    assert problems == []
    assert len(latencies) == CLIENTS * POLLS
    ordered = sorted(latencies)
    print(
        f"\n{CLIENTS} clients x {POLLS} polls: {len(latencies) / wall:.0f} req/s, "
        f"p50 {statistics.median(ordered) * 1000:.1f} ms, "
        f"p95 {ordered[int(len(ordered) * 0.95)] * 1000:.1f} ms, "
        f"max {ordered[-1] * 1000:.1f} ms, wall {wall:.2f} s"
    )
    for run_id in runs:
        assert gip.wait(exp, run_id)["status"] == "DONE"
