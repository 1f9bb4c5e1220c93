"""The agent as the Codex CLI, through the real worker: the default command, its JSONL events as live
progress, its last message as the agent's summary, a CODEX_HOME of its own per run, and the idle
watchdog.

A fake `codex` (a Python script first on PATH) stands in for the real one: it reads the prompt on
stdin, prints events of the shapes `codex exec --json` prints (see tests/test_codex_events.py),
edits files in its work tree, and records what it saw (argv, cwd, CODEX_HOME) outside the tree.
"""

from __future__ import annotations

import json
import os
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
from test_rules_run import assert_stopped_on
from test_run import MakeStack, pulls, pushed_file, run_track

from bot.config import DEFAULT_AGENT_COMMAND
from bot.local.console import LocalStack

# The sandbox hides the host from agents and gates; here the fake `codex` records what it saw
# into a file on the host.
pytestmark = pytest.mark.unconfined

FAKE_CODEX = """\
#!{python}
import json, os, pathlib, sys, time

BIN = pathlib.Path({bin!r})
mode = (BIN / "codex-mode").read_text().strip() if (BIN / "codex-mode").exists() else "work"
prompt = sys.stdin.read()
args = sys.argv[1:]
home = os.environ.get("CODEX_HOME", "")
seen = {{
    "args": args,
    "cwd": os.getcwd(),
    "prompt": prompt,
    "codex_home": home,
    "home_files": sorted(os.listdir(home)) if home and os.path.isdir(home) else None,
    "auth": None,
}}
if home and pathlib.Path(home, "auth.json").exists():
    seen["auth"] = pathlib.Path(home, "auth.json").read_text()
(BIN / "codex-seen.json").write_text(json.dumps(seen))
if "-C" in args:
    os.chdir(args[args.index("-C") + 1])
pathlib.Path(home, "sessions").mkdir(exist_ok=True)  # codex writes its session logs under CODEX_HOME

def event(obj, pause=1.1):
    print(json.dumps(obj), flush=True)
    time.sleep(pause)  # trackbot shows at most one live note a second

event({{"type": "thread.started", "thread_id": "0199a213-81c0-7800-8aa1-bbab2a035a53"}}, 0)
event({{"type": "turn.started"}}, 0)
if mode == "idle":
    time.sleep(60)
    (BIN / "codex-woke").write_text("the watchdog did not stop me")
    sys.exit(0)
if mode == "fail":
    event({{"type": "turn.failed", "error": {{"message": "stream disconnected: quota exceeded"}}}}, 0)
    sys.exit(1)
event({{"type": "item.started", "item": {{"id": "item_1", "type": "command_execution",
       "command": "bash -lc 'go test ./...'", "aggregated_output": "", "exit_code": None, "status": "in_progress"}}}})
event({{"type": "item.completed", "item": {{"id": "item_1", "type": "command_execution",
       "command": "bash -lc 'go test ./...'", "aggregated_output": "ok\\n", "exit_code": 0, "status": "completed"}}}})
pathlib.Path("scripts").mkdir(exist_ok=True)
pathlib.Path("scripts/hello.sh").write_text("#!/usr/bin/env bash\\necho 'hello from track 1'\\n")
pathlib.Path("app").mkdir(exist_ok=True)
pathlib.Path("app/hello.txt").write_text("hello\\n")
cwd = os.getcwd()
event({{"type": "item.completed", "item": {{"id": "item_2", "type": "file_change", "status": "completed",
       "changes": [{{"path": cwd + "/scripts/hello.sh", "kind": "add"}},
                   {{"path": cwd + "/app/hello.txt", "kind": "add"}}]}}}})
event({{"type": "item.completed", "item": {{"id": "item_3", "type": "agent_message",
       "text": "Added scripts/hello.sh and app/hello.txt; bash scripts/hello.sh prints the greeting."}}}}, 0)
event({{"type": "turn.completed", "usage": {{"input_tokens": 1200, "output_tokens": 80}}}}, 0)
"""


class FakeCodex:
    """The fake `codex` on PATH, and what it saw."""

    def __init__(self, root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.bin = root / "fake-bin"
        self.bin.mkdir()
        script = self.bin / "codex"
        script.write_text(FAKE_CODEX.format(python=sys.executable, bin=str(self.bin)))
        script.chmod(0o755)
        monkeypatch.setenv("PATH", f"{self.bin}{os.pathsep}{os.environ['PATH']}")

    def mode(self, mode: str) -> None:
        (self.bin / "codex-mode").write_text(mode)

    def seen(self) -> dict[str, Any]:
        return dict(json.loads((self.bin / "codex-seen.json").read_text()))


@pytest.fixture
def codex(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeCodex:
    return FakeCodex(tmp_path, monkeypatch)


@pytest.fixture
def operator_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The operator's CODEX_HOME: a login, a config, and history that is none of a run's business."""
    home = tmp_path / "operator-codex"
    home.mkdir()
    (home / "auth.json").write_text('{"OPENAI_API_KEY": "sk-operator"}')
    (home / "config.toml").write_text('model = "gpt-5-codex"\n')
    (home / "history.jsonl").write_text('{"text": "another project"}\n')
    monkeypatch.setenv("CODEX_HOME", str(home))
    return home


def live_notes(stack: LocalStack) -> list[str]:
    """Every live note the progress message showed (the context block of each chat.update)."""
    assert stack.slack is not None
    notes = []
    for method, params in stack.slack.calls:
        if method != "chat.update":
            continue
        blocks = params.get("blocks") or []
        if isinstance(blocks, str):
            blocks = json.loads(blocks)
        for block in blocks:
            if block.get("type") == "context":
                notes += [element.get("text", "") for element in block.get("elements", [])]
    return notes


def test_the_default_codex_command_runs_with_its_events_as_progress_and_its_own_codex_home(
    make_stack: MakeStack, codex: FakeCodex, operator_home: Path
) -> None:
    stack = make_stack(agent=DEFAULT_AGENT_COMMAND)
    run_track(stack)

    seen = codex.seen()
    worktree = seen["cwd"]
    assert seen["args"] == [
        "exec", "--json", "--sandbox", "workspace-write", "--skip-git-repo-check", "-C", worktree, "-"
    ]  # fmt: skip
    assert "Track 1 (hello-endpoint)" in seen["prompt"]
    # A CODEX_HOME of its own: the operator's login and config, none of its history; gone after the run.
    assert seen["codex_home"] and Path(seen["codex_home"]) != operator_home
    assert not seen["codex_home"].startswith(worktree)
    assert seen["home_files"] == ["auth.json", "config.toml"]
    assert seen["auth"] == '{"OPENAI_API_KEY": "sk-operator"}'
    assert not Path(seen["codex_home"]).exists()

    notes = live_notes(stack)
    for expected in (
        "running `go test ./...`",
        "ran `go test ./...` → exit 0",
        "changed scripts/hello.sh, app/hello.txt",
    ):
        assert expected in notes, (expected, notes)
    assert not [note for note in notes if note.startswith("{")]  # never raw JSON

    [pr] = pulls(stack)
    body = pr.body or ""
    summary = body.split("### Agent's summary", 1)[1].split("###", 1)[0]
    assert "Added scripts/hello.sh and app/hello.txt; bash scripts/hello.sh prints the greeting." in summary
    assert '"type"' not in summary
    assert "`codex exec --json --sandbox workspace-write --skip-git-repo-check -C" in body and "→ exit 0" in body
    assert pushed_file(stack, "app/hello.txt") == "hello\n"


def test_an_idle_agent_is_stopped_by_the_watchdog(
    make_stack: MakeStack, codex: FakeCodex, operator_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TRACKBOT_AGENT_IDLE_TIMEOUT", "2")
    codex.mode("idle")
    stack = make_stack(agent=DEFAULT_AGENT_COMMAND)
    started = time.monotonic()
    run_track(stack, wait=60)
    assert time.monotonic() - started < 40
    assert_stopped_on(stack, "the agent was idle for 2 s", "TRACKBOT_AGENT_IDLE_TIMEOUT", main_commits=1)
    time.sleep(1)
    assert not (codex.bin / "codex-woke").exists()  # its process group was stopped, not left behind
    assert not Path(codex.seen()["codex_home"]).exists()


def test_a_failed_codex_turn_stops_the_run_with_its_error(
    make_stack: MakeStack, codex: FakeCodex, operator_home: Path
) -> None:
    codex.mode("fail")
    stack = make_stack(agent=DEFAULT_AGENT_COMMAND)
    run_track(stack)
    assert_stopped_on(stack, "the agent exited 1: stream disconnected: quota exceeded", main_commits=1)


def test_without_an_operator_login_the_run_still_gets_an_empty_codex_home(
    make_stack: MakeStack, codex: FakeCodex, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CODEX_HOME", str(tmp_path / "no-such-codex-home"))
    stack = make_stack(agent=DEFAULT_AGENT_COMMAND)
    run_track(stack)
    seen = codex.seen()
    assert seen["home_files"] == [] and seen["auth"] is None
    assert len(pulls(stack)) == 1
    assert textwrap.dedent(pushed_file(stack, "scripts/hello.sh")).startswith("#!/usr/bin/env bash")


# -- the pure parts ------------------------------------------------------------------------------------------


def test_the_idle_watchdog_stops_a_silent_command_and_spares_a_chatty_one(tmp_path: Path) -> None:
    from bot.adapters.process import run_process

    env = {"PATH": os.environ["PATH"]}
    started = time.monotonic()
    silent = run_process(["bash", "-c", "echo hi; sleep 30; echo late"], tmp_path, env, 60, idle_timeout_s=0.5)
    assert silent.idle and not silent.timed_out and silent.exit_code is None
    assert silent.output_tail == "hi" and time.monotonic() - started < 15
    chatty = run_process(
        ["bash", "-c", "for i in 1 2 3 4 5 6; do echo $i; sleep 0.3; done"], tmp_path, env, 60, idle_timeout_s=1.0
    )
    assert chatty.ok and not chatty.idle and chatty.output_tail.splitlines()[-1] == "6"


def test_a_runs_codex_home_copies_only_the_login_and_config(tmp_path: Path) -> None:
    from bot.adapters.codex import is_codex, run_codex_home

    operator = tmp_path / "home" / ".codex"
    operator.mkdir(parents=True)
    (operator / "auth.json").write_text("{}")
    (operator / "sessions").mkdir()
    with run_codex_home({"HOME": str(tmp_path / "home")}) as home:
        assert sorted(p.name for p in home.iterdir()) == ["auth.json"]
        assert (home / "auth.json").stat().st_mode & 0o077 == 0
    assert not home.exists()
    assert is_codex(["/usr/local/bin/codex", "exec"]) and not is_codex(["python", "-m", "codex"])
