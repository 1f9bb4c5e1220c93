"""The coding agent as a subprocess: the configured command, in the work tree, prompt on stdin.

The agent sees an allowlisted environment: never trackbot's tokens, secrets or Redis URL.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Callable, Mapping
from pathlib import Path

from bot.adapters.process import ProcessResult, run_process

# What any program needs to run; everything else must be asked for by name.
BASE_ENV_ALLOWLIST = (
    "PATH",
    "HOME",
    "LANG",
    "LC_ALL",
    "LC_CTYPE",
    "TERM",
    "TMPDIR",
    "USER",
    "LOGNAME",
    "SHELL",
    "TZ",
)


class AgentCommandError(ValueError):
    """The configured agent command cannot be parsed."""


def agent_argv(command: str, worktree: Path) -> list[str]:
    """Split the configured command and fill in `{worktree}`."""
    try:
        parts = shlex.split(command)
    except ValueError as error:
        raise AgentCommandError(f"TRACKBOT_AGENT_COMMAND cannot be parsed: {error}") from None
    if not parts:
        raise AgentCommandError("TRACKBOT_AGENT_COMMAND is empty")
    return [part.replace("{worktree}", str(worktree)) for part in parts]


def agent_environment(
    track_vars: Mapping[str, str],
    passthrough: list[str],
    forbidden_values: list[str],
    source: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The agent's environment: a small allowlist, the named passthrough variables, the track's variables.

    A passthrough variable whose value is one of trackbot's secrets is dropped anyway.
    """
    source = os.environ if source is None else source
    env = {name: source[name] for name in BASE_ENV_ALLOWLIST if name in source}
    secrets = {v for v in forbidden_values if v}
    for name in passthrough:
        value = source.get(name)
        if value is not None and value not in secrets:
            env[name] = value
    env.update(track_vars)
    return env


def run_agent(
    command: str,
    worktree: Path,
    prompt: str,
    env: Mapping[str, str],
    timeout_s: float,
    on_line: Callable[[str], None] | None = None,
    idle_timeout_s: float | None = None,
) -> ProcessResult:
    """Run the agent in `worktree` with `prompt` on stdin (then closed) until it exits or times out
    (or, with `idle_timeout_s`, prints nothing for that long)."""
    return run_process(
        agent_argv(command, worktree),
        worktree,
        env,
        timeout_s,
        stdin_text=prompt,
        on_line=on_line,
        tail_lines=60,
        idle_timeout_s=idle_timeout_s,
    )
