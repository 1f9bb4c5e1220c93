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
    stack = make_stack(channels={"C0OTHER": "local/sample-upstream"})
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
    gate_line = next(
        line for line in report.splitlines() if "bash scripts/hello.sh" in line or "script scripts/hello" in line
    )
    assert "passed" in gate_line
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


def _slow_first_agent(tmp_path) -> str:  # type: ignore[no-untyped-def]
    """An agent that takes 30 s the first time it runs, and is quick after."""
    from conftest import agent_script

    marker = tmp_path / "ran-once"
    return agent_script(
        tmp_path,
        "import sys, time, pathlib\nsys.stdin.read()\n"
        f"marker = pathlib.Path({str(marker)!r})\n"
        "if not marker.exists():\n    marker.write_text('1')\n    time.sleep(30)\n"
        "pathlib.Path('app/x.txt').write_text('x')\n",
    )


def _wait_for(predicate, timeout: float = 30.0):  # type: ignore[no-untyped-def]
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError("condition not met in time")


def test_cancel_stops_a_running_run_and_retry_runs_it_again(make_stack, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from test_handlers import BOB

    stack = make_stack(agent=_slow_first_agent(tmp_path))
    repo = "local/sample-upstream"
    stack.handle("/track run")
    first = _wait_for(lambda: (r := stack.services.store.latest(repo)) and r.current_step == "agent" and r)
    refused = command(stack, "cancel", user=BOB)
    assert refused.response_type == "ephemeral" and "Only <@U0ALICE> (who queued it) or a maintainer" in refused.text
    stopping = command(stack, "cancel")
    assert stopping.text.startswith("Stopping Track 1: hello-endpoint")
    stack.handle(":wait 60")
    cancelled = stack.services.store.get(first.id)
    assert cancelled is not None and cancelled.state.value == "cancelled" and cancelled.cancelled_by == ALICE
    assert stack.github.pulls() == []
    # The agent is quick now: retry re-runs the same track in the same thread and opens the PR.
    retried = command(stack, "retry")
    assert retried.text.startswith("Retrying Track 1: hello-endpoint")
    stack.handle(":wait 60")
    retry_run = stack.services.store.latest(repo)
    assert retry_run is not None and retry_run.retry_of == first.id and retry_run.thread_ts == first.thread_ts
    assert retry_run.state.value == "pr_open"
    assert [p.title for p in stack.github.pulls()] == ["Track 1: hello-endpoint"]


def test_audit_lists_decisions_for_maintainers_only(make_stack) -> None:  # type: ignore[no-untyped-def]
    from test_handlers import BOB

    stack = make_stack()
    stack.handle("/track run")
    stack.handle(":wait 120")
    stack.handle(":merge 1")
    stack.handle(":as bob")
    stack.handle(":click approve_advance")
    stack.handle(":as alice")
    stack.handle(":click approve_advance")
    refused = command(stack, "audit", user=BOB)
    assert refused.text.startswith(":no_entry: Only maintainers can read the audit log")
    log = command(stack, "audit").text
    lines = log.splitlines()
    assert lines[0] == "*Audit — local/sample-upstream*"
    actions = [line.split("*")[1] for line in lines[1:]]
    assert actions[:4] == ["knob_advanced", "approved", "refused", "run_queued"]
    assert "<@U0BOB>" in lines[3]


def test_two_person_rule_needs_another_maintainer(make_stack) -> None:  # type: ignore[no-untyped-def]
    from test_handlers import BOB, click

    stack = make_stack(two_person_rule=True, maintainers=[ALICE, BOB])
    stack.handle("/track run")
    stack.handle(":wait 120")
    stack.handle(":merge 1")
    own = click(stack, "approve_advance")
    assert own.text.startswith(":no_entry: Two-person rule: you queued this run") and "<@U0BOB>" in own.text
    other = click(stack, "approve_advance", user=BOB)
    assert other.text == "Advanced NEXT_TRACK from 1 to 2."


def test_a_warm_status_makes_only_conditional_github_requests(make_stack) -> None:  # type: ignore[no-untyped-def]
    stack = make_stack()
    command(stack, "status")
    before = len(stack.github.requests)
    second = command(stack, "status")
    assert "NEXT_TRACK = *1*" in second.text
    warm = stack.github.requests[before:]
    assert warm, "status asked GitHub nothing at all"
    for request in warm:
        assert request.method == "GET" and "If-None-Match" in request.headers, request
        assert request.status == 304, request


def test_credentials_that_cannot_see_the_repository_are_named_not_a_missing_knob(make_stack) -> None:  # type: ignore[no-untyped-def]
    stack = make_stack()
    stack.github.hidden = True  # GitHub's 404 for a private repository the token was not given
    repo = stack.services.settings.github_repository
    for text in ("status", "run"):
        answer = command(stack, text, ALICE).text
        assert f"the GitHub credentials cannot see {repo}" in answer, answer
        assert "does not exist" not in answer
    assert stack.services.store.latest(repo) is None  # nothing was queued


def test_run_in_a_channel_the_bot_is_not_in_says_to_invite_it_and_queues_nothing(make_stack) -> None:  # type: ignore[no-untyped-def]
    stack = make_stack()
    stack.slack.not_joined.add(CHANNEL_ID)
    answer = command(stack, "run", ALICE)
    assert "I am not in this channel" in answer.text and "`/invite @trackbot`" in answer.text
    assert stack.services.store.latest(stack.services.settings.github_repository) is None
    assert stack.github.pulls() == []
