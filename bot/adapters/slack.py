"""Posting to Slack: the only user of WebClient for posting and updating. Every text is redacted."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError, SlackClientError

from bot.redact import Redactor


class SlackError(Exception):
    """A Slack call failed; the message says which call and Slack's error code."""


def _redact_blocks(blocks: Any, redact: Redactor) -> Any:
    if isinstance(blocks, dict):
        return {k: _redact_blocks(v, redact) for k, v in blocks.items()}
    if isinstance(blocks, list):
        return [_redact_blocks(v, redact) for v in blocks]
    if isinstance(blocks, str):
        return redact(blocks)
    return blocks


class SlackPoster:
    """Posts, updates and ephemerals through one WebClient, redacting everything it sends."""

    def __init__(self, client: WebClient, redact: Redactor, on_error: Callable[[str], None] | None = None) -> None:
        self.client = client
        self.redact = redact
        self.on_error = on_error  # told the kind of every failed call (metrics)

    def _call(self, method: str, **params: Any) -> Any:
        # The typed methods (chat_postMessage...) encode blocks the way each API method expects.
        function = getattr(self.client, method.replace(".", "_"))
        if "text" in params:
            params["text"] = self.redact(params["text"])
        if params.get("blocks") is not None:
            params["blocks"] = _redact_blocks(params["blocks"], self.redact)
        try:
            return function(**{k: v for k, v in params.items() if v is not None})
        except SlackApiError as error:
            code = str(error.response.get("error", "error"))
            self._count_error(code)
            raise SlackError(f"calling Slack {method}: {code}") from None
        except (SlackClientError, OSError) as error:
            self._count_error("connection")
            raise SlackError(f"calling Slack {method}: {error}") from None

    def _count_error(self, kind: str) -> None:
        if self.on_error is not None:
            self.on_error(kind)

    def post(
        self,
        channel: str,
        text: str,
        blocks: list[dict[str, Any]] | None = None,
        thread_ts: str | None = None,
    ) -> str:
        """Post a message (in a thread when `thread_ts` is given); return its ts."""
        response = self._call("chat.postMessage", channel=channel, text=text, blocks=blocks, thread_ts=thread_ts)
        return str(response["ts"])

    def update(self, channel: str, ts: str, text: str, blocks: list[dict[str, Any]] | None = None) -> None:
        """Replace a message's text and blocks."""
        self._call("chat.update", channel=channel, ts=ts, text=text, blocks=blocks or [])

    def ephemeral(
        self,
        channel: str,
        user: str,
        text: str,
        blocks: list[dict[str, Any]] | None = None,
        thread_ts: str | None = None,
    ) -> None:
        """A message only `user` sees."""
        self._call("chat.postEphemeral", channel=channel, user=user, text=text, blocks=blocks, thread_ts=thread_ts)

    def may_post(self, channel: str) -> bool | None:
        """Whether the bot may post in `channel`: a member, or a public channel and the token has
        chat:write.public (conversations.info, with channels:read / groups:read). False when Slack
        says it may not (a private channel the bot is not in is channel_not_found to it); None
        when it cannot tell (the app lacks those scopes, or Slack did not answer)."""
        try:
            response = self._call("conversations.info", channel=channel)
        except SlackError as error:
            return False if str(error).endswith(": channel_not_found") else None
        info = response.get("channel") or {}
        if info.get("is_member") or info.get("is_im"):
            return True
        scopes = str((getattr(response, "headers", None) or {}).get("x-oauth-scopes", ""))
        public = not info.get("is_private") and info.get("is_channel", True)
        return bool(public and "chat:write.public" in [s.strip() for s in scopes.split(",")])

    def permalink(self, channel: str, ts: str) -> str | None:
        """A link to a message, or None when Slack cannot give one."""
        try:
            return str(self._call("chat.getPermalink", channel=channel, message_ts=ts)["permalink"])
        except SlackError:
            return None
