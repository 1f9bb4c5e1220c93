"""The progress message: one per run, updated at most once a second, newest state last."""

from __future__ import annotations

import time

from redis import Redis
from slack_sdk import WebClient

from bot.adapters.slack import SlackPoster
from bot.local.slack_api import SlackTwin
from bot.outbox import Outbox
from bot.progress import MIN_UPDATE_INTERVAL_S, RunThread
from bot.redact import Redactor
from bot.runs import Outcome, Run, RunState, StepResult
from bot.store import RunStore


def test_rapid_progress_is_coalesced_to_one_update_a_second_and_the_newest_state_wins(redis: Redis) -> None:
    with SlackTwin("xoxb-test-token", {"U0ALICE": "alice"}) as slack:
        poster = SlackPoster(WebClient(token="xoxb-test-token", base_url=slack.api_url), Redactor())
        store = RunStore(redis)
        run = Run(
            repo="acme/widgets",
            track=1,
            slug="hello",
            doc="d.md",
            branch="track-1-hello",
            requested_by="U0ALICE",
            channel="C0TRACKS",
            state=RunState.RUNNING,
        )
        store.add(run)
        run.thread_ts = poster.post("C0TRACKS", "parent")
        thread = RunThread(Outbox(poster, store), store.save)
        started = time.monotonic()
        for n in range(30):  # thirty step changes in well under a second
            run.steps.append(StepResult(name="gates", outcome=Outcome.OK, summary=f"change {n}"))
            thread.update(run)
        run.state = RunState.PR_OPEN
        thread.update(run)  # the final state, as the pipeline sends it
        thread.report(run)
        elapsed = time.monotonic() - started
        updates = [params for method, params in slack.calls if method == "chat.update"]
        posts = [m for m in slack.snapshot() if m.thread_ts == run.thread_ts]
        progress = [m for m in posts if m.ts == run.progress_ts]
        assert len(progress) == 1  # one progress message, posted once
        assert len(updates) <= elapsed / MIN_UPDATE_INTERVAL_S + 1, (len(updates), elapsed)
        assert "change 29" in progress[0].text and "PR open" in progress[0].text  # the newest state
        assert posts[-1].text.startswith("*Report")  # the report comes after the final progress


def test_a_long_report_is_cut_with_a_link_to_the_full_report_in_the_pr() -> None:
    from bot.render import SLACK_REPORT_CHARS, report_text
    from bot.runs import ChangedFile

    run = Run(
        repo="acme/widgets",
        track=1,
        slug="hello",
        doc="d.md",
        branch="track-1-hello",
        requested_by="U0ALICE",
        channel="C0TRACKS",
        state=RunState.PR_OPEN,
        pr_number=7,
        pr_url="https://github.com/acme/widgets/pull/7",
        changed_files=[ChangedFile(status="A", path=f"gen/file-{n:04d}.txt") for n in range(600)],
    )
    text = report_text(run)
    assert len(text) <= SLACK_REPORT_CHARS
    assert text.startswith("*Report — Track 1: hello*") and ":link: PR #7" in text
    assert text.endswith("The full report is in the PR body: https://github.com/acme/widgets/pull/7")


def test_a_long_report_line_is_split_in_order_and_no_section_is_empty() -> None:
    from bot.render import section_texts

    text = "first\n\n" + "L" * 7000 + "\nlast\n\n\n"
    pieces = section_texts(text, 2900)
    assert "".join(pieces).replace("\n", "") == text.replace("\n", "")  # every character, in order
    assert pieces[0].strip() == "first" and pieces[-1].strip().endswith("last")
    assert all(piece.strip() and len(piece) <= 2900 for piece in pieces)
