"""Slack retries: a request Slack sends again (`X-Slack-Retry-Num`) after trackbot already got it is acked and dropped.

Slack retries a request when its ack does not arrive within 3 seconds (or the connection broke),
even if the app got the original and is acting on it. Every request's stable key is recorded
in Redis for an hour: for a slash command its `trigger_id`; for a button click
`container.message_ts` + `actions[0].action_ts` + `user.id`; for an Events API event its
`event_id`. A retry whose key was already recorded gets an empty 200 and goes no further; a
retry whose original never arrived is handled like the original. Non-retries always pass: two
clicks of the same button are two requests with different `action_ts`, and `bot.advance` makes
them advance once.

An original's key is written in the same Redis round trip that queues its work for the workers
(handlers/slack_work.py: `remember_seen`), not in a round trip of its own: the ack path stays at
one. A retry checks and records its key (`SET NX`) before anything else.

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
from redis.client import Pipeline
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


SEEN_CONTEXT_KEY = "trackbot_seen_key"  # the Redis key an original leaves for `remember_seen`


def seen_key(key: str) -> str:
    """The Redis key recording that a request with this stable key arrived."""
    return f"{KEY_PREFIX}:{hashlib.sha256(key.encode()).hexdigest()[:32]}"


def remember_seen(redis: Redis | Pipeline, context: Mapping[str, Any], ttl_s: int = SEEN_TTL_S) -> None:
    """Record the original request a (copied) Bolt context belongs to, so its retries are dropped."""
    key = context.get(SEEN_CONTEXT_KEY)
    if key:
        redis.set(str(key), "1", nx=True, ex=ttl_s)


def dedupe_retries(redis: Redis, ttl_s: int = SEEN_TTL_S) -> Middleware:
    """A Bolt global middleware (`app.use(dedupe_retries(redis))`) that drops retries of requests already seen."""

    def dedupe_slack_retries(req: BoltRequest, next_: Callable[[], None]) -> BoltResponse | None:
        key = request_key(req.body)
        if key is None:
            next_()
            return None
        retry = _header(req.headers, "x-slack-retry-num")
        if retry is None:
            req.context[SEEN_CONTEXT_KEY] = seen_key(key)  # written with the queued work
            next_()
            return None
        try:
            first = bool(redis.set(seen_key(key), "1", nx=True, ex=ttl_s))
        except RedisError as error:
            log.warning("Slack retry check failed (%s); handling the request", error)
            first = True
        if not first:
            reason = _header(req.headers, "x-slack-retry-reason") or "?"
            log.info("dropping Slack retry %s (%s) of a request already handled: %s", retry, reason, key)
            return BoltResponse(status=200, body="")
        next_()
        return None

    return dedupe_slack_retries
