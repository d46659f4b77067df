"""Auto evaluation configs firing on their cron schedule, in their time zone (croniter).

A background loop ticks every half second. Each enabled config remembers up to which instant its
schedule has been processed; a tick fires every instant after that mark up to "now". The control
API can tick to a chosen "now" (``POST /_emulator/scheduler/tick``), which is how tests see a
``0 23 * * *`` schedule fire without waiting for 23:00; marks only move forward.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from typing import Any
from zoneinfo import ZoneInfo

from croniter import croniter

from gip_airflow_emulator.contract import RunIn
from gip_airflow_emulator.runner import new_run
from gip_airflow_emulator.state import Emulator, Run, now_ms

log = logging.getLogger("gip_airflow_emulator")

TICK_SECONDS = 0.5
#: At most this many firings are caught up per config and tick (a far jump does not flood runs).
MAX_CATCH_UP = 100


def firings(schedule: str, timezone: str, after_ms: int, until_ms: int, limit: int = 1000) -> list[int]:
    """Epoch ms of the schedule's instants ``t`` with ``after_ms < t <= until_ms`` (at most ``limit``)."""
    tz = ZoneInfo(timezone)
    start = dt.datetime.fromtimestamp(after_ms / 1000, tz)
    it = croniter(schedule, start)
    out: list[int] = []
    while len(out) < limit:
        instant = it.get_next(dt.datetime)
        ms = round(instant.timestamp() * 1000)
        if ms > until_ms:
            break
        if ms > after_ms:
            out.append(ms)
    return out


def fire(emu: Emulator, config: dict[str, Any], instant_ms: int) -> Run:
    """Create the run GIP creates when ``config`` fires at ``instant_ms``."""
    local = dt.datetime.fromtimestamp(instant_ms / 1000, ZoneInfo(config["timezone"]))
    suffix = f" @ {local.isoformat(timespec='minutes')}"
    body = RunIn.model_validate(
        {
            "evaluator_id": config["evaluator_id"],
            "display_name": config["name"][: 255 - len(suffix)] + suffix,
            "target_data_converter": config.get("target_data_converter"),
            "metadata": config.get("metadata"),
        }
    )
    experiment = emu.experiments[config["experiment_id"]]
    emu.stats.auto_evaluation_firings += 1
    return new_run(emu, experiment, body, auto_evaluation_id=config["id"], executes_at_ms=instant_ms)


def tick(emu: Emulator, until_ms: int) -> list[Run]:
    """Fire every enabled config's instants since its mark, up to ``until_ms``."""
    created: list[Run] = []
    for config in list(emu.auto_evaluations.values()):
        if not config.get("enabled"):
            continue
        mark = emu.schedule_marks.get(config["id"], until_ms)
        if until_ms <= mark:
            continue
        due = firings(config["schedule"], config["timezone"], mark, until_ms)
        for instant in due[-MAX_CATCH_UP:]:
            if config["evaluator_id"] in emu.evaluators and config["experiment_id"] in emu.experiments:
                created.append(fire(emu, config, instant))
        emu.schedule_marks[config["id"]] = until_ms
    return created


async def scheduler_loop(emu: Emulator) -> None:
    """Tick forever (until cancelled at shutdown)."""
    while True:
        try:
            tick(emu, now_ms())
        except Exception:
            log.exception("auto evaluation tick failed")
        await asyncio.sleep(TICK_SECONDS)
