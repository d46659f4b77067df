"""What the two budget-backfill tests share: an emulator seeded with equal traces a day, and a stand-in
task instance for driving the run operator's ``execute()`` in the test process."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


@contextmanager
def equal_traces_emulator(
    folder: Path,
    *,
    days: int,
    per_day: int,
    timestamp: Callable[[int, int], str],
    trace_id: Callable[[int, int], str],
    day_in_text: bool = True,
    judge_quality: tuple[str, float] | None = None,
    run_seconds: float = 0.3,
) -> Iterator[Any]:
    """An emulator whose Langfuse holds ``per_day`` traces of equal size on each of days 1 to ``days + 1``.

    ``timestamp(day, slot)`` and ``trace_id(day, slot)`` place and name each trace; ``day_in_text`` adds
    the day to its messages; ``judge_quality`` (model public id, quality) sets one judge model's quality.
    """
    from gip_airflow_emulator.handle import start_emulator
    from gip_airflow_emulator.seed import generate_default_seed

    seed = generate_default_seed()
    if judge_quality is not None:
        for model in seed["models"]:
            if model["public_id"] == judge_quality[0]:
                model["quality"] = judge_quality[1]
    seed["langfuse"]["traces"] = [
        {
            "id": trace_id(day, slot),
            "timestamp": timestamp(day, slot),
            "name": "backfill",
            "input": [{"role": "user", "content": f"Which plan fits a {slot + 2} GB user?{tag}"}],
            "output": {"role": "assistant", "content": f"The {slot + 2} GB plan fits best{tag}."},
        }
        for day in range(1, days + 2)
        for slot in range(per_day)
        for tag in [f" (#{day:02d})" if day_in_text else ""]
    ]
    seed["langfuse"]["observations"] = []
    seed["langfuse"]["scores"] = []
    path = folder / "seed.json"
    path.write_text(json.dumps(seed))
    handle = start_emulator("--seed", str(path), "--run-seconds", str(run_seconds))
    try:
        yield handle
    finally:
        handle.stop()


class StandInTI:
    """What the run operator reads from a task instance: identity, and an XCom sink."""

    def __init__(self, dag_id: str, run_id: str) -> None:
        self.dag_id, self.task_id, self.run_id, self.map_index, self.try_number = dag_id, "run", run_id, -1, 1
        self.xcoms: dict[str, Any] = {}

    def xcom_push(self, key: str, value: Any) -> None:
        self.xcoms[key] = value
