"""Running a command as trackbot does everywhere: timed, its output kept, its process group killable."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

TAIL_LINES = 40
KILL_GRACE_S = 5.0


@dataclass
class ProcessResult:
    """How a command ended. `exit_code` is None when it could not start or was killed on timeout."""

    command: str
    exit_code: int | None
    duration_s: float
    output_tail: str
    timed_out: bool = False
    missing: bool = False  # the program was not found

    @property
    def ok(self) -> bool:
        """Exited 0."""
        return self.exit_code == 0


def display(argv: Sequence[str]) -> str:
    """A command as a person would type it."""
    return shlex.join(argv)


def run_process(
    argv: Sequence[str],
    cwd: Path,
    env: Mapping[str, str],
    timeout_s: float,
    stdin_text: str | None = None,
    on_line: Callable[[str], None] | None = None,
    tail_lines: int = TAIL_LINES,
) -> ProcessResult:
    """Run `argv` in its own process group; on timeout stop the whole group (TERM, then KILL).

    stdin gets `stdin_text` and is then closed (agents that read a prompt on stdin hang otherwise).
    """
    started = time.monotonic()
    command = display(argv)
    try:
        proc = subprocess.Popen(
            list(argv),
            cwd=cwd,
            env=dict(env),
            stdin=subprocess.PIPE if stdin_text is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            text=True,
            errors="replace",
        )
    except (FileNotFoundError, PermissionError) as error:
        return ProcessResult(command, None, time.monotonic() - started, str(error), missing=True)

    tail: deque[str] = deque(maxlen=tail_lines)

    def read_output() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            line = line.rstrip("\n")
            tail.append(line)
            if on_line is not None:
                try:
                    on_line(line)
                except Exception:
                    pass

    reader = threading.Thread(target=read_output, daemon=True)
    reader.start()
    if stdin_text is not None:
        assert proc.stdin is not None
        try:
            proc.stdin.write(stdin_text)
        except BrokenPipeError:
            pass
        finally:
            try:
                proc.stdin.close()
            except BrokenPipeError:
                pass
    timed_out = False
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        timed_out = True
        stop_process_group(proc)
    # Children may hold the pipe open after the leader exits; never hang on them.
    reader.join(timeout=2)
    if reader.is_alive():
        stop_process_group(proc)
        reader.join(timeout=2)
    return ProcessResult(
        command,
        None if timed_out else proc.returncode,
        time.monotonic() - started,
        "\n".join(tail),
        timed_out=timed_out,
    )


def stop_process_group(proc: subprocess.Popen[str], grace_s: float = KILL_GRACE_S) -> None:
    """TERM the process group, then KILL it after a grace period."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        pass
