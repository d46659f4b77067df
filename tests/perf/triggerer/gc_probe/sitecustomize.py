"""Test-only probe: log every CPython garbage collection of 20 ms or more of this process to a file.

Put this directory first on ``PYTHONPATH`` and set ``GIP_GC_PROBE_DIR``: each process then appends
``<epoch end> <seconds> <generation>`` lines to ``<dir>/gc-<pid>.log``. test_topology.py uses it to tell
garbage-collection pauses of the real triggerer from work its event loop does.
"""

from __future__ import annotations

import gc
import os
import time

_DIR = os.environ.get("GIP_GC_PROBE_DIR")

if _DIR:
    _started: list[float] = [0.0]

    def _probe(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            _started[0] = time.perf_counter()
            return
        seconds = time.perf_counter() - _started[0]
        if seconds >= 0.02:
            with open(os.path.join(_DIR, f"gc-{os.getpid()}.log"), "a") as f:
                f.write(f"{time.time():.3f} {seconds:.3f} {info.get('generation')}\n")

    if not any(getattr(cb, "__name__", "") == "_gip_gc_probe" for cb in gc.callbacks):  # once a process
        _probe.__name__ = "_gip_gc_probe"
        gc.callbacks.append(_probe)
