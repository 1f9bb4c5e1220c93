"""The local Slack: the real slack_sdk / slack-bolt talk to it, and signed requests reach a real Bolt app."""

from __future__ import annotations

import dataclasses
import json
import threading
import time
import urllib.parse
from collections.abc import Iterator
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import pytest
from slack_bolt import App
from slack_bolt.adapter.wsgi import SlackRequestHandler
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.signature import SignatureVerifier
from slack_sdk.webhook import WebhookClient

from bot.local.slack_api import SlackMessage, SlackTwin
from bot.local.slack_requests import (
    block_actions_body,
    post_signed,
    signed_headers,
    slack_signature,
    slash_command_body,
)

TOKEN = "xoxb-local-test-token"
SECRET = "local-signing-secret"
USERS = {"U0ALICE": "alice", "U0BOB": "bob"}


@pytest.fixture
def twin() -> Iterator[SlackTwin]:
    with SlackTwin(TOKEN, USERS) as t:
        yield t


@pytest.fixture
def client(twin: SlackTwin) -> WebClient:
    # No retry handlers: the tests want to see every failure exactly as Slack returned it.
    return WebClient(token=TOKEN, base_url=twin.api_url, retry_handlers=[])


def approve_blocks(text: str) -> list[dict[str, Any]]:
    return [
        {"type": "section", "text": {"type": "mrkdwn", "text": text}},
        {
            "type": "actions",
            "block_id": "decide",
            "elements": [
                {
                    "type": "button",
                    "action_id": "approve",
                    "text": {"type": "plain_text", "text": "Approve"},
                    "value": "track-1",
                    "style": "primary",
                },
                {
                    "type": "button",
                    "action_id": "reject",
                    "text": {"type": "plain_text", "text": "Reject"},
                    "value": "track-1",
                },
            ],
        },
    ]


def test_api_url_is_a_slack_base_url(twin: SlackTwin) -> None:
    assert twin.api_url.startswith("http://127.0.0.1:") and twin.api_url.endswith("/api/")


def test_post_update_thread_and_permalink(twin: SlackTwin, client: WebClient) -> None:
    posted = client.chat_postMessage(channel="C0DEV", text="Track 1 ready", blocks=approve_blocks("Track 1"))
    assert posted["ok"] and posted["channel"] == "C0DEV"
    ts = posted["ts"]
    assert posted["message"]["text"] == "Track 1 ready"

    reply = client.chat_postMessage(channel="C0DEV", text="log line", thread_ts=ts)
    assert float(reply["ts"]) > float(ts)

    updated = client.chat_update(channel="C0DEV", ts=ts, text="Track 1 approved", blocks=[])
    assert updated["ts"] == ts and updated["text"] == "Track 1 approved"

    link = client.chat_getPermalink(channel="C0DEV", message_ts=ts)
    assert link["permalink"] == f"https://local.slack.test/archives/C0DEV/p{ts.replace('.', '')}"

    thread = twin.thread("C0DEV", ts)
    assert [m.text for m in thread] == ["Track 1 approved", "log line"]
    assert thread[0].updates == 1 and thread[0].buttons() == []
    assert thread[1].thread_ts == ts


def test_buttons_and_latest_with_button(twin: SlackTwin, client: WebClient) -> None:
    client.chat_postMessage(channel="C0DEV", text="first", blocks=approve_blocks("first"))
    client.chat_postMessage(channel="C0DEV", text="second", blocks=approve_blocks("second"))
    latest = twin.latest_with_button("approve")
    assert latest is not None and latest.text == "second"
    assert latest.buttons() == [("approve", "Approve", "track-1"), ("reject", "Reject", "track-1")]
    assert twin.latest_with_button("no-such-action") is None


def test_blocks_sent_as_a_json_string_in_a_form(twin: SlackTwin, client: WebClient) -> None:
    # slack_sdk form-encodes some calls with blocks JSON-encoded inside the form.
    client.api_call(
        "chat.postMessage",
        data={"channel": "C0DEV", "text": "form", "blocks": json.dumps(approve_blocks("form"))},
    )
    assert twin.snapshot()[-1].buttons()[0][0] == "approve"


def test_ephemeral_is_recorded_for_its_user(twin: SlackTwin, client: WebClient) -> None:
    parent = client.chat_postMessage(channel="C0DEV", text="parent")["ts"]
    result = client.chat_postEphemeral(channel="C0DEV", user="U0ALICE", text="only you", thread_ts=parent)
    assert result["ok"] and result["message_ts"]
    message = twin.snapshot()[-1]
    assert (message.kind, message.user, message.text, message.thread_ts) == (
        "ephemeral",
        "U0ALICE",
        "only you",
        parent,
    )


def test_slack_errors(client: WebClient, twin: SlackTwin) -> None:
    cases = [
        (lambda: client.chat_update(channel="C0DEV", ts="1.000001", text="x"), "message_not_found"),
        (lambda: client.chat_postMessage(channel="", text="x"), "channel_not_found"),
        (lambda: client.api_call("chat.postMessage", json={"channel": "C0DEV"}), "no_text"),
        (lambda: client.chat_getPermalink(channel="C0DEV", message_ts="1.000001"), "message_not_found"),
        (lambda: client.users_info(user="U0NOBODY"), "user_not_found"),
        (lambda: client.api_call("admin.nothing"), "unknown_method"),
    ]
    for call, error in cases:
        with pytest.raises(SlackApiError) as excinfo:
            call()
        assert excinfo.value.response["error"] == error


def test_users_info(client: WebClient) -> None:
    user = client.users_info(user="U0ALICE")["user"]
    assert (user["id"], user["name"], user["real_name"], user["profile"]["display_name"]) == (
        "U0ALICE",
        "alice",
        "alice",
        "alice",
    )
    assert client.conversations_info(channel="C0DEV")["channel"]["id"] == "C0DEV"


def test_bad_or_missing_token(twin: SlackTwin) -> None:
    bad = WebClient(token="xoxb-wrong", base_url=twin.api_url, retry_handlers=[])
    with pytest.raises(SlackApiError) as excinfo:
        bad.chat_postMessage(channel="C0DEV", text="hi")
    assert excinfo.value.response["error"] == "invalid_auth"
    with pytest.raises(SlackApiError) as excinfo:
        WebClient(base_url=twin.api_url, retry_handlers=[]).auth_test()
    assert excinfo.value.response["error"] == "not_authed"
    assert twin.snapshot() == []


def test_fault_injection(twin: SlackTwin, client: WebClient) -> None:
    twin.fail_next("chat.postMessage", retry_after=3)
    with pytest.raises(SlackApiError) as excinfo:
        client.chat_postMessage(channel="C0DEV", text="hi")
    assert excinfo.value.response.status_code == 429
    assert excinfo.value.response["error"] == "ratelimited"
    assert excinfo.value.response.headers["retry-after"] in ("3", ["3"])

    twin.fail_next("chat.postMessage", error="channel_not_found", status=200)
    with pytest.raises(SlackApiError) as excinfo:
        client.chat_postMessage(channel="C0DEV", text="hi")
    assert excinfo.value.response.status_code == 200
    assert excinfo.value.response["error"] == "channel_not_found"

    twin.fail_next("chat.postMessage", error="internal_error", status=500)
    with pytest.raises(SlackApiError) as excinfo:
        client.chat_postMessage(channel="C0DEV", text="hi")
    assert excinfo.value.response.status_code == 500

    assert twin.snapshot() == []
    assert client.chat_postMessage(channel="C0DEV", text="hi")["ok"]
    assert [m for m, _ in twin.calls].count("chat.postMessage") == 4


def test_rate_limit_retry_handler_recovers(twin: SlackTwin) -> None:
    from slack_sdk.http_retry.builtin_handlers import RateLimitErrorRetryHandler

    retrying = WebClient(
        token=TOKEN, base_url=twin.api_url, retry_handlers=[RateLimitErrorRetryHandler(max_retry_count=1)]
    )
    twin.fail_next("chat.postMessage", retry_after=0)
    assert retrying.chat_postMessage(channel="C0DEV", text="eventually")["ok"]
    assert [m.text for m in twin.snapshot()] == ["eventually"]


def test_response_url(twin: SlackTwin, client: WebClient) -> None:
    url = twin.new_response_url("C0DEV", "U0BOB")
    hook = WebhookClient(url)
    assert hook.send(text="working on it").status_code == 200
    message = twin.wait_for(lambda m: m.kind == "response_url")
    assert (message.user, message.channel, message.text, message.response_type) == (
        "U0BOB",
        "C0DEV",
        "working on it",
        "ephemeral",
    )
    hook.send(text="done", replace_original=True)
    assert [m.text for m in twin.snapshot()] == ["done"] and twin.snapshot()[0].updates == 1

    hook.send(text="for everyone", response_type="in_channel")
    assert twin.snapshot()[-1].response_type == "in_channel"

    # A button's response_url acts on the message holding the button.
    ts = client.chat_postMessage(channel="C0DEV", text="pick", blocks=approve_blocks("pick"))["ts"]
    button_hook = WebhookClient(twin.new_response_url("C0DEV", "U0ALICE", message_ts=ts))
    button_hook.send(text="approved by alice", replace_original=True)
    assert twin.thread("C0DEV", ts)[0].text == "approved by alice"
    button_hook.send(delete_original=True)
    assert all(m.ts != ts for m in twin.snapshot())


def test_wait_for_and_on_message() -> None:
    seen: list[tuple[str, str]] = []
    with SlackTwin(TOKEN, USERS, on_message=lambda m, event: seen.append((event, m.text))) as twin:
        client = WebClient(token=TOKEN, base_url=twin.api_url)

        def later() -> None:
            time.sleep(0.2)
            ts = client.chat_postMessage(channel="C0DEV", text="hello")["ts"]
            client.chat_update(channel="C0DEV", ts=ts, text="hello again")

        threading.Thread(target=later).start()
        assert twin.wait_for(lambda m: m.text == "hello again", timeout=5).updates == 1
        assert seen == [("posted", "hello"), ("updated", "hello again")]

        with pytest.raises(TimeoutError, match="hello again"):
            twin.wait_for(lambda m: m.text == "never", timeout=0.2)


def test_bolt_app_constructs_against_the_twin(twin: SlackTwin) -> None:
    app = App(token=TOKEN, signing_secret=SECRET, client=WebClient(token=TOKEN, base_url=twin.api_url))
    assert app.client.base_url == twin.api_url
    assert ("auth.test", {}) in twin.calls


# -- signed requests ------------------------------------------------------------------------------


def test_signature_matches_slack_sdk_verifier() -> None:
    body = slash_command_body("/track", "start 1", "U0ALICE", "alice", "C0DEV", "dev", "http://x/r")
    ts = str(int(time.time()))
    assert SignatureVerifier(SECRET).is_valid(body, ts, slack_signature(SECRET, ts, body))
    headers = signed_headers(SECRET, body)
    assert SignatureVerifier(SECRET).is_valid_request(body, headers)
    assert not SignatureVerifier("other-secret").is_valid_request(body, headers)


def test_slash_command_body_fields() -> None:
    body = slash_command_body("/track", "start 1", "U0ALICE", "alice", "C0DEV", "dev", "http://x/r")
    fields = urllib.parse.parse_qs(body)
    assert list(fields) == [
        "token",
        "team_id",
        "team_domain",
        "channel_id",
        "channel_name",
        "user_id",
        "user_name",
        "command",
        "text",
        "api_app_id",
        "is_enterprise_install",
        "response_url",
        "trigger_id",
    ]
    assert fields["text"] == ["start 1"] and fields["team_id"] == ["T0LOCAL"]


def test_block_actions_body_parses_back(twin: SlackTwin, client: WebClient) -> None:
    parent = client.chat_postMessage(channel="C0DEV", text="root")["ts"]
    client.chat_postMessage(channel="C0DEV", text="pick", blocks=approve_blocks("pick"), thread_ts=parent)
    message = twin.latest_with_button("approve")
    assert message is not None
    body = block_actions_body(
        "approve", "track-1", "decide", "U0ALICE", "alice", "C0DEV", dataclasses.asdict(message), "http://x/r"
    )
    payload = json.loads(urllib.parse.parse_qs(body)["payload"][0])
    assert payload["type"] == "block_actions"
    assert payload["actions"][0]["action_id"] == "approve"
    assert payload["actions"][0]["text"]["text"] == "Approve"
    assert payload["channel"]["id"] == "C0DEV"
    assert payload["container"] == {
        "type": "message",
        "message_ts": message.ts,
        "channel_id": "C0DEV",
        "is_ephemeral": False,
        "thread_ts": parent,
    }
    assert payload["message"]["blocks"] == message.blocks


class _ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def bolt_url(twin: SlackTwin) -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """A tiny real Bolt app behind wsgiref; yields its URL and what its listeners saw."""
    app = App(token=TOKEN, signing_secret=SECRET, client=WebClient(token=TOKEN, base_url=twin.api_url))
    seen: list[dict[str, Any]] = []

    @app.command("/track")
    def track(ack: Any, command: dict[str, Any], respond: Any) -> None:
        ack()
        seen.append(command)
        respond(f"got {command['text']}")

    @app.action("approve")
    def approve(ack: Any, body: dict[str, Any], client: WebClient) -> None:
        ack()
        seen.append(body)
        client.chat_update(channel=body["channel"]["id"], ts=body["message"]["ts"], text="approved")

    handler = SlackRequestHandler(app)
    server = make_server("127.0.0.1", 0, handler, server_class=_ThreadingWSGIServer, handler_class=_QuietHandler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/slack/events", seen
    finally:
        server.shutdown()
        server.server_close()


def test_signed_slash_command_reaches_bolt(twin: SlackTwin, bolt_url: tuple[str, list[dict[str, Any]]]) -> None:
    url, seen = bolt_url
    response_url = twin.new_response_url("C0DEV", "U0ALICE")
    body = slash_command_body("/track", "start 7", "U0ALICE", "alice", "C0DEV", "dev", response_url)
    status, _, _ = post_signed(url, body, SECRET)
    assert status == 200
    assert seen[0]["text"] == "start 7" and seen[0]["user_id"] == "U0ALICE"
    reply = twin.wait_for(lambda m: m.kind == "response_url", timeout=5)
    assert (reply.text, reply.user) == ("got start 7", "U0ALICE")


def test_signed_button_click_reaches_bolt(
    twin: SlackTwin, client: WebClient, bolt_url: tuple[str, list[dict[str, Any]]]
) -> None:
    url, seen = bolt_url
    client.chat_postMessage(channel="C0DEV", text="pick", blocks=approve_blocks("pick"))
    message = twin.latest_with_button("approve")
    assert message is not None
    body = block_actions_body(
        "approve",
        "track-1",
        "decide",
        "U0BOB",
        "bob",
        "C0DEV",
        dataclasses.asdict(message),
        twin.new_response_url("C0DEV", "U0BOB", message_ts=message.ts),
    )
    status, _, _ = post_signed(url, body, SECRET)
    assert status == 200
    assert seen[0]["user"]["id"] == "U0BOB"
    assert twin.wait_for(lambda m: m.ts == message.ts and m.updates == 1).text == "approved"


def test_forged_or_stale_signature_is_rejected(twin: SlackTwin, bolt_url: tuple[str, list[dict[str, Any]]]) -> None:
    url, seen = bolt_url
    body = slash_command_body("/track", "start 7", "U0ALICE", "alice", "C0DEV", "dev", "http://x/r")
    status, _, _ = post_signed(url, body, "not-the-secret")
    assert status == 401
    status, _, _ = post_signed(url, body, SECRET, extra_headers={"X-Slack-Signature": "v0=" + "0" * 64})
    assert status == 401
    status, _, _ = post_signed(url, body, SECRET, timestamp=int(time.time()) - 3600)
    assert status == 401
    assert seen == []


def test_message_dataclass_defaults() -> None:
    message = SlackMessage("C0DEV", "1.000001", None, "hi", [], "message", None)
    assert message.updates == 0 and message.buttons() == []


# -- Slack's own rules: membership, message length, Block Kit limits --------------------------------


def test_posting_in_a_channel_the_bot_has_not_joined_is_not_in_channel(twin: SlackTwin, client: WebClient) -> None:
    twin.not_joined.add("C0OTHER")
    with pytest.raises(SlackApiError) as refused:
        client.chat_postMessage(channel="C0OTHER", text="hello")
    assert refused.value.response["error"] == "not_in_channel"
    assert client.conversations_info(channel="C0OTHER")["channel"]["is_member"] is False
    twin.scopes = "commands,chat:write,chat:write.public,channels:read"
    assert client.chat_postMessage(channel="C0OTHER", text="hello")["ok"]  # a public channel, with the scope


def test_a_message_over_slacks_text_limit_is_msg_too_long(twin: SlackTwin, client: WebClient) -> None:
    with pytest.raises(SlackApiError) as refused:
        client.chat_postMessage(channel="C1", text="x" * 40001)
    assert refused.value.response["error"] == "msg_too_long"


@pytest.mark.parametrize(
    "block",
    [
        {"type": "section", "text": {"type": "mrkdwn", "text": ""}},
        {"type": "section", "text": {"type": "mrkdwn", "text": "x" * 3001}},
        {"type": "header", "text": {"type": "plain_text", "text": "x" * 151}},
        {"type": "no-such-block"},
    ],
)
def test_blocks_breaking_slacks_limits_are_invalid_blocks(twin: SlackTwin, client: WebClient, block: Any) -> None:
    with pytest.raises(SlackApiError) as refused:
        client.chat_postMessage(channel="C1", text="t", blocks=[block])
    assert refused.value.response["error"] == "invalid_blocks"
    assert "[json-pointer:/blocks/0" in refused.value.response["errors"][0]
    assert twin.messages == []
