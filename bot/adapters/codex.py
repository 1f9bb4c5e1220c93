"""Codex CLI's ``codex exec --json`` output, read line by line as progress for the run's thread.

Pure parsing plus a little state: feed each stdout line to :class:`CodexEvents` and post the
notes it returns. The event shapes changed between Codex versions; both the newer
``{"type": "item.completed", "item": {...}}`` events and the older ``{"msg": {"type": ...}}``
events are understood. Anything else (unknown events, non-JSON lines, banners) is ignored:
the agent's output must never break the run.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

NOTE_TEXT_LIMIT = 120
NOTE_COMMAND_LIMIT = 100
NOTE_FILES_LIMIT = 5
_SHELLS = {"bash", "sh", "zsh", "dash"}
# What a run's own CODEX_HOME gets from the operator's: the login and the configuration, nothing else
# (no session logs or history of other runs).
CODEX_HOME_FILES = ("auth.json", "config.toml")


def is_codex(argv: list[str]) -> bool:
    """Whether an agent command runs the Codex CLI (its JSONL events are then read as progress)."""
    return bool(argv) and os.path.basename(argv[0]) in ("codex", "codex.exe")


def operator_codex_home(environ: Mapping[str, str] | None = None) -> Path:
    """Where the operator's Codex keeps its login: `$CODEX_HOME`, else `~/.codex`."""
    environ = os.environ if environ is None else environ
    configured = environ.get("CODEX_HOME", "").strip()
    return Path(configured).expanduser() if configured else Path(environ.get("HOME") or Path.home()) / ".codex"


@contextlib.contextmanager
def run_codex_home(environ: Mapping[str, str] | None = None) -> Iterator[Path]:
    """A fresh CODEX_HOME for one run, with the operator's `auth.json` and `config.toml` copied in
    (when present); removed when the run's agent is done, sessions and logs included."""
    home = Path(tempfile.mkdtemp(prefix="trackbot-codex-home-"))
    try:
        source = operator_codex_home(environ)
        for name in CODEX_HOME_FILES:
            found = source / name
            if found.is_file():
                shutil.copyfile(found, home / name)
                (home / name).chmod(0o600)
        yield home
    finally:
        shutil.rmtree(home, ignore_errors=True)


# Codex reports dropped streams as errors while it retries; those are not the run's failure.
_TRANSIENT_RE = re.compile(r"\b(?:retrying|reconnecting|re-connecting)\b", re.IGNORECASE)


def display_command(command: Any) -> str:
    """The command as a person would type it: `bash -lc 'go test ./...'` becomes `go test ./...`."""
    if isinstance(command, list):
        words = [str(word) for word in command]
    elif isinstance(command, str):
        try:
            words = shlex.split(command)
        except ValueError:
            return command.strip()
    else:
        return ""
    if len(words) == 3 and os.path.basename(words[0]) in _SHELLS and words[1] in ("-c", "-lc", "-cl"):
        return words[2].strip()
    return shlex.join(words) if isinstance(command, list) else command.strip()


def _shorten(text: str, limit: int) -> str:
    """One line of at most `limit` characters, with an ellipsis when cut."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1].rstrip() + "…"


def _code(text: str) -> str:
    """`text` in backticks for Slack, which has no way to escape a backtick inside code."""
    return "`" + _shorten(text, NOTE_COMMAND_LIMIT).replace("`", "'") + "`"


def _exit_code(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


class CodexEvents:
    """What the agent did, learned from its JSONL events; `feed` returns a progress note or None.

    `worktree` (optional) turns the absolute paths Codex reports for changed files into paths
    relative to the repository.
    """

    def __init__(self, worktree: str | None = None) -> None:
        self._worktree = worktree.rstrip("/") + "/" if worktree else None
        self._commands: list[tuple[str, int | None]] = []
        self._pending: dict[str, int] = {}  # item or call id -> index in _commands, until it ends
        self._patches: dict[str, list[str]] = {}  # call id -> files of a patch not applied yet
        self._files: list[str] = []
        self._final = ""
        self._error: str | None = None
        self._thread_id: str | None = None
        self._usage: dict[str, int] = {}

    # --- what was learned ---

    @property
    def commands(self) -> list[tuple[str, int | None]]:
        """Commands the agent ran, in order, with exit codes (None: still running, killed or declined)."""
        return list(self._commands)

    @property
    def files_changed(self) -> list[str]:
        """Files the agent's edits touched, in first-touched order, once each."""
        return list(self._files)

    @property
    def final_message(self) -> str:
        """The agent's last message (its summary), or "" if it said nothing."""
        return self._final

    @property
    def error(self) -> str | None:
        """Why the agent's turn failed, or None. Cleared when a later turn completes."""
        return self._error

    @property
    def thread_id(self) -> str | None:
        """Codex's session id, when it reported one."""
        return self._thread_id

    @property
    def usage(self) -> dict[str, int]:
        """Token counts summed over completed turns (e.g. input_tokens, output_tokens)."""
        return dict(self._usage)

    # --- reading ---

    def feed(self, line: str) -> str | None:
        """Read one line of Codex's stdout; return a short note for the thread if it matters."""
        text = line.strip()
        if not text.startswith("{"):
            return None
        try:
            event = json.loads(text)
        except ValueError:
            return None
        if not isinstance(event, dict):
            return None
        try:
            msg = event.get("msg")
            if isinstance(msg, dict):
                return self._legacy(msg, event)
            return self._event(event)
        except (TypeError, ValueError, AttributeError, KeyError):
            # A shape this code does not expect: progress is best effort, never a crash.
            return None

    def _event(self, event: dict[str, Any]) -> str | None:
        kind = event.get("type")
        if kind == "thread.started":
            thread_id = event.get("thread_id")
            self._thread_id = thread_id if isinstance(thread_id, str) else self._thread_id
            return None
        if kind in ("item.started", "item.updated", "item.completed"):
            item = event.get("item")
            return self._item(kind, item) if isinstance(item, dict) else None
        if kind == "turn.completed":
            usage = event.get("usage")
            if isinstance(usage, dict):
                for key, value in usage.items():
                    if isinstance(value, int) and not isinstance(value, bool):
                        self._usage[key] = self._usage.get(key, 0) + value
            self._error = None
            return None
        if kind == "turn.failed":
            error = event.get("error")
            message = error.get("message") if isinstance(error, dict) else error
            return self._fail(str(message) if message else "the agent's turn failed")
        if kind == "error":
            return self._fail(str(event.get("message") or "unknown error"))
        return None

    def _item(self, kind: str, item: dict[str, Any]) -> str | None:
        item_type = item.get("type") or item.get("item_type")
        item_id = item.get("id")
        key = str(item_id) if item_id is not None else None
        if item_type == "command_execution":
            command = display_command(item.get("command"))
            if not command:
                return None
            if kind == "item.started":
                return self._command_started(key, command)
            if kind == "item.completed":
                return self._command_ended(key, command, _exit_code(item.get("exit_code")), item.get("status"))
            return None
        if kind != "item.completed":
            return None
        if item_type == "file_change":
            if item.get("status") not in (None, "completed"):
                return None
            changes = item.get("changes")
            paths = [c.get("path") for c in changes if isinstance(c, dict)] if isinstance(changes, list) else []
            return self._changed([p for p in paths if isinstance(p, str)])
        if item_type in ("agent_message", "assistant_message"):
            return self._said(item.get("text"))
        return None  # reasoning, todo lists, web searches, tool calls: not progress for people

    def _legacy(self, msg: dict[str, Any], event: dict[str, Any]) -> str | None:
        kind = msg.get("type")
        # Only `call_id` tells commands apart: the event's `id` is the turn's, shared by all of them.
        call_id = msg.get("call_id")
        key = str(call_id) if call_id is not None else None
        if kind == "exec_command_begin":
            command = display_command(msg.get("command"))
            return self._command_started(key, command) if command else None
        if kind == "exec_command_end":
            command = display_command(msg.get("command"))
            return self._command_ended(key, command, _exit_code(msg.get("exit_code")), None)
        if kind == "patch_apply_begin":
            self._patches[key or ""] = self._patch_paths(msg.get("changes"))
            return None
        if kind == "patch_apply_end":
            paths = self._patch_paths(msg.get("changes"))
            begun = self._patches.pop(key or "", [])
            if msg.get("success") is False:
                return None
            return self._changed(paths or begun)
        if kind == "agent_message":
            return self._said(msg.get("message"))
        if kind == "task_complete":
            last = msg.get("last_agent_message")
            if isinstance(last, str) and last.strip() and last.strip() != self._final:
                return self._said(last)
            return None
        if kind in ("error", "stream_error"):
            return self._fail(str(msg.get("message") or "unknown error"), transient=kind == "stream_error")
        return None

    # --- state changes, each returning the note for the thread ---

    def _command_started(self, key: str | None, command: str) -> str:
        self._commands.append((command, None))
        if key is not None:
            self._pending[key] = len(self._commands) - 1
        return f"running {_code(command)}"

    def _command_ended(self, key: str | None, command: str, exit_code: int | None, status: Any) -> str | None:
        index = self._pending.pop(key, None) if key is not None else None
        if index is None and key is None:
            # No id to match on: the latest open run of the same command, or of any command.
            open_ones = [
                i for i, (ran, code) in enumerate(self._commands) if code is None and (not command or ran == command)
            ]
            index = open_ones[-1] if open_ones else None
        if index is not None:
            command = command or self._commands[index][0]
            self._commands[index] = (command, exit_code)
        elif command:
            self._commands.append((command, exit_code))
        else:
            return None
        if exit_code is not None:
            return f"ran {_code(command)} → exit {exit_code}"
        outcome = status if isinstance(status, str) and status else "did not finish"
        return f"ran {_code(command)} → {outcome}"

    def _patch_paths(self, changes: Any) -> list[str]:
        """Paths of a legacy patch: `{path: {"add"|"update"|"delete": ...}}`, renames included."""
        if not isinstance(changes, dict):
            return []
        paths: list[str] = []
        for path, change in changes.items():
            paths.append(str(path))
            if isinstance(change, dict):
                update = change.get("update")
                move = update.get("move_path") if isinstance(update, dict) else None
                if isinstance(move, str) and move:
                    paths.append(move)
        return paths

    def _relative(self, path: str) -> str:
        if self._worktree and path.startswith(self._worktree):
            return path[len(self._worktree) :]
        return path

    def _changed(self, paths: list[str]) -> str | None:
        relative = [self._relative(p) for p in paths if p]
        if not relative:
            return None
        for path in relative:
            if path not in self._files:
                self._files.append(path)
        shown = ", ".join(relative[:NOTE_FILES_LIMIT])
        more = len(relative) - NOTE_FILES_LIMIT
        return f"changed {shown}" + (f" and {more} more" if more > 0 else "")

    def _said(self, text: Any) -> str | None:
        if not isinstance(text, str) or not text.strip():
            return None
        self._final = text.strip()
        return f"agent: {_shorten(self._final, NOTE_TEXT_LIMIT)}"

    def _fail(self, message: str, transient: bool = False) -> str:
        short = _shorten(message, NOTE_TEXT_LIMIT)
        if transient or _TRANSIENT_RE.search(message):
            return f"agent connection trouble: {short}"
        self._error = message.strip()
        return f"agent error: {short}"
