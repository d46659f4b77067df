"""The triggerer load harness itself: it reads its child's output throughout, and a stalled loop that spent
little CPU counts as blocked unless the thread was waiting for a CPU."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap
import time

from tests.perf.triggerer.trigger_load import BLOCKED_THRESHOLD, Drain, Watchdog

CHATTY_CHILD = textwrap.dedent(
    """
    import sys, time
    print("POLLING", flush=True)
    started = time.monotonic()
    for i in range(20_000):  # ~2 MB of log lines: 30 times a pipe's buffer
        sys.stdout.write(f"trigger {i:05d} fired: status DONE, " + "x" * 60 + "\\n")
    sys.stdout.flush()
    print(round(time.monotonic() - started, 3), flush=True)
    """
)


def test_drain_reads_the_child_output_after_the_line_it_waited_for():
    hold = 2.0
    proc = subprocess.Popen([sys.executable, "-c", CHATTY_CHILD], stdout=subprocess.PIPE, text=True)
    try:
        drain = Drain(proc.stdout)
        assert drain.wait_for("POLLING", timeout=30)
        time.sleep(hold)  # what the load test does after POLLING: hold, release runs; the child writes on
        proc.wait(timeout=30)
        lines = drain.output(timeout=10).splitlines()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert len(lines) == 20_002
    assert float(lines[-1]) < hold / 2  # its writes never waited for the reader


def test_drain_reports_a_child_that_ends_without_the_line():
    proc = subprocess.Popen([sys.executable, "-c", "print('boom')"], stdout=subprocess.PIPE, text=True)
    drain = Drain(proc.stdout)
    assert not drain.wait_for("POLLING", timeout=30)
    proc.wait(timeout=30)
    assert drain.lines == ["boom\n"]


def test_watchdog_tells_a_blocking_call_from_loop_work():
    async def scenario() -> Watchdog:
        dog = Watchdog(lambda start, end: 0.0, warn=False)
        task = asyncio.create_task(dog.run())
        await asyncio.sleep(0.3)
        time.sleep(0.6)  # the loop thread stuck in a blocking call: no CPU, no wait for a CPU
        await asyncio.sleep(0.3)
        cpu = time.thread_time()
        while time.thread_time() - cpu < 0.35:  # work on the loop
            pass
        await asyncio.sleep(0.3)
        dog.stop.set()
        await task
        return dog

    dog = asyncio.run(scenario())
    off_cpu = dog.blocked_off_cpu()
    work = dog.blocked_by_loop_work()
    report = json.dumps({"lags": dog.lags, "busy": dog.busy, "off_cpu": dog.off_cpu})
    assert sum(off_cpu) == 1, report  # the blocking call, once
    assert sum(work) == 1, report  # the busy stretch, once
    (blocking,) = [i for i, b in enumerate(off_cpu) if b]
    (busy,) = [i for i, b in enumerate(work) if b]
    assert blocking < busy and not work[blocking] and not off_cpu[busy], report
    assert dog.off_cpu[blocking] > 0.5 and dog.busy[busy] > BLOCKED_THRESHOLD, report
