"""Drive many ``GipExperimentRunTrigger`` instances in ONE asyncio event loop, like one triggerer process.

Run as ``python -m tests.perf.triggerer.trigger_load RUNS.json`` with ``AIRFLOW_CONN_GIP_DEFAULT`` set. The
file names the runs (experiment id, run id) to wait for. Like a triggerer process, it has Airflow's
triggerer loaded but no GIP module: the trigger class is imported by its class path on the loop when
the first trigger is created (as Airflow's ``TriggerRunner.create_triggers`` does), and whatever the
triggers import later is recorded with the thread that imported it. The loop runs in asyncio debug mode (slow
callbacks over ``--slow`` seconds are reported by asyncio) next to a copy of Airflow's triggerer watchdog
(sleep 0.1 s, warn when the wake-up is more than 0.2 s late, with the triggerer's own words). Prints
``POLLING`` once every trigger has polled, and a JSON report on the last line when every trigger has
fired (or at ``--deadline``): events by status, polls, CPU seconds and RSS, loop lags, slow callbacks.

A late wake-up has four possible causes, told apart here with the loop thread's CPU time and its time
waiting for a CPU (``/proc/self/task/<tid>/schedstat``): the OS running other processes (the thread was
runnable but waited for a CPU), CPython's garbage collector (its pauses are timed with ``gc.callbacks``),
work on the loop itself — trigger code keeping it busy (``blocked_by_loop_work``), or the loop thread
stuck in a blocking call, such as ``write()`` to a full pipe, with little CPU and no wait for a CPU
(``blocked_off_cpu``). Only the first two are the machine's doing; a stall with little CPU is not
harmless unless the thread was waiting for a CPU.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib
import json
import logging
import resource
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

#: Airflow 3.3's ``[triggerer] blocked_main_thread_warning_threshold`` default.
BLOCKED_THRESHOLD = 0.2
BLOCKED_WORDS = "Triggerer's async thread was blocked for"


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def _sched(tid: int) -> tuple[float, float] | None:
    """A thread's (seconds on a CPU, seconds runnable but waiting for one), or None where unknown."""
    try:
        with open(f"/proc/self/task/{tid}/schedstat") as f:
            on_cpu, waiting, _ = f.read().split()
    except (OSError, ValueError):
        return None
    return int(on_cpu) / 1e9, int(waiting) / 1e9


class Watchdog:
    """Airflow's ``TriggerRunner.block_watchdog`` (sleep 0.1 s, warn when the wake-up is more than 0.2 s
    late, with the triggerer's words), plus why each wake-up was late: the loop thread's CPU time (GC
    pauses excluded) and its wait for a CPU in the same interval. Runs as a task on the loop it watches.
    """

    def __init__(self, gc_time: Callable[[float, float], float], *, warn: bool = True) -> None:
        self.gc_time = gc_time
        self.warn = warn
        self.stop = asyncio.Event()
        self.lags: list[float] = []
        self.blocked: list[str] = []
        #: per interval: loop CPU without GC, end (monotonic), time neither on a CPU nor waiting for one
        self.busy: list[float] = []
        self.busy_at: list[float] = []
        self.off_cpu: list[float] = []

    async def run(self) -> None:
        tid = threading.get_native_id()
        while not self.stop.is_set():
            last, last_cpu, last_sched = time.monotonic(), time.thread_time(), _sched(tid)
            await asyncio.sleep(0.1)
            now = time.monotonic()
            elapsed, cpu, sched = now - last, time.thread_time() - last_cpu, _sched(tid)
            # Waiting for a CPU is the machine's doing; unknown counts as none (a stall is not excused).
            waited = sched[1] - last_sched[1] if sched and last_sched else 0.0
            self.lags.append(elapsed - 0.1)
            self.busy.append(cpu - self.gc_time(last, now))
            self.busy_at.append(now)
            self.off_cpu.append(max(0.0, elapsed - cpu - waited))
            if elapsed > BLOCKED_THRESHOLD:
                self.blocked.append(
                    f"{BLOCKED_WORDS} {elapsed:.2f} seconds (loop thread CPU {cpu:.2f} s, "
                    f"waiting for a CPU {waited:.2f} s)"
                )
                if self.warn:
                    print(self.blocked[-1], file=sys.stderr, flush=True)

    def blocked_by_loop_work(self) -> list[bool]:
        """Per interval: work on the loop (its CPU, GC excluded) went past the warning threshold."""
        return [c > BLOCKED_THRESHOLD for c in self.busy]

    def blocked_off_cpu(self) -> list[bool]:
        """Per interval: the loop was late, and spent more than the threshold neither on a CPU nor waiting
        for one (its 0.1 s sleep included): stuck in a blocking call, not slowed down by the machine."""
        return [
            lag > BLOCKED_THRESHOLD - 0.1 and off > BLOCKED_THRESHOLD
            for lag, off in zip(self.lags, self.off_cpu, strict=True)
        ]


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class SlowCallbacks(logging.Handler):
    """Collects asyncio debug mode's "Executing <...> took 0.123 seconds" warnings."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.durations: list[float] = []
        self.ends: list[float] = []
        self.samples: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if " took " in message and message.endswith(" seconds"):
            self.durations.append(float(message.rsplit(" took ", 1)[1].split()[0]))
            self.ends.append(time.monotonic())
            self.samples.append(f"{message[:160]} ... {message[-40:]}")


def module_name(filename: str) -> str:
    """``.../site-packages/anyio/streams/tls.py`` -> ``anyio.streams.tls`` (repo files likewise)."""
    for root in sorted((p for p in sys.path if p), key=len, reverse=True):
        if filename.startswith(root.rstrip("/") + "/"):
            filename = filename[len(root.rstrip("/")) + 1 :]
            break
    return filename.removesuffix(".py").removesuffix("/__init__").replace("/", ".")


class CallbackCpu:
    """The loop thread's CPU time in every callback the loop runs, GC pauses inside it excluded.

    That is what one step of a trigger costs the loop whatever else the machine runs at the time; wall
    time (asyncio's slow-callback report, Airflow's watchdog) also counts the OS running other processes.
    """

    def __init__(self, gc_seconds: Callable[[], float]) -> None:
        self.gc_seconds = gc_seconds
        self.slowest = 0.0
        self.sample = ""

    def install(self, loop_thread: int) -> None:
        timer, original = self, asyncio.events.Handle._run

        def run(handle: asyncio.Handle) -> None:
            if threading.get_ident() != loop_thread:
                return original(handle)
            cpu, gc_before = time.thread_time(), timer.gc_seconds()
            try:
                return original(handle)
            finally:
                spent = time.thread_time() - cpu - (timer.gc_seconds() - gc_before)
                if spent > timer.slowest:
                    owner = getattr(handle._callback, "__self__", None)  # type: ignore[attr-defined]
                    timer.slowest = spent
                    timer.sample = repr(owner if isinstance(owner, asyncio.Task) else handle)[:240]

        asyncio.events.Handle._run = run  # type: ignore[method-assign]


class Drain:
    """Read a child's stdout to the end in a thread, from its start to its exit.

    A child whose stdout is a pipe nobody reads blocks in ``write()`` once the 64 KB pipe buffer is
    full: a trigger loop then stalls whenever its triggers log. :meth:`wait_for` waits for a line.
    """

    def __init__(self, stream: Any) -> None:
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self._ended = False
        self._thread = threading.Thread(target=self._read, args=(stream,), name="drain-stdout", daemon=True)
        self._thread.start()

    def _read(self, stream: Any) -> None:
        try:
            for line in stream:
                with self._changed:
                    self.lines.append(line)
                    self._changed.notify_all()
        finally:
            with self._changed:
                self._ended = True
                self._changed.notify_all()

    def wait_for(self, text: str, timeout: float) -> bool:
        """True once a line equal to ``text`` (stripped) was read; False at the end of output or timeout."""
        deadline = time.monotonic() + timeout
        seen = 0
        with self._changed:
            while True:
                if any(line.strip() == text for line in self.lines[seen:]):
                    return True
                seen = len(self.lines)
                left = deadline - time.monotonic()
                if self._ended or left <= 0:
                    return False
                self._changed.wait(left)

    def output(self, timeout: float) -> str:
        """Everything the child wrote, once its stdout is closed."""
        self._thread.join(timeout)
        with self._changed:
            return "".join(self.lines)


TRIGGER_CLASSPATH = "gip_airflow.triggers.gip.GipExperimentRunTrigger"


async def main(args: argparse.Namespace, runs: list[dict[str, str]]) -> dict[str, Any]:
    import httpx

    loop = asyncio.get_running_loop()
    loop.slow_callback_duration = args.slow
    slow = SlowCallbacks()
    logging.getLogger("asyncio").addHandler(slow)
    loop_thread = threading.get_ident()
    imports: list[tuple[str, bool]] = []  # (module, imported on the loop thread)

    def on_audit(event: str, args: tuple[Any, ...]) -> None:
        # Every module body importlib runs, however the import was asked for (statement, import_module).
        if event == "exec" and getattr(args[0], "co_name", "") == "<module>":
            filename = args[0].co_filename
            if not filename.startswith("<"):
                imports.append((module_name(filename), threading.get_ident() == loop_thread))

    sys.addaudithook(on_audit)

    # Status polls counted at the HTTP client (patching the hook would import it before the triggers do).
    polls: Counter[str] = Counter()
    original = httpx.AsyncClient.send

    async def counting(self: httpx.AsyncClient, request: httpx.Request, **kwargs: Any) -> httpx.Response:
        if request.method == "GET" and "/runs/" in request.url.path:
            polls[request.url.path.rsplit("/", 1)[1]] += 1
        return await original(self, request, **kwargs)

    httpx.AsyncClient.send = counting  # type: ignore[method-assign]

    stop = asyncio.Event()

    peak = [_rss()]

    def sample_rss() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], _rss())
            time.sleep(0.2)

    threading.Thread(target=sample_rss, daemon=True).start()
    events: Counter[str] = Counter()
    fired_at: list[float] = []

    async def wait_for(trigger: Any) -> None:
        async for event in trigger.run():
            events[event.payload["status"]] += 1
            fired_at.append(time.monotonic())

    gc_pauses: list[tuple[int, float, float]] = []  # (generation, start, end) in monotonic seconds
    gc_started = [0.0]

    gc_total = [0.0]

    def on_gc(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            gc_started[0] = time.monotonic()
        else:
            gc_pauses.append((info["generation"], gc_started[0], time.monotonic()))
            gc_total[0] += gc_pauses[-1][2] - gc_started[0]

    def gc_time(start: float, end: float) -> float:
        return sum(max(0.0, min(end, e) - max(start, b)) for _, b, e in gc_pauses)

    gc.callbacks.append(on_gc)
    watchdog = Watchdog(gc_time)
    callback_cpu = CallbackCpu(lambda: gc_total[0])
    callback_cpu.install(loop_thread)
    rss_before, cpu_before, started = _rss(), _cpu(), time.monotonic()
    dog = asyncio.create_task(watchdog.run())
    end_time = time.time() + args.deadline
    tasks = []
    for r in runs:  # as Airflow's TriggerRunner.create_triggers does: one at a time, yielding in between
        await asyncio.sleep(0)
        module, name = TRIGGER_CLASSPATH.rsplit(".", 1)
        trigger_class = getattr(importlib.import_module(module), name)
        await asyncio.sleep(0)
        trigger = trigger_class(
            experiment_id=r["experiment_id"],
            run_id=r["run_id"],
            end_time=end_time,
            poll_interval=args.poll,
            max_consecutive_errors=20,
            success_statuses=["DONE"],
            failure_statuses=["CANCELLED", "ERROR", "FAILED"],
        )
        tasks.append(asyncio.create_task(wait_for(trigger), name=f"trigger {len(tasks)}"))
    announced = False
    all_polling_at = None
    cpu_polling = rss_polling = polls_polling = None
    while not all(t.done() for t in tasks):
        await asyncio.sleep(0.2)
        if not announced and len(polls) == len(runs):
            announced = True
            cpu_polling, rss_polling, polls_polling = _cpu(), _rss(), sum(polls.values())
            all_polling_at = time.monotonic()
            print("POLLING", flush=True)
    stop.set()
    watchdog.stop.set()
    await dog
    for t in tasks:
        t.result()
    cpu_after = _cpu()
    first_event_at = min(fired_at, default=float("inf"))

    def phase(at: float) -> str:
        if all_polling_at is None or at <= all_polling_at:
            return "starting"
        return "polling" if at <= first_event_at else "finishing"

    lags, blocked, busy = watchdog.lags, watchdog.blocked, watchdog.busy
    phases = [phase(at) for at in watchdog.busy_at]
    off_cpu = watchdog.blocked_off_cpu()
    total_polls = sum(polls.values())
    steady_polls = total_polls - (polls_polling or 0)
    return {
        "triggers": len(runs),
        "events": dict(events),
        "polls": total_polls,
        "seconds": round(time.monotonic() - started, 2),
        "cpu_seconds": round(cpu_after - cpu_before, 3),
        "cpu_ms_per_poll": round((cpu_after - cpu_before) / max(total_polls, 1) * 1000, 3),
        "cpu_ms_per_poll_steady": round(
            (cpu_after - (cpu_polling or cpu_before)) / max(steady_polls, 1) * 1000, 3
        )
        if steady_polls
        else None,
        "rss_before_mb": round(rss_before / 2**20, 1),
        "rss_all_polling_mb": round((rss_polling or 0) / 2**20, 1),
        "rss_peak_mb": round(peak[0] / 2**20, 1),
        "rss_kb_per_trigger": round((peak[0] - rss_before) / 1024 / max(len(runs), 1), 1),
        "max_loop_lag_s": round(max(lags, default=0.0), 3),
        "p99_loop_lag_s": round(sorted(lags)[int(len(lags) * 0.99)] if lags else 0.0, 3),
        "blocked_warnings": len(blocked),
        "max_loop_cpu_without_gc_per_wakeup_s": round(max(busy, default=0.0), 3),
        "blocked_by_loop_work": sum(1 for c in busy if c > BLOCKED_THRESHOLD),
        "blocked_off_cpu": sum(off_cpu),
        "blocked_off_cpu_by_phase": dict(Counter(p for b, p in zip(off_cpu, phases, strict=True) if b)),
        "max_off_cpu_per_wakeup_s": round(max(watchdog.off_cpu, default=0.0), 3),
        "blocked_by_loop_work_by_phase": dict(
            Counter(p for c, p in zip(busy, phases, strict=True) if c > BLOCKED_THRESHOLD)
        ),
        "max_loop_work_per_wakeup_by_phase_s": {
            name: round(max((c for c, p in zip(busy, phases, strict=True) if p == name), default=0.0), 3)
            for name in ("starting", "polling", "finishing")
        },
        "blocked_samples": blocked[:3],
        "gc_pauses_over_50ms": sum(1 for _, b, e in gc_pauses if e - b > 0.05),
        "longest_gc_pause_s": round(max((e - b for _, b, e in gc_pauses), default=0.0), 3),
        "full_collections": sum(1 for g, _, _ in gc_pauses if g == 2),
        "slow_callbacks": len(slow.durations),
        "slowest_callback_s": round(max(slow.durations, default=0.0), 3),
        "slowest_callback_without_gc_s": round(
            max((d - gc_time(t - d, t) for d, t in zip(slow.durations, slow.ends, strict=True)), default=0.0),
            3,
        ),
        "slow_samples": slow.samples,
        "slowest_callback_cpu_without_gc_s": round(callback_cpu.slowest, 3),
        "slowest_callback_cpu_sample": callback_cpu.sample,
        "modules_imported_on_loop": sorted({m for m, on_loop in imports if on_loop}),
        "modules_imported_in_threads": len({m for m, on_loop in imports if not on_loop}),
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("runs")
    parser.add_argument("--poll", type=float, default=1.0)
    parser.add_argument("--deadline", type=float, default=120.0)
    parser.add_argument("--slow", type=float, default=0.1, help="asyncio slow_callback_duration")
    parser.add_argument("--no-debug", action="store_true", help="run without asyncio debug mode (for CPU)")
    options = parser.parse_args()
    # What a triggerer process has loaded before its first trigger (and no GIP module): the loop measures
    # the triggers, including what they import. A real triggerer has these anyio and asgiref modules
    # loaded by then too (its TriggerRunner imports anyio's asyncio backend and streams as it starts).
    for preloaded in (
        "airflow.jobs.triggerer_job_runner",
        "anyio._backends._asyncio",
        "anyio._core._sockets",
        "anyio._core._streams",
        "anyio.streams.memory",
        "anyio.streams.stapled",
        "anyio.streams.tls",
        "asgiref.sync",
    ):
        importlib.import_module(preloaded)

    with open(options.runs) as f:
        run_refs = json.load(f)
    # A triggerer that has been up for a while has had full collections: its garbage collector knows the
    # imported heap as long-lived. Without this, the first minutes of a fresh process run extra full
    # collections (~0.2 s pauses with Airflow's heap) whatever its triggers do.
    gc.collect()
    report = asyncio.run(main(options, run_refs), debug=not options.no_debug)
    report["asyncio_debug"] = not options.no_debug
    print(json.dumps(report), flush=True)
