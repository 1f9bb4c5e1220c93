"""Merge polling: the prompt without a webhook, with conditional requests, once between webhook and poller."""

from __future__ import annotations

import threading
import time
import uuid

from test_handlers import PROMPT, latest_run, merged_payload, stack_with_pr, thread_texts, webhook

from bot import audit
from bot.local.console import LocalStack
from bot.poller import PollerLoop, poll_merges
from bot.runs import RunState


def pull_requests(stack: LocalStack, number: int = 1) -> list[tuple[str | None, int]]:
    """`(If-None-Match sent, status)` of every GET of PR `number` the GitHub twin answered."""
    path = f"/repos/{stack.services.settings.github_repository}/pulls/{number}"
    return [
        (r.headers.get("If-None-Match"), r.status)
        for r in stack.github.requests
        if r.method == "GET" and r.path == path
    ]


def prompts(stack: LocalStack) -> list[str]:
    return [t for t in thread_texts(stack, latest_run(stack)) if PROMPT in t]


def test_poller_prompts_once_for_a_merge_without_a_webhook(make_stack) -> None:  # type: ignore[no-untyped-def]
    stack = stack_with_pr(make_stack)
    stack.github.webhook_url = None  # no public URL: GitHub cannot reach us
    repo = stack.services.settings.github_repository

    # Open and unchanged: the first poll fetches, the second is conditional and costs a 304.
    assert poll_merges(stack.services) == []
    assert poll_merges(stack.services) == []
    (first_etag, first_status), (sent_etag, second_status) = pull_requests(stack)
    assert first_etag is None and first_status == 200
    assert sent_etag and second_status == 304

    stack.github.merge_pull(1, merged_by="alice")
    assert [d for d in stack.github.deliveries if d.action == "closed"] == []  # no merge webhook was sent
    assert poll_merges(stack.services) == [(repo, 1)]
    assert prompts(stack) == [PROMPT]
    assert pull_requests(stack)[-1] == (sent_etag, 200)  # conditional, and the merge changed it
    run = latest_run(stack)
    assert run.state is RunState.MERGED and run.merged_by == "alice"
    assert stack.slack.latest_with_button("approve_advance") is not None
    entry = audit.recent(stack.services.redis, action="merge_prompted")[0]
    assert (entry.who, entry.repo, entry.run_id) == ("alice", repo, run.id)

    # Polling again changes nothing: the run now waits for a maintainer, so its PR is not even asked about.
    asked = len(pull_requests(stack))
    assert poll_merges(stack.services) == []
    assert prompts(stack) == [PROMPT]
    assert len(pull_requests(stack)) == asked


def test_webhook_and_poller_for_the_same_merge_prompt_once(make_stack) -> None:  # type: ignore[no-untyped-def]
    stack = stack_with_pr(make_stack)
    stack.github.webhook_url = None
    stack.github.merge_pull(1, merged_by="alice")
    assert latest_run(stack).state is RunState.PR_OPEN

    # The webhook arrives while the poller is looking at the same merge.
    start = threading.Barrier(2)
    results: dict[str, object] = {}

    def deliver() -> None:
        start.wait()
        results["webhook"] = webhook(stack, "pull_request", merged_payload(stack), delivery=str(uuid.uuid4()))

    def poll() -> None:
        start.wait()
        results["poller"] = poll_merges(stack.services)

    threads = [threading.Thread(target=deliver), threading.Thread(target=poll)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert prompts(stack) == [PROMPT]
    by_webhook = results["webhook"] == (200, "prompted\n")
    by_poller = results["poller"] == [(stack.services.settings.github_repository, 1)]
    assert by_webhook != by_poller, results  # exactly one of them prompted
    assert poll_merges(stack.services) == [] and prompts(stack) == [PROMPT]


def test_a_real_webhook_first_then_the_poller_adds_nothing(make_stack) -> None:  # type: ignore[no-untyped-def]
    stack = stack_with_pr(make_stack)
    assert poll_merges(stack.services) == []  # the poller knows the open PR's ETag
    assert stack.github.merge_pull(1, merged_by="alice").webhook_status == 200
    assert poll_merges(stack.services) == []
    assert prompts(stack) == [PROMPT]


def test_a_failed_prompt_is_retried_by_the_next_poll(make_stack) -> None:  # type: ignore[no-untyped-def]
    stack = stack_with_pr(make_stack)
    stack.github.webhook_url = None
    repo = stack.services.settings.github_repository
    stack.github.merge_pull(1, merged_by="alice")

    stack.github.fail_next(status=503, method="GET", path_prefix=f"/repos/{repo}/pulls/1")
    assert poll_merges(stack.services) == []  # GitHub down: logged, nothing else happens
    stack.slack.fail_next("chat.postMessage", status=200, error="fatal_error")
    assert poll_merges(stack.services) == []  # Slack down: the prompt could not be posted
    assert prompts(stack) == [] and latest_run(stack).state is RunState.MERGED

    assert poll_merges(stack.services) == [(repo, 1)]  # merged but never prompted: asked about again
    assert prompts(stack) == [PROMPT]
    assert poll_merges(stack.services) == [] and prompts(stack) == [PROMPT]


def test_poller_loop_runs_in_the_background_and_only_one_process_polls_per_interval(make_stack) -> None:  # type: ignore[no-untyped-def]
    stack = stack_with_pr(make_stack)
    stack.github.webhook_url = None
    assert PollerLoop(stack.services, interval_s=0).start() is False  # 0 = off

    other = PollerLoop(stack.services, interval_s=30)
    assert other.run_once() is not None  # takes this interval's lock
    loop = PollerLoop(stack.services, interval_s=0.2)
    assert loop.run_once() is None  # another process polled this interval
    stack.services.redis.delete(PollerLoop.LOCK_KEY)

    assert loop.start() is True
    try:
        stack.github.merge_pull(1, merged_by="alice")
        deadline = time.monotonic() + 10
        while not prompts(stack) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert prompts(stack) == [PROMPT]
        rounds = loop.rounds
        time.sleep(0.5)
        assert loop.rounds > rounds  # it keeps polling
    finally:
        loop.stop()
    assert prompts(stack) == [PROMPT]


def test_a_worker_polls_merges_when_no_webhook_arrives(make_stack, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("TRACKBOT_POLL_INTERVAL", "1")
    stack = make_stack()
    stack.handle("/track run")
    stack.handle(":wait 120")
    stack.github.webhook_url = None  # as in Socket Mode: GitHub cannot reach the bot
    stack.github.merge_pull(1)
    prompt = stack.slack.wait_for(lambda m: m.text.startswith("PR #1 merged. Advance NEXT_TRACK"), timeout=20)
    assert [a for a, _, _ in prompt.buttons()] == ["approve_advance", "dismiss_advance"]


def test_poller_follows_the_advance_pr_to_its_merge_without_a_webhook(make_stack) -> None:  # type: ignore[no-untyped-def]
    from test_handlers import ALICE, click

    stack = stack_with_pr(make_stack)
    stack.github.merge_pull(1, merged_by="alice")  # its webhook prompts
    stack.github.webhook_url = None  # from now on GitHub cannot reach us
    repo = stack.services.settings.github_repository
    stack.github.protect("main", required_approvals=1)
    assert click(stack, "approve_advance", ALICE).text.startswith("The advance waits for PR #2")
    assert poll_merges(stack.services) == []  # open: nothing to say

    stack.github.merge_pull(2, merged_by="carol")
    assert poll_merges(stack.services) == [(repo, 2)]
    assert poll_merges(stack.services) == []
    said = [t for t in thread_texts(stack, latest_run(stack)) if "NEXT_TRACK is now 2" in t]
    assert len(said) == 1
    assert latest_run(stack).state is RunState.ADVANCED
