"""Slack retries are acked and dropped when the original was already handled: a real Bolt app, real HTTP, real Redis.

The app is built as trackbot's is (handlers/slack.py): process_before_response, an immediate ack,
lazy work handed to `hand_lazy_work_to_workers`. No worker listens here, so the lazy work runs in
this process; an original is remembered as seen when its work starts (tests/test_slack_work.py
covers the queued path).
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections import Counter
from collections.abc import Iterator
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import pytest
from redis import Redis
from slack_bolt import App
from slack_bolt.adapter.wsgi import SlackRequestHandler
from slack_sdk import WebClient

from bot.local.slack_api import SlackTwin
from bot.local.slack_requests import block_actions_body, post_signed, slash_command_body
from handlers.slack_dedupe import dedupe_retries, request_key
from handlers.slack_work import SlackWorkQueue, hand_lazy_work_to_workers

TOKEN = "xoxb-dedupe-test"
SECRET = "dedupe-signing-secret"
ALICE = "U0ALICE"
RETRY = {"X-Slack-Retry-Num": "1", "X-Slack-Retry-Reason": "http_timeout"}


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@dataclasses.dataclass
class Bot:
    url: str
    twin: SlackTwin
    calls: Counter[str]


@pytest.fixture
def bot(redis: Redis) -> Iterator[Bot]:
    """A Bolt app with the middleware and listeners that only count, behind a real HTTP server."""
    with SlackTwin(TOKEN, {ALICE: "alice"}) as twin:
        app = App(
            signing_secret=SECRET,
            client=WebClient(token=TOKEN, base_url=twin.api_url),
            process_before_response=True,
        )
        app.use(dedupe_retries(redis))
        hand_lazy_work_to_workers(app, SlackWorkQueue(redis, b"dedupe test queue key"))
        calls: Counter[str] = Counter()

        def ack_now(ack: Any) -> None:
            ack()

        def track(command: dict[str, Any]) -> None:
            calls[command["text"]] += 1

        def approve(body: dict[str, Any]) -> None:
            calls["approve"] += 1

        app.command("/track")(ack=ack_now, lazy=[track])
        app.action("approve_advance")(ack=ack_now, lazy=[approve])

        server = make_server("127.0.0.1", 0, SlackRequestHandler(app), server_class=_Server, handler_class=_Quiet)
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        try:
            yield Bot(f"http://127.0.0.1:{server.server_port}/slack/events", twin, calls)
        finally:
            server.shutdown()
            server.server_close()


def settled(bot: Bot, expected: Counter[str], timeout: float = 5.0) -> Counter[str]:
    """The calls once they equal `expected` (lazy work runs after the ack), or after `timeout` and a moment more."""
    deadline = time.monotonic() + timeout
    while bot.calls != expected and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.2)  # a call that should not happen has had its chance
    return bot.calls


def command_body(bot: Bot, text: str) -> str:
    response_url = bot.twin.new_response_url("C0TRACKS", ALICE)
    return slash_command_body("/track", text, ALICE, "alice", "C0TRACKS", "tracks", response_url)


def click_body(bot: Bot) -> str:
    message = {"ts": "1700000000.000100", "text": "PR #1 merged.", "blocks": []}
    response_url = bot.twin.new_response_url("C0TRACKS", ALICE, message["ts"])
    return block_actions_body(
        "approve_advance", "run-1", "actions", ALICE, "alice", "C0TRACKS", message, response_url, button_text="Approve"
    )


def test_a_retried_slash_command_runs_the_listener_once(bot: Bot) -> None:
    body = command_body(bot, "run")
    assert post_signed(bot.url, body, SECRET)[0] == 200
    assert settled(bot, Counter({"run": 1})) == Counter({"run": 1})
    status, _, answer = post_signed(bot.url, body, SECRET, extra_headers=RETRY)
    assert (status, answer) == (200, b"")  # acked, so Slack stops retrying
    status, _, _ = post_signed(bot.url, body, SECRET, extra_headers={**RETRY, "X-Slack-Retry-Num": "2"})
    assert status == 200
    assert settled(bot, Counter({"run": 1})) == Counter({"run": 1})


def test_a_retry_whose_original_never_arrived_is_handled(bot: Bot) -> None:
    assert post_signed(bot.url, command_body(bot, "status"), SECRET, extra_headers=RETRY)[0] == 200
    assert settled(bot, Counter({"status": 1})) == Counter({"status": 1})


def test_a_retried_click_runs_once_but_a_second_click_is_a_new_request(bot: Bot) -> None:
    click = click_body(bot)
    assert post_signed(bot.url, click, SECRET)[0] == 200
    assert settled(bot, Counter({"approve": 1})) == Counter({"approve": 1})
    assert post_signed(bot.url, click, SECRET, extra_headers=RETRY)[0] == 200
    assert settled(bot, Counter({"approve": 1})) == Counter({"approve": 1})

    time.sleep(0.001)  # a second press has its own action_ts
    assert post_signed(bot.url, click_body(bot), SECRET)[0] == 200
    # Two listener calls; bot.advance makes a double click advance once.
    assert settled(bot, Counter({"approve": 2})) == Counter({"approve": 2})


def test_a_forged_retry_is_refused_and_does_not_hide_the_original(bot: Bot) -> None:
    body = command_body(bot, "run")
    assert post_signed(bot.url, body, "not-the-secret", extra_headers=RETRY)[0] == 401
    assert post_signed(bot.url, body, SECRET)[0] == 200  # the signature check comes first: nothing was recorded
    assert settled(bot, Counter({"run": 1})) == Counter({"run": 1})


def test_request_keys_are_stable_and_specific() -> None:
    assert request_key({"command": "/track", "trigger_id": "1.2.abc"}) == "trigger:1.2.abc"
    click = {
        "type": "block_actions",
        "container": {"message_ts": "1.0001"},
        "actions": [{"action_ts": "1.5"}],
        "user": {"id": ALICE},
        "trigger_id": "9.9.z",
    }
    assert request_key(click) == f"action:1.0001:1.5:{ALICE}"
    assert request_key({"type": "event_callback", "event_id": "Ev01"}) == "event:Ev01"
    assert request_key({"type": "block_actions", "actions": []}) is None
    assert request_key({}) is None
