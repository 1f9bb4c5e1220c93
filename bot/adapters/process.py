"""Running a command as trackbot does everywhere: timed, its output kept, its process group killable."""

from __future__ import annotations

import contextlib
import os
import select
import shlex
import signal
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import psutil

TAIL_LINES = 40
KILL_GRACE_S = 5.0


@dataclass(frozen=True)
class LiveGroup:
    """A command this process started and that has not ended yet: its process group and argv."""

    pgid: int
    argv: tuple[str, ...]
    started_at: float


# Every command run_process has started and not yet seen end, by process group: the job's heartbeat
# stops them on cancel, and listeners record the agent's group on the run for the reaper.
_live: dict[int, LiveGroup] = {}
_listeners: list[Callable[[LiveGroup, bool], None]] = []
_live_lock = threading.Lock()


@contextlib.contextmanager
def watching_processes(listener: Callable[[LiveGroup, bool], None]) -> Iterator[None]:
    """Call `listener(group, started)` when run_process starts (True) or sees the end of (False) a command."""
    with _live_lock:
        _listeners.append(listener)
    try:
        yield
    finally:
        with _live_lock:
            _listeners.remove(listener)


def live_groups() -> list[LiveGroup]:
    """The commands started by run_process in this process that are still running."""
    with _live_lock:
        return list(_live.values())


def _tell(group: LiveGroup, started: bool) -> None:
    with _live_lock:
        if started:
            _live[group.pgid] = group
        else:
            _live.pop(group.pgid, None)
        listeners = list(_listeners)
    for listener in listeners:
        try:
            listener(group, started)
        except Exception:  # a listener never breaks the command
            pass


def group_members(pgid: int, not_before: float | None = None, not_after: float | None = None) -> list[psutil.Process]:
    """Live (not zombie) processes in process group `pgid`; with `not_before`/`not_after` (epoch
    seconds) only those started in that window: a guard against a recycled id naming another group."""
    members = []
    for proc in psutil.process_iter(["pid", "status", "create_time"]):
        try:
            if proc.info["status"] == psutil.STATUS_ZOMBIE or os.getpgid(proc.pid) != pgid:
                continue
        except (ProcessLookupError, PermissionError, psutil.Error):
            continue
        created = proc.info["create_time"] or 0.0
        if not_before is not None and created < not_before - 1.0:
            continue
        if not_after is not None and created > not_after + 1.0:
            continue
        members.append(proc)
    return members


def kill_process_group(
    pgid: int, grace_s: float = KILL_GRACE_S, not_before: float | None = None, not_after: float | None = None
) -> bool:
    """TERM process group `pgid`, then KILL what is left after `grace_s`. Works for any group on this
    host, not only children of this process. Returns True if there was something to stop.

    With `not_before`/`not_after`, nothing is signalled unless a member was started in that window
    (the run's lifetime: a process started later is not its orphan, whatever its group id).
    """
    if not group_members(pgid, not_before, not_after):
        return False
    try:
        os.killpg(pgid, signal.SIGTERM)
    except (ProcessLookupError, PermissionError):
        return False
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        if not group_members(pgid):
            return True
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)
    deadline = time.monotonic() + 5.0
    while group_members(pgid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return True


@dataclass
class ProcessResult:
    """How a command ended. `exit_code` is None when it could not start or was killed on timeout."""

    command: str
    exit_code: int | None
    duration_s: float
    output_tail: str
    timed_out: bool = False
    missing: bool = False  # the program was not found
    idle: bool = False  # stopped by the idle watchdog: no output for `idle_timeout_s`

    @property
    def ok(self) -> bool:
        """Exited 0."""
        return self.exit_code == 0


def pid_alive(pid: int | None) -> bool:
    """Whether process `pid` exists on this host and has not exited (a zombie nobody reaped has)."""
    if pid is None:
        return False
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:
        return True  # someone else's process: it exists


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
    idle_timeout_s: float | None = None,
) -> ProcessResult:
    """Run `argv` in its own process group; on timeout stop the whole group (TERM, then KILL).

    stdin gets `stdin_text` and is then closed (agents that read a prompt on stdin hang otherwise).
    With `idle_timeout_s`, a command that prints nothing for that long is stopped the same way
    (`idle` in the result).
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
    group = LiveGroup(proc.pid, tuple(argv), time.time())
    _tell(group, True)
    try:
        return _follow(proc, command, started, timeout_s, stdin_text, on_line, tail_lines, idle_timeout_s)
    finally:
        _tell(group, False)


def _follow(
    proc: subprocess.Popen[str],
    command: str,
    started: float,
    timeout_s: float,
    stdin_text: str | None,
    on_line: Callable[[str], None] | None,
    tail_lines: int,
    idle_timeout_s: float | None,
) -> ProcessResult:
    """Feed stdin, collect the output, wait (stopping the group on timeout or when idle too long)."""
    tail: deque[str] = deque(maxlen=tail_lines)
    last_output = [time.monotonic()]

    def read_output() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            last_output[0] = time.monotonic()
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
    timed_out = idle = False
    if idle_timeout_s is None:
        timed_out = not wait_exit(proc, timeout_s)
    else:
        timed_out, idle = _wait_watching_idle(proc, started + timeout_s, last_output, idle_timeout_s)
    if timed_out or idle:
        stop_process_group(proc)
    # Children may hold the pipe open after the leader exits; never hang on them.
    reader.join(timeout=2)
    if reader.is_alive():
        stop_process_group(proc)
        reader.join(timeout=2)
    return ProcessResult(
        command,
        None if timed_out or idle else proc.returncode,
        time.monotonic() - started,
        "\n".join(tail),
        timed_out=timed_out,
        idle=idle,
    )


def _wait_watching_idle(
    proc: subprocess.Popen[str], deadline: float, last_output: list[float], idle_timeout_s: float
) -> tuple[bool, bool]:
    """Wait for `proc` until `deadline`, or until it has printed nothing for `idle_timeout_s`.

    Returns (timed out, idle); both False when the process exited by itself.
    """
    while True:
        now = time.monotonic()
        if now >= deadline:
            return True, False
        idle_until = last_output[0] + idle_timeout_s
        if now >= idle_until:
            return False, True
        if wait_exit(proc, max(0.01, min(deadline, idle_until) - now)):
            return False, False


def wait_exit(proc: subprocess.Popen[str], timeout_s: float) -> bool:
    """Wait at most `timeout_s` for `proc` to exit (and reap it); True if it did.

    `Popen.wait(timeout=...)` polls with sleeps that double up to 50 ms, so a 20 ms git command is
    noticed after about 30 ms, a 35 ms push after about 60: a run's dozen git commands lost a third
    of their time to it. A pidfd (Linux) lets the kernel wake us the moment the process exits.
    """
    try:
        pidfd = os.pidfd_open(proc.pid)
    except (AttributeError, OSError):  # not Linux, or already reaped: Popen's own wait
        try:
            proc.wait(timeout=timeout_s)
            return True
        except subprocess.TimeoutExpired:
            return False
    try:
        poller = select.poll()
        poller.register(pidfd, select.POLLIN)
        exited = bool(poller.poll(max(0, int(timeout_s * 1000))))
    finally:
        os.close(pidfd)
    if exited:
        proc.wait()
    return exited


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
