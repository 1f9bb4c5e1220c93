"""Slack retries: a request Slack sends again (`X-Slack-Retry-Num`) after trackbot already got it is acked and dropped.

Slack retries a request when its ack does not arrive within 3 seconds (or the connection broke),
even if the app got the original and is acting on it. Every request's stable key is recorded
with `SET NX EX` in Redis: for a slash command its `trigger_id`; for a button click
`container.message_ts` + `actions[0].action_ts` + `user.id`; for an Events API event its
`event_id`. A retry whose key was already recorded gets an empty 200 and goes no further; a
retry whose original never arrived is handled like the original. Non-retries always pass: two
clicks of the same button are two requests with different `action_ts`, and `bot.advance` makes
them advance once.

It runs after Bolt's signature check (global middleware registered with `app.use` come after
Bolt's built-in ones), so forged requests cannot fill Redis. Socket Mode has no retry header
and passes through. When Redis fails, the request passes (and it is logged).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from redis import Redis
from redis.exceptions import RedisError
from slack_bolt.request import BoltRequest
from slack_bolt.response import BoltResponse

log = logging.getLogger(__name__)

KEY_PREFIX = "trackbot:slack-seen"
SEEN_TTL_S = 3600  # Slack's last retry comes about 5 minutes after the original

Middleware = Callable[[BoltRequest, Callable[[], None]], BoltResponse | None]


def _header(headers: Mapping[str, Sequence[str] | str], name: str) -> str | None:
    value = headers.get(name) or headers.get(name.title())
    if value is None:
        return None
    if isinstance(value, str):
        return value
    return value[0] if value else None


def request_key(body: Mapping[str, Any]) -> str | None:
    """The stable identity of a Slack request, the same on every retry; None when it has none."""
    if not isinstance(body, Mapping):
        return None
    if body.get("type") == "block_actions":
        container = body.get("container") or {}
        actions = body.get("actions") or [{}]
        user = body.get("user") or {}
        parts = (container.get("message_ts"), actions[0].get("action_ts"), user.get("id"))
        if all(parts):
            return "action:" + ":".join(str(p) for p in parts)
        return None
    if body.get("event_id"):
        return f"event:{body['event_id']}"
    if body.get("trigger_id"):
        return f"trigger:{body['trigger_id']}"
    return None


def dedupe_retries(redis: Redis, ttl_s: int = SEEN_TTL_S) -> Middleware:
    """A Bolt global middleware (`app.use(dedupe_retries(redis))`) that drops retries of requests already seen."""

    def dedupe_slack_retries(req: BoltRequest, next_: Callable[[], None]) -> BoltResponse | None:
        key = request_key(req.body)
        if key is None:
            next_()
            return None
        digest = hashlib.sha256(key.encode()).hexdigest()[:32]
        try:
            first = bool(redis.set(f"{KEY_PREFIX}:{digest}", "1", nx=True, ex=ttl_s))
        except RedisError as error:
            log.warning("Slack retry check failed (%s); handling the request", error)
            first = True
        retry = _header(req.headers, "x-slack-retry-num")
        if retry is not None and not first:
            reason = _header(req.headers, "x-slack-retry-reason") or "?"
            log.info("dropping Slack retry %s (%s) of a request already handled: %s", retry, reason, key)
            return BoltResponse(status=200, body="")
        next_()
        return None

    return dedupe_slack_retries
