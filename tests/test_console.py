"""The console contract: slash commands, :merge, :click, :wait against the real bot and worker."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from test_rules_run import upstream_with
from test_run import agent

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


PHASE_DOC = """\
# Phase {n}: local smoke

## What you are allowed to change

- `app/` phase handler
- Unit tests for the phase handler

## Required gates

- `test -s app/phase.txt`
"""


def test_a_phase_plan_runs_beside_the_tracks_with_the_same_commands(make_stack, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    repo = upstream_with(
        tmp_path,
        {
            "configs/NEXT_PHASE.json": '{\n  "plan_version": "v1.02",\n  "next": 16\n}\n',
            "docs/plan/v1.02/phases/phase-16.md": PHASE_DOC.format(n=16),
            "docs/plan/v1.02/phases/phase-17.md": PHASE_DOC.format(n=17),
        },
    )
    stack = make_stack(repo=repo, agent=agent(tmp_path, 'put("app/phase.txt", "phase\\n")\n'))
    stack.handle("/track status --plan phases")
    status = _texts(stack)[-1]
    assert "`NEXT_PHASE.json` next = *16*" in status and "Phase 16: *phase-16*" in status
    stack.handle("/track run --plan phases")
    stack.handle(":wait 120")
    report = next(t for t in _texts(stack) if t.startswith("*Report — Phase 16*"))
    assert "PR #1" in report and "gate" in report
    assert '`app/phase.txt` — line 5: "app/ phase handler" (`app/`)' in report
    pr = stack.github.pulls()[0]
    assert pr.title == "Phase 16" and pr.head_ref == "phase-16"
    assert _upstream_git(stack, "log", "-1", "--format=%s", "phase-16").strip() == "feat(phase16): implement phase 16"

    stack.handle(":merge 1")
    assert any("PR #1 merged. Advance next phase from 16 to 17?" in t for t in _texts(stack))
    stack.handle(":click approve_advance")
    assert '"next": 17' in _upstream_git(stack, "show", "main:configs/NEXT_PHASE.json")
    assert _upstream_git(stack, "log", "-1", "--format=%s", "main").strip() == "Update next phase value from 16 to 17"
    assert any("Next: Phase 17: phase-17" in t for t in _texts(stack))
    # The track runner of the same repository is where it was.
    assert '"next_track": 1' in _upstream_git(stack, "show", "main:configs/NEXT_TRACK.json")
    stack.handle("/track status")
    assert "Track 1: *hello-endpoint*" in _texts(stack)[-1]
    stack.handle("/track run --plan nonsense")
    assert "there is no plan `nonsense`" in _texts(stack)[-1] and "tracks, phases" in _texts(stack)[-1]


def test_tour_with_a_protected_main_shows_the_advance_through_its_own_pr(tmp_path: Path, redis_url: str, redis) -> None:  # type: ignore[no-untyped-def]
    result = subprocess.run(
        [sys.executable, "-m", "bot.cli", "console", "--tour", "--protect-main", "--work-dir", str(tmp_path / "w")],
        capture_output=True,
        text=True,
        timeout=300,
        stdin=subprocess.DEVNULL,
        env={**__import__("os").environ, "REDIS_URL": redis_url},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    out = result.stdout
    waiting, merged = out.index("waits for PR #2"), out.index("NEXT_TRACK is now 2")
    for expected in (
        "main is protected (GitHub: Changes must be made through a pull request.)",
        "Update next_track value from 1 to 2",
        "merged, advance waiting for its PR",
        "Track 2: cancel-endpoint-spec",
        "NEXT_TRACK = *2*",
    ):
        assert expected in out, expected
    assert waiting < merged
