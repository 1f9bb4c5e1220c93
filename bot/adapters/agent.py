"""The coding agent's command line and environment (it runs in the sandbox: bot.steps.sandbox).

The agent sees an allowlisted environment: never trackbot's tokens, secrets or Redis URL.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Mapping
from pathlib import Path

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


AGENT_TAIL_LINES = 60


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
