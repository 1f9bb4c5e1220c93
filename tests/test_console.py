"""The console contract: slash commands, :merge, :click, :wait against the real bot and worker."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from bot.local.console import USERS


def _upstream_git(stack, *args: str) -> str:  # type: ignore[no-untyped-def]
    """Output of a git command in the stack's upstream repository."""
    return subprocess.run(
        ["git", "--git-dir", str(stack.repo), *args], capture_output=True, text=True, check=True
    ).stdout


def _texts(stack) -> list[str]:  # type: ignore[no-untyped-def]
    return [m.text for m in stack.slack.snapshot()]


def test_whole_loop_runs_track_one_and_advances_to_track_two(make_stack) -> None:  # type: ignore[no-untyped-def]
    stack = make_stack()
    stack.handle("/track run")
    stack.handle(":wait 120")
    report = next(t for t in _texts(stack) if t.startswith("*Report — Track 1: hello-endpoint*"))
    assert "PR #1" in report
    pr = stack.github.pulls()[0]
    assert pr.title == "Track 1: hello-endpoint" and pr.head_ref == "track-1-hello-endpoint"
    stack.handle(":merge 1")
    assert any("PR #1 merged. Advance NEXT_TRACK from 1 to 2?" in t for t in _texts(stack))
    stack.handle(":click approve_advance")
    assert '"next_track": 2' in _upstream_git(stack, "show", "main:configs/NEXT_TRACK.json")
    assert _upstream_git(stack, "log", "-1", "--format=%s", "main").strip() == "Update next_track value from 1 to 2"
    stack.handle("/track status")
    assert "Track 2: *cancel-endpoint-spec*" in _texts(stack)[-1]


def test_bob_may_not_approve_and_is_told_who_may(make_stack) -> None:  # type: ignore[no-untyped-def]
    stack = make_stack()
    stack.handle("/track run")
    stack.handle(":wait 120")
    stack.handle(":merge 1")
    stack.handle(":as bob")
    stack.handle(":click approve_advance")
    refusal = stack.slack.snapshot()[-1]
    assert refusal.user == USERS["bob"]
    assert "Only a maintainer can approve" in refusal.text and f"<@{USERS['alice']}>" in refusal.text
    assert '"next_track": 1' in _upstream_git(stack, "show", "main:configs/NEXT_TRACK.json")


def test_demo_tour_prints_the_whole_loop(tmp_path: Path, redis_url: str, redis) -> None:  # type: ignore[no-untyped-def]
    result = subprocess.run(
        [sys.executable, "-m", "bot.cli", "console", "--tour", "--work-dir", str(tmp_path / "w")],
        capture_output=True,
        text=True,
        timeout=300,
        stdin=subprocess.DEVNULL,
        env={**__import__("os").environ, "REDIS_URL": redis_url},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    out = result.stdout
    for expected in (
        "NEXT_TRACK = *1*",
        "Track 1: hello-endpoint — queued by @alice",
        "*Report — Track 1",
        "PR #1 merged. Advance NEXT_TRACK from 1 to 2?",
        "Only a maintainer can approve",
        "NEXT_TRACK advanced from 1 to 2 by @alice",
        "NEXT_TRACK = *2*",
    ):
        assert expected in out, expected
