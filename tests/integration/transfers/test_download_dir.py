"""The transfer's download directories: what a SIGKILLed load leaves behind is removed by the next load,
and never what a running load (in another process) is still using."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from gip_airflow.transfers.gip_to_sql import DOWNLOAD_DIR_PREFIX, download_dir

# A load in another process: enters download_dir, writes a CSV, says where, then waits to be killed.
_HOLDER = """
import sys, time
from gip_airflow.transfers.gip_to_sql import download_dir
with download_dir(sys.argv[1]) as path:
    with open(path + "/result.csv", "wb") as f:
        f.write(b"x" * 2_000_000)
    print(path, flush=True)
    time.sleep(120)
"""


@pytest.fixture
def holders(tmp_path: Path) -> Iterator[list[subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []
    yield started
    for process in started:
        process.kill()
        process.wait(timeout=10)


def _hold(parent: Path, holders: list[subprocess.Popen[str]]) -> tuple[subprocess.Popen[str], Path]:
    process = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(parent)], stdout=subprocess.PIPE, text=True
    )
    holders.append(process)
    assert process.stdout is not None
    return process, Path(process.stdout.readline().strip())


def test_a_finished_load_removes_its_directory(tmp_path: Path) -> None:
    with download_dir(str(tmp_path)) as path:
        Path(path, "result.csv").write_bytes(b"a,b\n")
        assert Path(path).name.startswith(DOWNLOAD_DIR_PREFIX)
    assert list(tmp_path.iterdir()) == []


def test_the_next_load_removes_what_a_killed_load_left(tmp_path: Path, holders, caplog) -> None:
    killed, killed_dir = _hold(tmp_path, holders)
    alive, alive_dir = _hold(tmp_path, holders)
    os.kill(killed.pid, signal.SIGKILL)
    killed.wait(timeout=10)
    assert (killed_dir / "result.csv").stat().st_size == 2_000_000  # left behind, as SIGKILL does
    # Neighbours that are not ours, or not set up yet, are never touched.
    (tmp_path / f"{DOWNLOAD_DIR_PREFIX}without-lock").mkdir()
    (tmp_path / "other-tool-dir").mkdir()
    (tmp_path / "other-tool-dir" / ".lock").write_bytes(b"")

    caplog.set_level(logging.INFO, logger="gip_airflow.transfers.gip_to_sql")
    with download_dir(str(tmp_path)) as path:
        remaining = sorted(p.name for p in tmp_path.iterdir())
    assert remaining == sorted(
        [alive_dir.name, Path(path).name, f"{DOWNLOAD_DIR_PREFIX}without-lock", "other-tool-dir"]
    )
    assert (alive_dir / "result.csv").stat().st_size == 2_000_000, "a running load's download was touched"
    assert f"Removed {killed_dir} (2.0 MB), left behind by a load that was killed" in caplog.text
    assert alive.poll() is None


def test_a_missing_tmp_dir_is_an_error_not_a_sweep(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError), download_dir(str(tmp_path / "nope")):
        pass
