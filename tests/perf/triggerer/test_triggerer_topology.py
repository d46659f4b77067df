"""A real ``airflow triggerer`` on the reliability topology holds many deferred waits at once: all
complete, and its log never says "Triggerer's async thread was blocked" because of the provider's work.
Its memory and CPU per poll are printed; a loop-thread sampler and the GC probe (gc_probe/) attribute
every blocked-loop warning. CI: 16 waits; GIP_RELIABILITY_FULL=1: 500.
"""

from __future__ import annotations

import bisect
import datetime as dt
import os
import re
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import psutil
import pytest

from gip_airflow_emulator.pytest_plugin import GipEmulator
from tests.integration.reliability.conftest import FULL
from tests.system.e2e.topology import AirflowTopology
from tests.system.reliability.test_topology import (
    DEFERRED_WAITS,
    TRIGGER_PHASE_LIMIT,
    TRIGGER_POLL_SECONDS,
    Rel,
    reliability_topology,
)

pytestmark = [pytest.mark.chaos, pytest.mark.e2e]


@pytest.fixture(scope="module")
def rel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rel]:
    with reliability_topology(tmp_path_factory.mktemp("rel-triggerer"), gc_probe=GC_PROBE) as topology:
        yield topology


# ---------------------------------------------------------------------------------------------
# A real triggerer
# ---------------------------------------------------------------------------------------------


def _triggerer_usage(topo: AirflowTopology) -> tuple[int, float]:
    """RSS (bytes) and CPU seconds (user + system) of every process of the triggerer service."""
    rss, cpu = 0, 0.0
    for proc in topo.session_processes():
        if topo.service_of(proc) != "triggerer":
            continue
        try:
            rss += proc.memory_info().rss
            times = proc.cpu_times()
            cpu += times.user + times.system
        except psutil.Error:
            continue
    return rss, cpu


def _status_polls(emu: GipEmulator) -> int:
    routes = emu.stats()["requests_by_route"]
    return sum(n for route, n in routes.items() if route.startswith("GET ") and route.endswith("/runs/{run}"))


class _Sample(NamedTuple):
    """One reading of the loop thread (seconds are cumulative since the thread started)."""

    at: float  # epoch seconds
    on_cpu: float
    waiting: float  # in the run queue
    others_cpu: (
        float  # the process's other threads on a CPU: a loop thread waiting for the GIL sleeps in futex
    )
    doing: str  # "running", or the syscall it sleeps in and the kind of its fd


class LoopThreadSampler:
    """Samples the scheduler statistics of the triggerer's event-loop thread every 50 ms.

    Airflow's watchdog measures wall time, so a loop thread that is ready but not given a CPU (an
    oversubscribed machine) trips it as much as one that works or sleeps in a blocking call. The kernel
    tells them apart: ``/proc/<pid>/task/<tid>/schedstat`` counts the thread's time on a CPU and its time
    waiting in the run queue. The loop runs in the main thread of the trigger-runner process (the child
    of ``airflow triggerer``).
    """

    def __init__(self, topo: AirflowTopology):
        procs = [p for p in topo.session_processes() if topo.service_of(p) == "triggerer"]
        runners = [
            p for p in procs if p.ppid() in {q.pid for q in procs} and "triggerer" in " ".join(p.cmdline())
        ]
        assert len(runners) == 1, [(p.pid, p.ppid(), p.cmdline()) for p in procs]
        self.pid = runners[0].pid
        self.path = Path(f"/proc/{self.pid}/task/{self.pid}/schedstat")
        self.syscall_path = Path(f"/proc/{self.pid}/task/{self.pid}/syscall")
        self.samples: list[_Sample] = []
        self._times: list[float] = []  # the samples' instants, set by stop()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="loop-sampler", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                on_cpu, waiting, _ = self.path.read_text().split()
            except (OSError, ValueError):
                return
            self.samples.append(
                _Sample(
                    time.time(),
                    int(on_cpu) / 1e9,
                    int(waiting) / 1e9,
                    self._other_threads_cpu(),
                    self._syscall(),
                )
            )
            self._stop.wait(0.05)

    def _syscall(self) -> str:
        """The loop thread's current syscall (x86-64 numbers) and, for fd-based ones, what the fd is."""
        try:
            fields = self.syscall_path.read_text().split()
        except OSError:
            return "?"
        if not fields or not fields[0].isdigit():
            return fields[0] if fields else "?"
        nr = int(fields[0])
        name = _SYSCALLS.get(nr, f"syscall {nr}")
        if nr in _FD_SYSCALLS and len(fields) > 1:
            fd = int(fields[1], 16)
            try:
                target = os.readlink(f"/proc/{self.pid}/fd/{fd}")
            except OSError:
                target = "?"
            return f"{name}(fd {fd}: {self._kind(target)})"
        return name

    def _kind(self, target: str) -> str:
        """``unix socket`` (Airflow's channels to the supervisor), ``inet socket`` (HTTP), or the fd's type."""
        if not target.startswith("socket:["):
            return target.split(":", maxsplit=1)[0]
        inode = target[len("socket:[") : -1]
        try:
            unix = {
                line.split()[6] for line in Path(f"/proc/{self.pid}/net/unix").read_text().splitlines()[1:]
            }
        except (OSError, IndexError):
            return "socket"
        return "unix socket" if inode in unix else "inet socket"

    def _other_threads_cpu(self) -> float:
        total = 0
        for task in Path(f"/proc/{self.pid}/task").iterdir():
            if task.name != str(self.pid):
                try:
                    total += int((task / "schedstat").read_text().split()[0])
                except (OSError, ValueError, IndexError):
                    pass
        return total / 1e9

    def others_between(self, start: float, end: float) -> float:
        """On-CPU seconds of the process's other threads within ``[start, end]`` (nearest samples)."""
        if not self.samples:
            return 0.0
        last = len(self.samples) - 1
        i = min(bisect.bisect_left(self._times, start), last)
        j = min(bisect.bisect_right(self._times, end), last)
        return max(self.samples[j].others_cpu - self.samples[i].others_cpu, 0.0)

    def doing_between(self, start: float, end: float) -> dict[str, int]:
        """How often each activity was sampled within ``[start, end]``."""
        window = self.samples[bisect.bisect_left(self._times, start) : bisect.bisect_right(self._times, end)]
        return dict(Counter(sample.doing for sample in window))

    def start(self) -> LoopThreadSampler:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self._times = [sample.at for sample in self.samples]

    def between(self, start: float, end: float) -> tuple[float, float]:
        """The loop thread's on-CPU and run-queue seconds within ``[start, end]`` (linear between samples)."""

        def at(t: float) -> tuple[float, float]:
            i = min(max(bisect.bisect_left(self._times, t), 1), len(self.samples) - 1)
            s0, s1 = self.samples[i - 1], self.samples[i]
            f = min(max((t - s0.at) / (s1.at - s0.at), 0.0), 1.0) if s1.at > s0.at else 1.0
            return s0.on_cpu + f * (s1.on_cpu - s0.on_cpu), s0.waiting + f * (s1.waiting - s0.waiting)

        (c0, w0), (c1, w1) = at(start), at(end)
        return c1 - c0, w1 - w0


#: x86-64 syscall numbers a blocked loop thread may sit in (anything else is shown by number).
_SYSCALLS = {
    0: "read",
    1: "write",
    3: "close",
    7: "poll",
    20: "writev",
    23: "select",
    35: "nanosleep",
    42: "connect",
    44: "sendto",
    45: "recvfrom",
    46: "sendmsg",
    47: "recvmsg",
    74: "fsync",
    202: "futex",
    230: "clock_nanosleep",
    232: "epoll_wait",
    257: "openat",
    270: "pselect6",
    281: "epoll_pwait",
}
_FD_SYSCALLS = {0, 1, 3, 20, 44, 45, 46, 47, 74}

#: What the loop thread may be seen doing inside a window it spent asleep: waiting for Airflow's log channel.
AIRFLOW_LOG_CHANNEL_WAITS = {"running", "epoll_wait", "futex"} | {
    f"{call}(fd {fd}: unix socket)" for call in ("write", "sendto", "sendmsg") for fd in range(3, 64)
}

_BLOCKED = re.compile(r"^(\S+) .*async thread was blocked for ([0-9.]+) seconds")
GC_PROBE = Path(__file__).parent / "gc_probe"


def _gc_pauses(probe_dir: Path, pid: int) -> list[tuple[float, float]]:
    """(epoch end, seconds) of the garbage collections of 20 ms or more of one process (gc_probe)."""
    path = probe_dir / f"gc-{pid}.log"
    if not path.exists():
        return []
    return [
        (float(end), float(sec)) for end, sec, _ in (line.split() for line in path.read_text().splitlines())
    ]


def _attribute_blocked_warnings(
    log: str, sampler: LoopThreadSampler, gc_pauses: list[tuple[float, float]], phases: dict[str, float]
) -> dict[str, Any]:
    """Each watchdog warning of the triggerer's log: when (phase), how long, and where the time went.

    The window before a warning splits into garbage collection (gc_probe), other work on the loop thread
    (its CPU time minus the collections), waiting for a CPU (run queue) and being asleep outside the
    loop's own poll (a blocking call); the largest part is the warning's cause.
    """
    found = []
    for line in log.splitlines():
        m = _BLOCKED.match(line)
        if not m:
            continue
        end = dt.datetime.fromisoformat(m.group(1).replace("Z", "+00:00")).timestamp()
        seconds = float(m.group(2))
        start = end - seconds
        on_cpu, waiting = sampler.between(start, end)
        # A collection's wall time includes its own waits for a CPU: count at most the thread's CPU time.
        gc_s = min(sum(max(0.0, min(end, e) - max(start, e - d)) for e, d in gc_pauses), on_cpu)
        parts = {
            "garbage collection": gc_s,
            "loop work": on_cpu - gc_s,
            "run queue": waiting,
            "asleep": max(seconds - on_cpu - waiting, 0.0),
        }
        phase = next(
            (name for name, since in sorted(phases.items(), key=lambda kv: -kv[1]) if end >= since), "start"
        )
        found.append(
            {
                "phase": phase,
                "seconds": seconds,
                **{k: round(v, 3) for k, v in parts.items()},
                "cause": max(parts, key=parts.__getitem__),
                "sampled": sampler.doing_between(start, end),
                "other_threads_cpu": round(sampler.others_between(start, end), 3),
            }
        )
    return {
        "warnings": len(found),
        "by_phase": dict(Counter(w["phase"] for w in found)),
        "by_cause": dict(Counter(w["cause"] for w in found)),
        "by_phase_and_cause": dict(Counter(f"{w['phase']}/{w['cause']}" for w in found)),
        "longest_s": max((w["seconds"] for w in found), default=0.0),
        "most_loop_work_s": max((w["loop work"] for w in found), default=0.0),
        "gc_pauses_over_0_2_s": sum(1 for _, d in gc_pauses if d > 0.2),
        "longest_gc_pause_s": max((d for _, d in gc_pauses), default=0.0),
        "asleep_in": dict(sum((Counter(w["sampled"]) for w in found if w["cause"] == "asleep"), Counter())),
        "examples": [
            w for cause in ("loop work", "asleep", "garbage collection") for w in found if w["cause"] == cause
        ][:9],
    }


@pytest.mark.timeout(900 if not FULL else 3 * TRIGGER_PHASE_LIMIT)
def test_real_triggerer_holds_many_waits_without_blocking(rel: Rel, reliability_report) -> None:
    """All waits complete and Airflow's watchdog never reports the triggerer's loop blocked.

    It once did, at the first GIP trigger of the process: the trigger module and the hook (pydantic
    models, compiled from source here) were imported on the loop, ~70 ms of CPU and up to 260 ms of wall
    time on a busy machine. They are imported in a worker thread now (gip_airflow/triggers/gip.py).
    """
    topo, emu = rel.topo, rel.emu
    runs = []
    for i in range(DEFERRED_WAITS):
        run = emu.synthetic_run(rows=1, row_bytes=200, display_name=f"rel trigger load {i}")
        emu.force_run_status(run["id"], "RUNNING")
        runs.append(run)
    experiment = runs[0]["experiment_id"]
    assert {r["experiment_id"] for r in runs} == {experiment}
    rss_idle, cpu_idle_start = _triggerer_usage(topo)
    time.sleep(4)
    idle_cpu_per_s = (_triggerer_usage(topo)[1] - cpu_idle_start) / 4
    sampler = LoopThreadSampler(topo).start()
    phases = {"deferring": time.time()}
    started = time.monotonic()
    dag_run = topo.trigger_dag(
        "rel_trigger_load", conf={"experiment_id": experiment, "run_ids": [r["id"] for r in runs]}
    )["dag_run_id"]

    def states() -> Counter[str | None]:
        return Counter(ti["state"] for ti in topo.task_instances("rel_trigger_load", dag_run))

    def deferred() -> int:
        return states()["deferred"]

    while deferred() < DEFERRED_WAITS:
        topo.assert_running()
        assert time.monotonic() - started < TRIGGER_PHASE_LIMIT, f"the waits never all deferred: {states()}"
        time.sleep(1)
    all_deferred_after = time.monotonic() - started
    # Hold every wait in the triggerer for a while (three polls each, at least 8 s) and measure it.
    phases["holding"] = time.time()
    rss_start, cpu_start = _triggerer_usage(topo)
    polls_start, hold_start = _status_polls(emu), time.monotonic()
    peak = rss_start
    while time.monotonic() - hold_start < max(8, 3 * TRIGGER_POLL_SECONDS):
        peak = max(peak, _triggerer_usage(topo)[0])
        time.sleep(0.5)
    _, cpu_end = _triggerer_usage(topo)
    polls = _status_polls(emu) - polls_start
    hold = time.monotonic() - hold_start
    held = deferred()
    phases["finishing"] = time.time()
    for run in runs:
        emu.force_run_status(run["id"], None)
    try:
        observed = topo.wait_for_runs([("rel_trigger_load", dag_run)], timeout=TRIGGER_PHASE_LIMIT)
    finally:
        sampler.stop()
    assert observed.runs[("rel_trigger_load", dag_run)]["state"] == "success", observed.states
    waits = [ti for ti in topo.task_instances("rel_trigger_load", dag_run) if ti["task_id"] == "wait"]
    assert len(waits) == DEFERRED_WAITS and {ti["state"] for ti in waits} == {"success"}
    texts = [topo.service_log("triggerer")] + [
        p.read_text(errors="replace")
        for p in (topo.airflow_home / "logs").rglob("*.log*")
        if ".trigger." in p.name
    ]
    blocked_lines = [
        line for text in texts for line in text.splitlines() if "async thread was blocked" in line
    ]
    blocked = len(blocked_lines)
    attribution = _attribute_blocked_warnings(
        topo.service_log("triggerer"), sampler, _gc_pauses(rel.gc_probe_dir, sampler.pid), phases
    )
    figures = {
        "deferred_waits": DEFERRED_WAITS,
        "poll_interval_s": TRIGGER_POLL_SECONDS,
        "held_in_triggerer": held,
        "seconds_until_all_deferred": round(all_deferred_after, 1),
        "triggerer_rss_idle_mb": round(rss_idle / 2**20, 1),
        "triggerer_rss_holding_mb": round(peak / 2**20, 1),
        "rss_kb_per_wait": round((peak - rss_idle) / 1024 / DEFERRED_WAITS, 1),
        "polls_during_hold": polls,
        "polls_per_s": round(polls / hold, 1),
        "triggerer_cpu_ms_per_poll": round((cpu_end - cpu_start) / max(polls, 1) * 1000, 2),
        "triggerer_cpu_ms_per_poll_above_idle": round(
            max(cpu_end - cpu_start - idle_cpu_per_s * hold, 0.0) / max(polls, 1) * 1000, 2
        ),
        "triggerer_cpu_percent_idle": round(idle_cpu_per_s * 100, 1),
        "triggerer_cpu_percent_holding": round((cpu_end - cpu_start) / hold * 100, 1),
        "blocked_warnings_in_triggerer_logs": blocked,
        "blocked_warnings_attributed": attribution,
        "seconds_total": round(time.monotonic() - started, 1),
    }
    if blocked_lines:
        figures["blocked_warnings"] = [line[:160] for line in blocked_lines[:3]]
    reliability_report(figures)
    assert held == DEFERRED_WAITS, figures
    # At CI size the watchdog never fires.
    if not FULL:
        assert blocked == 0, figures
    # At full size it does, and no warning may come from a trigger: not from work on the loop, not from a
    # blocking call. What is left is Airflow's and the machine's: full garbage collections of the runner's
    # heap, the loop thread waiting for a CPU (the worker starts 500 task processes on two cores), and,
    # when the 500 waits finish at once, the loop thread's log writes blocking on Airflow's JSON log channel
    # to the supervisor (an unbuffered blocking unix socket; structlog's lock shows as futex) while the
    # supervisor persists the 500 events. A trigger's own I/O is on non-blocking inet sockets.
    assert set(attribution["by_cause"]) <= {"run queue", "garbage collection", "asleep"}, figures
    assert attribution["most_loop_work_s"] < 0.2, figures
    assert set(attribution["asleep_in"]) <= AIRFLOW_LOG_CHANNEL_WAITS, figures
