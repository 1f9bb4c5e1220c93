"""Commands as trackbot runs them (bot.adapters.process): their end is seen when they exit, a command
that overruns is stopped, and one that falls silent is stopped by the idle watchdog."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from bot.adapters.process import run_process, wait_exit

ENV = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}


def test_a_command_that_exits_reports_its_exit_code_and_output(tmp_path: Path) -> None:
    result = run_process(["sh", "-c", "echo done; exit 3"], tmp_path, ENV, 30)
    assert (result.exit_code, result.output_tail, result.timed_out) == (3, "done", False)


def test_a_short_command_is_seen_to_end_when_it_exits_not_at_a_polling_step(tmp_path: Path) -> None:
    # Popen.wait(timeout=...) looks after sleeps of 0.5, 1, 2 ... 32, then 50 ms: at 63.5 ms, then
    # 113.5 ms, so a 70 ms command was seen to end after 113.5 ms. Waiting on the process itself is
    # not bound to those steps. A median of 5 keeps a busy machine's stray slow start out of it.
    durations = sorted(run_process(["sleep", "0.07"], tmp_path, ENV, 30).duration_s for _ in range(5))
    assert durations[2] < 0.1


def test_a_command_that_overruns_its_timeout_is_stopped(tmp_path: Path) -> None:
    result = run_process(["sleep", "30"], tmp_path, ENV, 0.3)
    assert result.timed_out and result.exit_code is None
    assert result.duration_s < 10


def test_a_command_silent_for_longer_than_the_idle_timeout_is_stopped(tmp_path: Path) -> None:
    result = run_process(["sh", "-c", "echo started; sleep 30"], tmp_path, ENV, 60, idle_timeout_s=0.5)
    assert result.idle and result.exit_code is None
    assert result.output_tail == "started"


def test_waiting_for_a_command_already_reaped_returns_at_once() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "pass"], text=True)
    proc.wait()
    assert wait_exit(proc, 5) is True
    assert proc.returncode == 0


def test_waiting_gives_up_after_the_timeout_and_leaves_the_command_running() -> None:
    proc = subprocess.Popen(["sleep", "30"], text=True)
    try:
        assert wait_exit(proc, 0.2) is False
        assert proc.poll() is None
    finally:
        proc.kill()
        proc.wait()
