"""Every HTTP entry point of the bot, driven by real signed requests as Slack and GitHub send them.

Nothing of trackbot is mocked: each test starts the local stack (Slack and GitHub twins, the bot's
HTTP app, a real RQ worker process) and checks what a user would see: the HTTP status, the answer
the Slack twin recorded, the knob on the upstream's main.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import subprocess
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from bot.local.console import CHANNEL_ID, CHANNEL_NAME, USERS, LocalStack
from bot.local.github_api import sign_webhook
from bot.local.slack_api import SlackMessage
from bot.local.slack_requests import block_actions_body, post_signed, slash_command_body
from bot.runs import Run, RunState

ALICE, BOB, CAROL = USERS["alice"], USERS["bob"], "U0CAROL"  # maintainer; runner; neither
NAMES = {ALICE: "alice", BOB: "bob", CAROL: "carol"}
KNOB = "configs/NEXT_TRACK.json"
BRANCH = "track-1-hello-endpoint"
PROMPT = "PR #1 merged. Advance NEXT_TRACK from 1 to 2?"
ADVANCE_MESSAGE = "Update next_track value from 1 to 2"


# -- Slack: signed slash commands and clicks, and the answers they get ---------------------------


def answers(stack: LocalStack) -> list[SlackMessage]:
    """What the bot answered through response_urls (commands and clicks), oldest first."""
    return [m for m in stack.slack.snapshot() if m.kind == "response_url"]


def wait_answers(stack: LocalStack, before: int, count: int = 1, timeout: float = 20) -> list[SlackMessage]:
    """The answers after the first `before`, once there are `count` of them."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = answers(stack)[before:]
        if len(found) >= count:
            return found
        time.sleep(0.02)
    seen = "\n".join(m.describe() for m in stack.slack.snapshot())
    raise AssertionError(f"expected {count} new answer(s) within {timeout}s; Slack saw:\n{seen}")


def send_command(
    stack: LocalStack,
    text: str,
    user: str = ALICE,
    secret: str | None = None,
    timestamp: int | None = None,
    headers: dict[str, str] | None = None,
) -> int:
    """POST `/track <text>` as Slack does (signed with the app's secret unless told otherwise); the status."""
    response_url = stack.slack.new_response_url(CHANNEL_ID, user)
    body = slash_command_body("/track", text, user, NAMES[user], CHANNEL_ID, CHANNEL_NAME, response_url)
    status, _, _ = post_signed(
        stack.bot_url + "/slack/events",
        body,
        secret or stack.signing_secret,
        timestamp=timestamp,
        extra_headers=headers,
    )
    return status


def command(stack: LocalStack, text: str, user: str = ALICE) -> SlackMessage:
    """`/track <text>` answered 200, and the bot's answer."""
    before = len(answers(stack))
    assert send_command(stack, text, user) == 200
    return wait_answers(stack, before)[0]


def send_click(stack: LocalStack, action_id: str, user: str = ALICE, message: SlackMessage | None = None) -> int:
    """Press the button `action_id` of `message` (default: the latest with one) as `user`; the status.

    Passing a message kept from earlier presses a button that a Slack client still shows although
    the bot has since replaced it (a stale screen, a double click).
    """
    message = message or stack.slack.latest_with_button(action_id)
    assert message is not None, f"no message has a {action_id} button"
    value = next(v for a, _, v in message.buttons() if a == action_id)
    response_url = stack.slack.new_response_url(message.channel, user, message.ts)
    body = block_actions_body(
        action_id,
        value,
        "actions",
        user,
        NAMES[user],
        message.channel,
        dataclasses.asdict(message),
        response_url,
        channel_name=CHANNEL_NAME,
    )
    status, _, _ = post_signed(stack.bot_url + "/slack/events", body, stack.signing_secret)
    return status


def click(stack: LocalStack, action_id: str, user: str = ALICE, message: SlackMessage | None = None) -> SlackMessage:
    """A click answered 200, and the bot's answer to the clicker."""
    before = len(answers(stack))
    assert send_click(stack, action_id, user, message) == 200
    return wait_answers(stack, before)[0]


def no_traceback_anywhere(stack: LocalStack) -> None:
    for message in stack.slack.snapshot():
        for text in (message.text, json.dumps(message.blocks)):
            assert "Traceback" not in text and 'File "' not in text, message.describe()


# -- GitHub: signed webhooks, the upstream repository -----------------------------------------


def webhook(
    stack: LocalStack, event: str, payload: dict[str, Any], delivery: str | None = None, signature: str | None = None
) -> tuple[int, str]:
    """POST a webhook as GitHub does (signed with the webhook secret unless `signature` is given)."""
    body = json.dumps(payload).encode()
    secret = stack.services.settings.github_webhook_secret.get_secret_value()
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "GitHub-Hookshot/test",
        "X-GitHub-Event": event,
        "X-GitHub-Delivery": delivery or str(uuid.uuid4()),
        "X-Hub-Signature-256": signature or sign_webhook(secret, body),
    }
    status, _, answer = post_signed(stack.bot_url + "/github/webhook", body.decode(), "unused", extra_headers=headers)
    return status, answer.decode()


def merged_payload(stack: LocalStack, number: int = 1, branch: str = BRANCH, by: str = "alice") -> dict[str, Any]:
    """The parts of GitHub's `pull_request` / `closed` payload for a merged PR that the bot reads."""
    repo = {"full_name": stack.services.settings.github_repository, "default_branch": "main"}
    user = {"login": by, "type": "User"}
    return {
        "action": "closed",
        "number": number,
        "pull_request": {
            "number": number,
            "state": "closed",
            "merged": True,
            "merged_by": user,
            "head": {"ref": branch, "repo": repo},
            "base": {"ref": "main", "repo": repo},
        },
        "repository": repo,
        "sender": user,
    }


def git(stack: LocalStack, *args: str) -> str:
    return subprocess.run(
        ["git", "--git-dir", str(stack.repo), *args], capture_output=True, text=True, check=True
    ).stdout.strip()


def next_track(stack: LocalStack) -> int:
    """NEXT_TRACK on the upstream's main."""
    return int(json.loads(git(stack, "show", f"main:{KNOB}"))["next_track"])


def commits_since(stack: LocalStack, base: str) -> list[str]:
    """Subjects of the commits on main after `base`, newest first."""
    out = git(stack, "log", "--format=%s", f"{base}..main")
    return out.splitlines() if out else []


def push_knob_directly(stack: LocalStack, tmp_path: Path, value: int) -> None:
    """Someone else sets next_track on main with a clone and a push, behind the bot's back."""
    clone = tmp_path / "someone-else"
    subprocess.run(["git", "clone", "-q", str(stack.repo), str(clone)], check=True)
    path = clone / KNOB
    knob = json.loads(path.read_text())
    knob["next_track"] = value
    path.write_text(json.dumps(knob, indent=2) + "\n")
    ident = ["-c", "user.name=Someone Else", "-c", "user.email=else@example.com", "-c", "commit.gpgsign=false"]
    subprocess.run(["git", *ident, "commit", "-qam", f"next_track: {value}"], cwd=clone, check=True)
    subprocess.run(["git", "push", "-q", "origin", "main"], cwd=clone, check=True)


# -- runs --------------------------------------------------------------------------------------


def latest_run(stack: LocalStack) -> Run:
    run = stack.services.store.latest(stack.services.settings.github_repository)
    assert run is not None
    return run


def thread_texts(stack: LocalStack, run: Run) -> list[str]:
    assert run.thread_ts is not None
    return [m.text for m in stack.slack.thread(run.channel, run.thread_ts)]


def prompt_as_shown(stack: LocalStack) -> SlackMessage:
    """A copy of the merge prompt as a Slack client shows it now, buttons included (the twin's record changes)."""
    prompt = stack.slack.latest_with_button("approve_advance")
    assert prompt is not None
    return copy.deepcopy(prompt)


def stack_with_pr(make_stack) -> LocalStack:  # type: ignore[no-untyped-def]
    """A stack whose track 1 ran to an open PR #1."""
    stack: LocalStack = make_stack()
    stack.handle("/track run")
    stack.handle(":wait 120")
    assert [p.number for p in stack.github.pulls()] == [1]
    assert latest_run(stack).state is RunState.PR_OPEN
    return stack


def stack_with_prompt(make_stack) -> LocalStack:  # type: ignore[no-untyped-def]
    """A stack whose PR #1 merged (the real merge and its webhook) and whose thread asks to advance."""
    stack = stack_with_pr(make_stack)
    assert stack.github.merge_pull(1, merged_by="alice").webhook_status == 200
    assert any(PROMPT in t for t in thread_texts(stack, latest_run(stack)))
    return stack


# == 1. Slack signatures ======================================================================


def test_slack_signature_is_checked_and_unsigned_requests_get_no_answer(make_stack) -> None:  # type: ignore[no-untyped-def]
    stack = make_stack()

    def chat_calls() -> int:
        return len([method for method, _ in stack.slack.calls if method.startswith("chat.")])

    chats_before = chat_calls()

    assert send_command(stack, "help", headers={"X-Slack-Signature": "v0=" + "0" * 64}) == 401
    assert send_command(stack, "help", secret="not-the-signing-secret") == 401
    six_minutes_ago = int(time.time()) - 6 * 60
    assert send_command(stack, "help", timestamp=six_minutes_ago) == 401  # correctly signed, but a replay

    time.sleep(0.5)  # the bot would answer within this if it had acted on any of them
    assert stack.slack.snapshot() == []
    assert chat_calls() == chats_before

    answer = command(stack, "help")
    assert "Usage:" in answer.text and "`/track status`" in answer.text
    assert answer.response_type == "ephemeral" and answer.user == ALICE
    assert len(stack.slack.snapshot()) == 1  # only the signed request was answered


# == 2. Commands ==============================================================================


def test_status_shows_the_knob_the_track_its_doc_and_idle(make_stack) -> None:  # type: ignore[no-untyped-def]
    stack = make_stack()
    answer = command(stack, "status")
    assert "NEXT_TRACK = *1*" in answer.text
    doc = "docs/plan/v1/tracks/track-01-hello-endpoint.md"
    assert (
        f"Track 1: *hello-endpoint* — doc <{stack.github.api_url}/local/sample-upstream/blob/main/{doc}|`{doc}`>"
        in (answer.text)
    )
    assert "State: idle" in answer.text
    assert answer.response_type == "in_channel"


def test_unknown_subcommands_get_the_help_with_a_suggestion(make_stack) -> None:  # type: ignore[no-untyped-def]
    stack = make_stack()

    bogus = command(stack, "bogus")
    assert bogus.text.startswith("I don't know `bogus`.") and "Usage:" in bogus.text

    typo = command(stack, "stauts")
    assert "I don't know `stauts`." in typo.text and "Did you mean `/track status`?" in typo.text

    bare = command(stack, "")
    assert bare.text.startswith("Usage:") and "`/track run`" in bare.text
    assert all(a.response_type == "ephemeral" for a in (bogus, typo, bare))


def test_run_by_someone_neither_runner_nor_maintainer_is_refused(make_stack) -> None:  # type: ignore[no-untyped-def]
    stack = make_stack()
    answer = command(stack, "run", user=CAROL)
    assert answer.text.startswith(":no_entry: You may not start runs.")
    assert answer.response_type == "ephemeral" and answer.user == CAROL
    # It names who may, each once.
    assert answer.text.count(f"<@{ALICE}>") == 1 and answer.text.count(f"<@{BOB}>") == 1
    assert stack.services.store.latest(stack.services.settings.github_repository) is None
    assert stack.services.queue.count == 0
    assert [m for m in stack.slack.snapshot() if m.kind == "message"] == []  # no thread was started


# == 3. Two runs at once ======================================================================


def test_two_runs_at_the_same_time_make_one_run_and_one_pr(make_stack) -> None:  # type: ignore[no-untyped-def]
    stack = make_stack()
    statuses: dict[str, int] = {}
    start = threading.Barrier(2)

    def run_as(user: str) -> None:
        start.wait()
        statuses[user] = send_command(stack, "run", user=user)

    threads = [threading.Thread(target=run_as, args=(u,)) for u in (ALICE, BOB)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert statuses == {ALICE: 200, BOB: 200}

    replies = wait_answers(stack, 0, count=2)
    queued = [a for a in replies if a.text.startswith("Queued Track 1: hello-endpoint")]
    busy = [a for a in replies if "One run per repository at a time" in a.text]
    assert len(queued) == 1 and len(busy) == 1, [a.text for a in replies]
    assert busy[0].user != queued[0].user
    assert "Track 1 is already queued" in busy[0].text or "Track 1 is already running" in busy[0].text
    assert "<https://local.slack.test/archives/" in busy[0].text  # a link to the one run's thread

    runs = stack.services.store.runs(stack.services.settings.github_repository)
    assert len(runs) == 1 and runs[0].requested_by == queued[0].user
    parents = [m for m in stack.slack.snapshot() if m.kind == "message" and m.thread_ts is None]
    assert len(parents) == 1

    stack.handle(":wait 120")
    assert [p.number for p in stack.github.pulls()] == [1]
    queue = stack.services.queue
    assert queue.finished_job_registry.get_job_ids() == [runs[0].id]
    assert queue.failed_job_registry.get_job_ids() == []


# == 4. The GitHub webhook ====================================================================


def test_webhook_ping_other_events_and_health(make_stack) -> None:  # type: ignore[no-untyped-def]
    stack = make_stack()
    assert webhook(stack, "ping", {"zen": "Design for failure.", "hook_id": 1}) == (200, "pong\n")
    status, text = webhook(stack, "push", {"ref": "refs/heads/main", "repository": {"full_name": "x/y"}})
    assert status == 202 and "ignored" in text
    assert webhook(stack, "ping", {"zen": "x"}, signature="sha256=" + "0" * 64)[0] == 401

    status, _, body = post_signed(stack.bot_url + "/healthz", "", "unused")
    assert (status, body) == (200, b"ok\n")
    assert post_signed(stack.bot_url + "/nowhere", "", "unused")[0] == 404
    assert stack.slack.snapshot() == []


def test_merge_webhook_prompts_once_in_the_runs_thread(make_stack) -> None:  # type: ignore[no-untyped-def]
    stack = stack_with_pr(make_stack)
    # The PR really merges on the upstream; this test delivers the webhook itself.
    stack.github.webhook_url = None
    stack.github.merge_pull(1, merged_by="alice")
    run = latest_run(stack)
    payload = merged_payload(stack)

    forged = webhook(stack, "pull_request", payload, signature="sha256=" + "0" * 64)
    assert forged[0] == 401
    wrong_secret = webhook(
        stack, "pull_request", payload, signature=sign_webhook("not-the-secret", json.dumps(payload).encode())
    )
    assert wrong_secret[0] == 401
    assert not any(PROMPT in t for t in thread_texts(stack, run))
    assert latest_run(stack).state is RunState.PR_OPEN

    delivery = str(uuid.uuid4())
    assert webhook(stack, "pull_request", payload, delivery=delivery) == (200, "prompted\n")
    assert webhook(stack, "pull_request", payload, delivery=delivery) == (200, "duplicate delivery ignored\n")

    prompts = [m for m in stack.slack.thread(run.channel, run.thread_ts or "") if PROMPT in m.text]
    assert len(prompts) == 1
    assert prompts[0].thread_ts == run.thread_ts and prompts[0].kind == "message"
    assert prompts[0].buttons() == [("approve_advance", "Approve", run.id), ("dismiss_advance", "Dismiss", run.id)]
    assert latest_run(stack).state is RunState.MERGED
    assert next_track(stack) == 1  # the webhook only asks


def test_real_merge_prompts_and_a_redelivery_is_ignored(make_stack) -> None:  # type: ignore[no-untyped-def]
    stack = stack_with_pr(make_stack)
    result = stack.github.merge_pull(1, merged_by="alice")
    assert result.webhook_status == 200
    delivery = stack.github.deliveries[-1].delivery_id

    # GitHub's "Redeliver" sends the same delivery id again.
    assert webhook(stack, "pull_request", merged_payload(stack), delivery=delivery) == (
        200,
        "duplicate delivery ignored\n",
    )
    run = latest_run(stack)
    assert [t for t in thread_texts(stack, run) if PROMPT in t] == [PROMPT]


# == 5. Clicks ================================================================================


def test_maintainer_approves_and_the_knob_advances_one_line(make_stack) -> None:  # type: ignore[no-untyped-def]
    stack = stack_with_prompt(make_stack)
    run = latest_run(stack)
    before = git(stack, "rev-parse", "main")

    answer = click(stack, "approve_advance", ALICE)
    assert answer.text == "Advanced NEXT_TRACK from 1 to 2."
    assert answer.response_type == "ephemeral" and answer.user == ALICE

    after = git(stack, "rev-parse", "main")
    assert commits_since(stack, before) == [ADVANCE_MESSAGE]
    assert git(stack, "diff", "--name-only", before, after) == KNOB
    assert git(stack, "diff", "--numstat", before, after) == f"1\t1\t{KNOB}"
    changed = [
        line
        for line in git(stack, "diff", "-U0", before, after).splitlines()
        if line[:1] in "+-" and not line.startswith(("+++", "---"))
    ]
    assert [line.replace(" ", "") for line in changed] == ['-"next_track":1,', '+"next_track":2,']
    assert next_track(stack) == 2

    said = [t for t in thread_texts(stack, run) if "NEXT_TRACK advanced from 1 to 2" in t]
    assert len(said) == 1 and f"by <@{ALICE}>" in said[0] and "Track 2: cancel-endpoint-spec" in said[0]
    assert stack.slack.latest_with_button("approve_advance") is None  # the prompt lost its buttons
    assert latest_run(stack).state is RunState.ADVANCED

    status = command(stack, "status")
    assert "NEXT_TRACK = *2*" in status.text and "Track 2: *cancel-endpoint-spec*" in status.text


def test_on_a_protected_main_the_advance_is_its_own_pr_and_the_thread_follows_it(make_stack) -> None:  # type: ignore[no-untyped-def]
    stack = stack_with_prompt(make_stack)
    run = latest_run(stack)
    stack.github.protect("main", required_approvals=1)
    before = git(stack, "rev-parse", "main")

    answer = click(stack, "approve_advance", ALICE)
    assert answer.text.startswith("The advance waits for PR #2 to merge")
    assert git(stack, "rev-parse", "main") == before and next_track(stack) == 1
    refused = [r for r in stack.github.requests if r.method == "PUT" and r.path.endswith(KNOB)]
    assert [r.status for r in refused] == [409, 200]  # main refused by its rule; the PR's branch written
    said = [t for t in thread_texts(stack, run) if "PR #2" in t]
    assert len(said) == 1 and "main is protected (GitHub: Changes must be made through a pull request.)" in said[0]
    assert "At least 1 approving review is required" in said[0]
    assert stack.slack.latest_with_button("approve_advance") is None
    pull = stack.github.pulls()[-1]
    assert (pull.number, pull.title, pull.head_ref, pull.draft) == (
        2,
        ADVANCE_MESSAGE,
        "trackbot/next-track-1-to-2",
        False,
    )
    assert git(stack, "log", "--format=%s", "-1", pull.head_ref) == ADVANCE_MESSAGE
    assert git(stack, "diff", "--name-only", "main", pull.head_ref) == KNOB
    assert latest_run(stack).state is RunState.ADVANCING
    assert "waits for PR #2" in command(stack, "status").text or "waits for PR #2" in command(stack, "plan").text

    assert stack.github.merge_pull(2, merged_by="carol").webhook_status == 200
    assert next_track(stack) == 2
    now = [t for t in thread_texts(stack, run) if "NEXT_TRACK is now 2" in t]
    assert len(now) == 1 and "PR #2 merged by carol" in now[0] and "Track 2: cancel-endpoint-spec" in now[0]
    assert latest_run(stack).state is RunState.ADVANCED


def test_on_a_protected_main_without_required_reviews_trackbot_merges_its_advance_pr(make_stack) -> None:  # type: ignore[no-untyped-def]
    stack = stack_with_prompt(make_stack)
    run = latest_run(stack)
    stack.github.protect("main", required_approvals=0)
    before = git(stack, "rev-parse", "main")

    answer = click(stack, "approve_advance", ALICE)
    assert answer.text == "Advanced NEXT_TRACK from 1 to 2 through PR #2."
    assert commits_since(stack, before) == [ADVANCE_MESSAGE]  # squashed with the exact message
    assert next_track(stack) == 2
    stack.github.wait_for_webhooks()
    now = [t for t in thread_texts(stack, run) if "NEXT_TRACK is now 2" in t]
    assert len(now) == 1  # once, although trackbot's merge and the webhook both saw it
    assert latest_run(stack).state is RunState.ADVANCED


def test_advance_mode_direct_on_a_protected_main_says_what_to_change_and_changes_nothing(
    make_stack, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    stack = stack_with_prompt(make_stack)
    clone = tmp_path / "maintainer"
    subprocess.run(["git", "clone", "-q", str(stack.repo), str(clone)], check=True)
    (clone / ".trackbot.toml").write_text('[advance]\nmode = "direct"\n')
    ident = ["-c", "user.name=M", "-c", "user.email=m@example.com", "-c", "commit.gpgsign=false"]
    subprocess.run(["git", *ident, "add", ".trackbot.toml"], cwd=clone, check=True)
    subprocess.run(["git", *ident, "commit", "-qm", "advance directly"], cwd=clone, check=True)
    subprocess.run(["git", "push", "-q", "origin", "main"], cwd=clone, check=True)
    stack.github.protect("main")
    before = git(stack, "rev-parse", "main")

    answer = click(stack, "approve_advance", ALICE)
    assert "refuses trackbot's direct write (GitHub: Changes must be made through a pull request.)" in answer.text
    assert "Nothing was changed" in answer.text and "knob kept changing" not in answer.text
    assert git(stack, "rev-parse", "main") == before and len(stack.github.pulls()) == 1
    assert latest_run(stack).state is RunState.MERGED


def test_a_webhook_names_the_repository_in_any_case_and_still_prompts(make_stack) -> None:  # type: ignore[no-untyped-def]
    stack = stack_with_pr(make_stack)
    stack.github.webhook_url = None
    stack.github.merge_pull(1, merged_by="alice")
    payload = merged_payload(stack)
    shouted = stack.services.settings.github_repository.upper()  # GitHub's names are case-insensitive
    payload["repository"]["full_name"] = shouted
    assert webhook(stack, "pull_request", payload)[0] == 200
    assert any(PROMPT in t for t in thread_texts(stack, latest_run(stack)))


def test_a_stale_sha_409_is_not_taken_for_a_rule(make_stack) -> None:  # type: ignore[no-untyped-def]
    stack = stack_with_prompt(make_stack)
    stack.github.fail_next(status=409, method="PUT")
    assert click(stack, "approve_advance", ALICE).text == "Advanced NEXT_TRACK from 1 to 2."
    assert len(stack.github.pulls()) == 1


def test_non_maintainer_click_is_refused_and_the_knob_stays(make_stack) -> None:  # type: ignore[no-untyped-def]
    stack = stack_with_prompt(make_stack)
    before = git(stack, "rev-parse", "main")

    answer = click(stack, "approve_advance", BOB)
    assert answer.text == f":no_entry: Only a maintainer can approve advancing NEXT_TRACK: <@{ALICE}>."
    assert answer.response_type == "ephemeral" and answer.user == BOB
    assert click(stack, "dismiss_advance", BOB).text.startswith(":no_entry: Only a maintainer")

    assert git(stack, "rev-parse", "main") == before and next_track(stack) == 1
    assert latest_run(stack).state is RunState.MERGED
    assert stack.slack.latest_with_button("approve_advance") is not None  # still waiting for a maintainer


def test_double_click_advances_once(make_stack) -> None:  # type: ignore[no-untyped-def]
    stack = stack_with_prompt(make_stack)
    run = latest_run(stack)
    before = git(stack, "rev-parse", "main")
    prompt = prompt_as_shown(stack)
    count = len(answers(stack))

    assert send_click(stack, "approve_advance", ALICE, prompt) == 200
    assert send_click(stack, "approve_advance", ALICE, prompt) == 200
    replies = [a.text for a in wait_answers(stack, count, count=2)]

    assert replies.count("Advanced NEXT_TRACK from 1 to 2.") == 1, replies
    assert commits_since(stack, before) == [ADVANCE_MESSAGE]
    assert next_track(stack) == 2
    assert len([t for t in thread_texts(stack, run) if "NEXT_TRACK advanced from 1 to 2" in t]) == 1


def test_dismiss_leaves_the_knob_and_says_so(make_stack) -> None:  # type: ignore[no-untyped-def]
    stack = stack_with_prompt(make_stack)
    run = latest_run(stack)
    before = git(stack, "rev-parse", "main")

    answer = click(stack, "dismiss_advance", ALICE)
    assert answer.text == "Dismissed." and answer.response_type == "ephemeral"
    assert git(stack, "rev-parse", "main") == before and next_track(stack) == 1
    said = [t for t in thread_texts(stack, run) if t.startswith("Advance dismissed")]
    assert said == [f"Advance dismissed by <@{ALICE}>; NEXT_TRACK stays at 1. `/track advance` can still advance it."]
    assert stack.slack.latest_with_button("approve_advance") is None
    assert latest_run(stack).state is RunState.DISMISSED


# == 6. A stale sha on advance ================================================================


def test_a_stale_sha_is_reread_and_the_knob_advances_once(make_stack) -> None:  # type: ignore[no-untyped-def]
    stack = stack_with_prompt(make_stack)
    before = git(stack, "rev-parse", "main")
    stack.github.fail_next(status=409, method="PUT")

    assert click(stack, "approve_advance", ALICE).text == "Advanced NEXT_TRACK from 1 to 2."
    puts = [r for r in stack.github.requests if r.method == "PUT"]
    assert [r.status for r in puts] == [409, 200]
    assert commits_since(stack, before) == [ADVANCE_MESSAGE]
    assert next_track(stack) == 2


def test_approve_after_someone_else_advanced_does_not_advance_again(make_stack, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    stack = stack_with_prompt(make_stack)
    run = latest_run(stack)
    prompt = prompt_as_shown(stack)
    push_knob_directly(stack, tmp_path, 2)
    before = git(stack, "rev-parse", "main")

    answer = click(stack, "approve_advance", ALICE)
    assert answer.text == "NEXT_TRACK is already 2; nothing to do."
    assert git(stack, "rev-parse", "main") == before and next_track(stack) == 2
    said = [t for t in thread_texts(stack, run) if "NEXT_TRACK advanced from 1 to 2" in t]
    assert len(said) == 1 and "someone else already advanced it" in said[0]
    assert [r for r in stack.github.requests if r.method == "PUT"] == []

    # The prompt lost its buttons; a stale screen's click changes nothing either.
    assert stack.slack.latest_with_button("approve_advance") is None
    assert click(stack, "approve_advance", ALICE, prompt).text == f"Already advanced to 2 by <@{ALICE}>."
    assert git(stack, "rev-parse", "main") == before


# == 7. /track advance ========================================================================


def test_advance_command_waits_for_the_merge_and_only_for_maintainers(make_stack) -> None:  # type: ignore[no-untyped-def]
    stack = stack_with_pr(make_stack)
    pr_url = latest_run(stack).pr_url

    assert command(stack, "advance").text == f"PR #1 of track 1 is not merged yet: {pr_url}"
    stack.github.merge_pull(1, merged_by="alice")
    before = git(stack, "rev-parse", "main")

    refused = command(stack, "advance", user=BOB)
    assert refused.text == f":no_entry: Only a maintainer can approve advancing NEXT_TRACK: <@{ALICE}>."
    assert refused.response_type == "ephemeral"
    assert next_track(stack) == 1

    assert command(stack, "advance").text == "Advanced NEXT_TRACK from 1 to 2."
    assert commits_since(stack, before) == [ADVANCE_MESSAGE]
    assert any("NEXT_TRACK advanced from 1 to 2" in t for t in thread_texts(stack, latest_run(stack)))
    assert command(stack, "advance").text == "Track 2 has no PR from trackbot yet; `/track run` first."
    assert next_track(stack) == 2


def test_advance_command_works_when_the_merge_webhook_was_missed(make_stack) -> None:  # type: ignore[no-untyped-def]
    stack = stack_with_pr(make_stack)
    stack.github.webhook_url = None  # the merge's webhook never arrives
    stack.github.merge_pull(1, merged_by="alice")
    assert latest_run(stack).state is RunState.PR_OPEN

    assert command(stack, "advance").text == "Advanced NEXT_TRACK from 1 to 2."
    assert next_track(stack) == 2 and latest_run(stack).state is RunState.ADVANCED


# == 8. Never a traceback in Slack ============================================================


def test_github_down_gives_clear_answers_and_no_traceback(make_stack) -> None:  # type: ignore[no-untyped-def]
    stack = make_stack()
    stack.github.fail_next(count=3, status=503)

    status = command(stack, "status")
    assert status.text.startswith(":warning: I could not read the plan:") and "503" in status.text
    run = command(stack, "run")
    assert run.text.startswith(":warning: I could not read the plan:")
    advance = command(stack, "advance")
    assert "503" in advance.text

    assert stack.services.store.latest(stack.services.settings.github_repository) is None
    no_traceback_anywhere(stack)
    assert "NEXT_TRACK = *1*" in command(stack, "status").text  # and it recovers


def test_github_down_while_approving_changes_nothing_and_says_so(make_stack) -> None:  # type: ignore[no-untyped-def]
    stack = stack_with_prompt(make_stack)
    before = git(stack, "rev-parse", "main")
    stack.github.fail_next(count=1, status=503)

    answer = click(stack, "approve_advance", ALICE)
    assert "Nothing was changed; try again." in answer.text and "503" in answer.text
    assert git(stack, "rev-parse", "main") == before
    no_traceback_anywhere(stack)

    assert click(stack, "approve_advance", ALICE).text == "Advanced NEXT_TRACK from 1 to 2."
    assert next_track(stack) == 2
