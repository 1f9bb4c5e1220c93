"""A local stand-in for the Slack Web API, for the local demo and the tests.

The real ``slack_sdk.WebClient(token=..., base_url=twin.api_url)`` (and a slack-bolt ``App`` built on
such a client) talks to it unmodified: it answers the handful of Web API methods trackbot uses the
way Slack does (same field names, same ``{"ok": false, "error": ...}`` failures, 429 + Retry-After
for rate limits), and records every message so tests and the console can see what users would see.

Standard library only: a ``ThreadingHTTPServer`` in a daemon thread.
"""

from __future__ import annotations

import json
import logging
import secrets
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

from slack_sdk.errors import SlackObjectFormationError
from slack_sdk.models.blocks import Block

__all__ = ["BOT_ID", "BOT_USER_ID", "TEAM_ID", "SlackMessage", "SlackTwin"]

log = logging.getLogger(__name__)

TEAM_ID = "T0LOCAL"
TEAM_NAME = "trackbot-local"
BOT_USER_ID = "U0TRACKBOT"
BOT_ID = "B0TRACKBOT"
BOT_NAME = "trackbot"
SCOPES = "commands,chat:write,usergroups:read,users:read,channels:read,groups:read"
# Slack's documented limits: a message's text (longer is msg_too_long) and its number of blocks.
MAX_TEXT_CHARS = 40000
MAX_BLOCKS = 50
PERMALINK_BASE = "https://local.slack.test/archives"


@dataclass
class SlackMessage:
    """One message as a Slack user would see it."""

    channel: str
    ts: str
    thread_ts: str | None
    text: str
    blocks: list[dict[str, Any]]
    kind: str  # "message" | "ephemeral" | "response_url"
    user: str | None  # ephemeral: who sees it; response_url: the user who triggered it
    updates: int = 0  # times chat.update (or replace_original) changed it
    # For kind "response_url": "ephemeral" (only `user` sees it) or "in_channel".
    response_type: str | None = None

    def buttons(self) -> list[tuple[str, str, str]]:
        """``(action_id, text, value)`` of every button in the blocks, in display order."""
        found: list[tuple[str, str, str]] = []

        def visit(node: Any) -> None:
            if isinstance(node, dict):
                if node.get("type") == "button":
                    label = node.get("text")
                    text = label.get("text", "") if isinstance(label, dict) else str(label or "")
                    found.append((str(node.get("action_id", "")), text, str(node.get("value", ""))))
                    return
                for key in ("elements", "accessory"):
                    if key in node:
                        visit(node[key])
            elif isinstance(node, list):
                for item in node:
                    visit(item)

        visit(self.blocks)
        return found

    def describe(self) -> str:
        """One line for listings (timeouts, the console)."""
        where = self.channel + (f" thread {self.thread_ts}" if self.thread_ts else "")
        who = f" for {self.user}" if self.user else ""
        buttons = ", ".join(a for a, _, _ in self.buttons())
        extra = f" buttons=[{buttons}]" if buttons else ""
        return f"[{self.kind}{who}] {where} ts={self.ts}: {self.text!r}{extra}"


class _ApiError(Exception):
    def __init__(self, error: str, errors: list[str] | None = None) -> None:
        super().__init__(error)
        self.error = error
        self.errors = errors  # Slack's details for invalid_blocks ("... [json-pointer:/blocks/0/text]")


def _block_problems(blocks: list[Any]) -> list[str]:
    """What Slack would refuse in `blocks`, checked with slack_sdk's own block models and limits, plus
    the two rules they do not check: at most 50 blocks, and no empty text (Slack wants 1 character)."""
    problems = []
    if len(blocks) > MAX_BLOCKS:
        problems.append(f"must be less than {MAX_BLOCKS + 1} items [json-pointer:/blocks]")
    for index, raw in enumerate(blocks):
        where = f"[json-pointer:/blocks/{index}]"
        model = Block.parse(raw) if isinstance(raw, dict) else None
        if model is None:
            problems.append(f"unsupported type: {raw.get('type') if isinstance(raw, dict) else raw!r} {where}")
            continue
        try:
            model.validate_json()
        except SlackObjectFormationError as error:
            problems.append(f"{error} {where}")
            continue
        text = raw.get("text")
        if isinstance(text, dict) and not str(text.get("text") or "").strip():
            problems.append(f"must be more than 0 characters [json-pointer:/blocks/{index}/text/text]")
    return problems


def _check_message(text: str, blocks: list[Any]) -> None:
    if len(text) > MAX_TEXT_CHARS:
        raise _ApiError("msg_too_long")
    problems = _block_problems(blocks)
    if problems:
        raise _ApiError("invalid_blocks", problems)


@dataclass
class _Fault:
    error: str
    status: int
    retry_after: int


@dataclass
class _ResponseUrl:
    channel: str
    user: str
    message_ts: str | None
    # The message this URL last posted, so replace_original/delete_original have a target even
    # when the URL was not tied to a message (a slash command's response_url).
    last_ts: str | None = None


@dataclass
class _State:
    messages: list[SlackMessage] = field(default_factory=list)
    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    faults: dict[str, list[_Fault]] = field(default_factory=dict)
    response_urls: dict[str, _ResponseUrl] = field(default_factory=dict)


class SlackTwin:
    """A local Slack Web API server recording every message; see the module docstring."""

    def __init__(
        self,
        bot_token: str,
        users: dict[str, str],
        host: str = "127.0.0.1",
        port: int = 0,
        on_message: Callable[[SlackMessage, str], None] | None = None,
    ) -> None:
        """Configure the twin; ``users`` maps user id -> name. Nothing listens until ``start()``."""
        self.bot_token = bot_token
        self.users = dict(users)
        # User groups (`S…` id -> member user ids), served by usergroups.users.list; tests edit it freely.
        self.usergroups: dict[str, list[str]] = {}
        # Channels the bot has not joined: posting there is not_in_channel (unless the token has
        # chat:write.public and the channel is public, i.e. its id starts with C). Tests edit it freely.
        self.not_joined: set[str] = set()
        self.scopes: str | None = None  # the token's scopes; None: the module's SCOPES
        self.host = host
        self.port = port
        self.on_message = on_message
        self.api_url = ""
        self.base_url = ""
        self._state = _State()
        self._cond = threading.Condition()
        self._last_ts_us = 0
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> SlackTwin:
        """Start serving in a daemon thread; ``api_url`` is valid afterwards."""
        if self._server is not None:
            return self
        twin = self

        class Handler(_Handler):
            pass

        Handler.twin = twin
        server = ThreadingHTTPServer((self.host, self.port), Handler)
        server.daemon_threads = True
        self._server = server
        host, port = server.server_address[0], server.server_address[1]
        self.port = int(port)
        self.base_url = f"http://{host!s}:{self.port}/"
        self.api_url = self.base_url + "api/"
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"slack-twin:{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and release the port."""
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> SlackTwin:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- inspection ------------------------------------------------------------------------------

    @property
    def messages(self) -> list[SlackMessage]:
        """The live list of messages (prefer ``snapshot()`` from other threads)."""
        return self._state.messages

    @property
    def calls(self) -> list[tuple[str, dict[str, Any]]]:
        """Every Web API method called, with its parsed params, in order."""
        with self._cond:
            return list(self._state.calls)

    def snapshot(self) -> list[SlackMessage]:
        """A copy of the message list, safe to iterate while the server runs."""
        with self._cond:
            return list(self._state.messages)

    def thread(self, channel: str, thread_ts: str) -> list[SlackMessage]:
        """The thread's parent and replies (all kinds) in ts order."""
        found = [
            m
            for m in self.snapshot()
            if m.channel == channel and (m.thread_ts == thread_ts or (m.ts == thread_ts and m.kind == "message"))
        ]
        return sorted(found, key=lambda m: _ts_key(m.ts))

    def latest_with_button(self, action_id: str) -> SlackMessage | None:
        """The most recently posted message with a button whose action_id is ``action_id``."""
        for message in reversed(self.snapshot()):
            if any(a == action_id for a, _, _ in message.buttons()):
                return message
        return None

    def wait_for(self, predicate: Callable[[SlackMessage], bool], timeout: float = 10) -> SlackMessage:
        """The most recent message matching ``predicate``, waiting up to ``timeout`` seconds for one.

        Re-checked after every post/update; raises TimeoutError listing every message seen.
        """
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for message in reversed(self._state.messages):
                    if predicate(message):
                        return message
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    listing = "\n".join(f"  {m.describe()}" for m in self._state.messages) or "  (none)"
                    raise TimeoutError(f"no matching Slack message within {timeout}s; messages seen:\n{listing}")
                self._cond.wait(remaining)

    # -- test controls ---------------------------------------------------------------------------

    def fail_next(
        self, method: str, count: int = 1, error: str = "ratelimited", status: int = 429, retry_after: int = 1
    ) -> None:
        """Make the next ``count`` calls of ``method`` fail like Slack does (``"response_url"``: the
        next posts to any response_url).

        status 429 → HTTP 429 with ``Retry-After`` and ``{"ok": false, "error": "ratelimited"}``;
        status 200 → ``{"ok": false, "error": error}``; other statuses (500) → that status with the error.
        """
        fault = _Fault(error="ratelimited" if status == 429 else error, status=status, retry_after=retry_after)
        with self._cond:
            self._state.faults.setdefault(method, []).extend([fault] * count)

    def new_response_url(self, channel: str, user: str, message_ts: str | None = None) -> str:
        """A response_url on this server, as Slack gives with slash commands and interactions.

        ``message_ts`` is the message the interaction came from (the target of replace_original /
        delete_original); without it those act on what this URL itself last posted.
        """
        if self._server is None:
            raise RuntimeError("SlackTwin.start() first")
        token = secrets.token_urlsafe(12)
        with self._cond:
            self._state.response_urls[token] = _ResponseUrl(channel, user, message_ts)
        return f"{self.base_url}response/{token}"

    # -- internals used by the handler -----------------------------------------------------------

    def _next_ts(self) -> str:
        # Real-time based like Slack's, but strictly increasing even within one microsecond.
        now_us = max(int(time.time() * 1_000_000), self._last_ts_us + 1)
        self._last_ts_us = now_us
        return f"{now_us // 1_000_000}.{now_us % 1_000_000:06d}"

    def _find(self, channel: str, ts: str, kinds: tuple[str, ...] = ("message",)) -> SlackMessage | None:
        for message in self._state.messages:
            if message.channel == channel and message.ts == ts and message.kind in kinds:
                return message
        return None

    def _notify(self, message: SlackMessage, event: str) -> None:
        with self._cond:
            self._cond.notify_all()
        if self.on_message is not None:
            try:
                self.on_message(message, event)
            except Exception:
                # A broken console printer must not turn into a Slack API failure for the bot.
                log.exception("SlackTwin on_message callback failed")

    def _take_fault(self, method: str) -> _Fault | None:
        with self._cond:
            pending = self._state.faults.get(method)
            return pending.pop(0) if pending else None

    def _record_call(self, method: str, params: dict[str, Any]) -> None:
        with self._cond:
            self._state.calls.append((method, params))

    def _call(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        handler = _METHODS.get(method)
        if handler is None:
            raise _ApiError("unknown_method")
        return handler(self, params)

    # -- Web API methods -------------------------------------------------------------------------

    def _auth_test(self, params: dict[str, Any]) -> dict[str, Any]:
        return {
            "url": "https://local.slack.test/",
            "team": TEAM_NAME,
            "user": BOT_NAME,
            "team_id": TEAM_ID,
            "user_id": BOT_USER_ID,
            "bot_id": BOT_ID,
            "is_enterprise_install": False,
        }

    def _post_message(self, params: dict[str, Any]) -> dict[str, Any]:
        channel = str(params.get("channel") or "")
        if not channel:
            raise _ApiError("channel_not_found")
        text, blocks = _text_and_blocks(params)
        if not text and not blocks and not params.get("attachments"):
            raise _ApiError("no_text")
        self._check_member(channel)
        _check_message(text, blocks)
        thread_ts = str(params["thread_ts"]) if params.get("thread_ts") else None
        with self._cond:
            message = SlackMessage(channel, self._next_ts(), thread_ts, text, blocks, "message", None)
            self._state.messages.append(message)
        self._notify(message, "posted")
        return {"channel": channel, "ts": message.ts, "message": _message_json(message)}

    def _update(self, params: dict[str, Any]) -> dict[str, Any]:
        channel = str(params.get("channel") or "")
        ts = str(params.get("ts") or "")
        if not channel:
            raise _ApiError("channel_not_found")
        text, blocks = _text_and_blocks(params)
        self._check_member(channel)
        _check_message(text, blocks)
        with self._cond:
            message = self._find(channel, ts)
            if message is None:
                raise _ApiError("message_not_found")
            if "text" in params:
                message.text = text
            if "blocks" in params:
                message.blocks = blocks
            message.updates += 1
        self._notify(message, "updated")
        return {"channel": channel, "ts": ts, "text": message.text, "message": _message_json(message)}

    def _post_ephemeral(self, params: dict[str, Any]) -> dict[str, Any]:
        channel = str(params.get("channel") or "")
        user = str(params.get("user") or "")
        if not channel:
            raise _ApiError("channel_not_found")
        if not user:
            raise _ApiError("user_not_found")
        if user not in self.users:
            raise _ApiError("user_not_in_channel")
        text, blocks = _text_and_blocks(params)
        if not text and not blocks and not params.get("attachments"):
            raise _ApiError("no_text")
        thread_ts = str(params["thread_ts"]) if params.get("thread_ts") else None
        with self._cond:
            message = SlackMessage(channel, self._next_ts(), thread_ts, text, blocks, "ephemeral", user)
            self._state.messages.append(message)
        self._notify(message, "posted")
        return {"message_ts": message.ts}

    @property
    def granted_scopes(self) -> str:
        """The scopes Slack reports for the bot token (`x-oauth-scopes`)."""
        return self.scopes if self.scopes is not None else SCOPES

    def _check_member(self, channel: str) -> None:
        if channel not in self.not_joined:
            return
        if channel.startswith("C") and "chat:write.public" in self.granted_scopes.split(","):
            return
        raise _ApiError("not_in_channel")

    def _get_permalink(self, params: dict[str, Any]) -> dict[str, Any]:
        channel = str(params.get("channel") or "")
        ts = str(params.get("message_ts") or "")
        with self._cond:
            if self._find(channel, ts) is None:
                raise _ApiError("message_not_found")
        return {"channel": channel, "permalink": f"{PERMALINK_BASE}/{channel}/p{ts.replace('.', '')}"}

    def _users_info(self, params: dict[str, Any]) -> dict[str, Any]:
        user_id = str(params.get("user") or "")
        if user_id == BOT_USER_ID:
            name, is_bot = BOT_NAME, True
        elif user_id in self.users:
            name, is_bot = self.users[user_id], False
        else:
            raise _ApiError("user_not_found")
        return {
            "user": {
                "id": user_id,
                "team_id": TEAM_ID,
                "name": name,
                "real_name": name,
                "is_bot": is_bot,
                "deleted": False,
                "profile": {"display_name": name, "real_name": name},
            }
        }

    def _usergroups_users_list(self, params: dict[str, Any]) -> dict[str, Any]:
        group = str(params.get("usergroup") or "")
        if not group:
            raise _ApiError("invalid_arguments")
        with self._cond:
            members = self.usergroups.get(group)
        if members is None:
            raise _ApiError("no_such_subteam")
        return {"users": list(members)}

    def _conversations_info(self, params: dict[str, Any]) -> dict[str, Any]:
        channel = str(params.get("channel") or "")
        if not channel:
            raise _ApiError("channel_not_found")
        return {
            "channel": {
                "id": channel,
                "name": channel.lower(),
                "is_channel": channel.startswith("C"),
                "is_im": channel.startswith("D"),
                "is_private": channel.startswith("G"),
                "is_member": channel not in self.not_joined,
                "is_archived": False,
            }
        }

    # -- response_url ----------------------------------------------------------------------------

    def _response_url_post(self, token: str, payload: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        with self._cond:
            target = self._state.response_urls.get(token)
        if target is None:
            return 404, {"ok": False, "error": "invalid_response_url"}
        original_ts = target.message_ts or target.last_ts
        if payload.get("delete_original") in (True, "true"):
            with self._cond:
                original = self._find(target.channel, original_ts or "", ("message", "response_url"))
                if original is not None:
                    self._state.messages.remove(original)
                self._cond.notify_all()
            return 200, {"ok": True}
        text, blocks = _text_and_blocks(payload)
        if payload.get("replace_original") in (True, "true") and original_ts:
            with self._cond:
                original = self._find(target.channel, original_ts, ("message", "response_url"))
                if original is not None:
                    original.text = text
                    original.blocks = blocks
                    original.updates += 1
            if original is not None:
                self._notify(original, "updated")
                return 200, {"ok": True}
        response_type = str(payload.get("response_type") or "ephemeral")
        thread_ts = str(payload["thread_ts"]) if payload.get("thread_ts") else None
        with self._cond:
            message = SlackMessage(
                target.channel,
                self._next_ts(),
                thread_ts,
                text,
                blocks,
                "response_url",
                target.user,
                response_type=response_type,
            )
            self._state.messages.append(message)
            target.last_ts = message.ts
        self._notify(message, "posted")
        return 200, {"ok": True}


_METHODS: dict[str, Callable[[SlackTwin, dict[str, Any]], dict[str, Any]]] = {
    "auth.test": SlackTwin._auth_test,
    "chat.postMessage": SlackTwin._post_message,
    "chat.update": SlackTwin._update,
    "chat.postEphemeral": SlackTwin._post_ephemeral,
    "chat.getPermalink": SlackTwin._get_permalink,
    "users.info": SlackTwin._users_info,
    "usergroups.users.list": SlackTwin._usergroups_users_list,
    "conversations.info": SlackTwin._conversations_info,
}


def _ts_key(ts: str) -> tuple[int, int]:
    sec, _, frac = ts.partition(".")
    return int(sec or 0), int(frac or 0)


def _decode_json_field(value: Any) -> Any:
    # slack_sdk JSON-encodes blocks/attachments as strings when it sends a form.
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def _text_and_blocks(params: dict[str, Any]) -> tuple[str, list[dict[str, Any]]]:
    text = params.get("text")
    blocks = _decode_json_field(params.get("blocks"))
    return (str(text) if text is not None else ""), (blocks if isinstance(blocks, list) else [])


def _message_json(message: SlackMessage) -> dict[str, Any]:
    data: dict[str, Any] = {
        "type": "message",
        "user": BOT_USER_ID,
        "bot_id": BOT_ID,
        "text": message.text,
        "ts": message.ts,
        "team": TEAM_ID,
    }
    if message.blocks:
        data["blocks"] = message.blocks
    if message.thread_ts:
        data["thread_ts"] = message.thread_ts
    return data


class _Handler(BaseHTTPRequestHandler):
    twin: SlackTwin
    server_version = "SlackTwin/1"

    def log_message(self, format: str, *args: Any) -> None:
        # Silence the per-request stderr lines; tests and the console read twin.calls instead.
        log.debug("%s - " + format, self.address_string(), *args)

    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def _send(self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def _read_params(self) -> tuple[dict[str, Any], bool]:
        """Query string + body params; second item False when the body was unparseable JSON."""
        parsed = urllib.parse.urlsplit(self.path)
        params: dict[str, Any] = dict(urllib.parse.parse_qsl(parsed.query, keep_blank_values=True))
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if not raw:
            return params, True
        content_type = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if content_type == "application/json":
            try:
                body = json.loads(raw)
            except ValueError:
                return params, False
            if isinstance(body, dict):
                params.update(body)
            return params, True
        params.update(urllib.parse.parse_qsl(raw.decode("utf-8", "replace"), keep_blank_values=True))
        return params, True

    def _dispatch(self) -> None:
        path = urllib.parse.urlsplit(self.path).path
        params, ok = self._read_params()
        if path.startswith("/response/"):
            if not ok:
                self._send(400, {"ok": False, "error": "invalid_json"})
                return
            fault = self.twin._take_fault("response_url")  # fail_next("response_url", ...)
            if fault is not None:
                headers = {"Retry-After": str(fault.retry_after)} if fault.status == 429 else {}
                self._send(fault.status, {"ok": False, "error": fault.error}, headers)
                return
            status, body = self.twin._response_url_post(path.removeprefix("/response/"), params)
            self._send(status, body)
            return
        if not path.startswith("/api/"):
            self._send(404, {"ok": False, "error": "not_found"})
            return
        method = path.removeprefix("/api/")
        if not ok:
            self._send(200, {"ok": False, "error": "invalid_json"})
            return
        for key in ("blocks", "attachments"):
            if key in params:
                params[key] = _decode_json_field(params[key])

        # Slack also accepts the token as a form field; slack_sdk sends the Authorization header.
        auth = self.headers.get("Authorization") or ""
        token = auth[len("Bearer ") :].strip() if auth.startswith("Bearer ") else str(params.pop("token", "") or "")
        params.pop("token", None)
        self.twin._record_call(method, params)
        if not token:
            self._send(200, {"ok": False, "error": "not_authed"})
            return
        if token != self.twin.bot_token:
            self._send(200, {"ok": False, "error": "invalid_auth"})
            return

        fault = self.twin._take_fault(method)
        if fault is not None:
            headers = {"Retry-After": str(fault.retry_after)} if fault.status == 429 else {}
            self._send(fault.status, {"ok": False, "error": fault.error}, headers)
            return
        try:
            result = self.twin._call(method, params)
        except _ApiError as exc:
            answer: dict[str, Any] = {"ok": False, "error": exc.error}
            if exc.errors:
                answer.update(errors=exc.errors, response_metadata={"messages": [f"[ERROR] {e}" for e in exc.errors]})
            self._send(200, answer, {"x-oauth-scopes": self.twin.granted_scopes})
            return
        except Exception:
            log.exception("SlackTwin failed handling %s", method)
            self._send(500, {"ok": False, "error": "internal_error"})
            return
        # slack_sdk/bolt read the granted scopes from this header, like on every real Slack reply.
        self._send(200, {"ok": True, **result}, {"x-oauth-scopes": self.twin.granted_scopes})
