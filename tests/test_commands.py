"""The /track subcommands as a user sees them: plan, history, status card, channels."""

from __future__ import annotations

from test_handlers import ALICE, command

from bot.local.console import CHANNEL_ID


def test_plan_lists_every_track_as_merged_next_or_upcoming(make_stack) -> None:  # type: ignore[no-untyped-def]
    stack = make_stack()
    stack.handle("/track run")
    stack.handle(":wait 120")
    stack.handle(":merge 1")
    stack.handle(":click approve_advance")
    plan = command(stack, "plan").text
    lines = plan.splitlines()
    assert lines[0].startswith("*local/sample-upstream* — plan `v1`")
    assert lines[1].startswith(":white_check_mark: Track 1: hello-endpoint — merged — PR #1 ")
    assert lines[2].startswith(":arrow_right: Track 2: cancel-endpoint-spec — next: idle")
    assert lines[3] == ":white_circle: Track 3: greeting-go-package — upcoming"


def test_history_shows_who_ran_what_and_how_it_ended(make_stack) -> None:  # type: ignore[no-untyped-def]
    stack = make_stack()
    assert command(stack, "history").text == "No runs of local/sample-upstream yet."
    stack.handle("/track run")
    stack.handle(":wait 120")
    history = command(stack, "history")
    assert history.response_type == "in_channel"
    assert "Track 1: hello-endpoint — PR open" in history.text
    assert f"<@{ALICE}>" in history.text and "PR #1 " in history.text


def test_status_card_shows_the_last_run(make_stack) -> None:  # type: ignore[no-untyped-def]
    stack = make_stack()
    stack.handle("/track run")
    stack.handle(":wait 120")
    status = command(stack, "status").text
    assert "State: PR open: PR #1 " in status
    assert "Last run: Track 1: hello-endpoint — PR open" in status


def test_a_channel_not_mapped_to_a_repository_is_told_where_to_go(make_stack) -> None:  # type: ignore[no-untyped-def]
    stack = make_stack()
    stack.services.settings.channels = {"C0OTHER": stack.services.settings.repositories[0]}
    answer = command(stack, "run")
    assert answer.response_type == "ephemeral"
    assert "This channel is not set up for trackbot. Use <#C0OTHER> (local/sample-upstream)" in answer.text
    assert stack.services.store.runs("local/sample-upstream") == []
    assert CHANNEL_ID not in stack.services.settings.channels


def test_dry_run_does_everything_but_push_and_pr(make_stack) -> None:  # type: ignore[no-untyped-def]
    import subprocess

    stack = make_stack()
    stack.handle("/track run --dry-run")
    stack.handle(":wait 120")
    texts = [m.text for m in stack.slack.snapshot()]
    assert any(t.startswith("Track 1: hello-endpoint — dry run queued by") for t in texts)
    report = next(t for t in texts if t.startswith("*Report — Track 1"))
    assert "*Dry run*" in report and "scripts/hello.sh" in report and "2 files changed" in report
    assert "script scripts/hello.sh: **passed**" in report
    assert stack.github.pulls() == []
    branches = subprocess.run(
        ["git", "--git-dir", str(stack.repo), "branch", "--list", "track-*"], capture_output=True, text=True, check=True
    ).stdout
    assert branches.strip() == ""
    # The dry run does not stand in the way of the real run.
    stack.handle("/track run")
    stack.handle(":wait 120")
    assert [p.title for p in stack.github.pulls()] == ["Track 1: hello-endpoint"]


def test_run_refuses_unknown_flags(make_stack) -> None:  # type: ignore[no-untyped-def]
    stack = make_stack()
    answer = command(stack, "run --force")
    assert answer.text.startswith("`/track run` does not take --force.")
    assert stack.services.store.runs("local/sample-upstream") == []
