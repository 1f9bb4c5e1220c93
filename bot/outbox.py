"""The outbox: every Slack post and update the worker makes for a run, delivered even while Slack is down.

A run's messages have keys: `parent`, `progress`, `report`, `cancelled`, `abandoned`... `Outbox.show`
makes message `key` of a run show a text: the first time it is posted, after that it is updated, so
a message is never posted twice by a retry. Each call is tried at once unless the run has messages
waiting. A failed one (SlackError) is kept in Redis, in order per run, and retried with backoff
(Slack's Retry-After when it gives one) by whoever calls `deliver_due`: every worker's background
thread does, every second. Content still waiting is replaced by newer content of the same message:
the newest state wins, so a progress message Slack missed for a minute shows the latest steps when
Slack answers again. A failed notification never fails or repeats a run.

Redis keys (all under `trackbot:outbox:`): `due` (sorted set: run id by next attempt), `queue:<run>`
(message keys in order), `items:<run>` (key → what to show), `ts:<run>` (key → the message's ts once
posted), `tries:<run>` (failures since the last delivery), `lock:<run>` (one deliverer at a time).
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import socket
import time
from typing import Any

from redis import Redis, RedisError
from slack_sdk.errors import SlackApiError

from bot.adapters.process import pid_alive
from bot.adapters.slack import SlackError, SlackPoster
from bot.runs import Run
from bot.store import PREFIX, RunStore

log = logging.getLogger(__name__)

TS_TTL_S = 30 * 24 * 3600
LOCK_TTL_MS = 30_000  # renewed before each message; a deliverer that died holding it blocks no longer
BASE_BACKOFF_S = 1.0
MAX_BACKOFF_S = 60.0
PERMANENT_TRIES = 3  # an error Slack will keep giving (channel_not_found...) is dropped after this many
TRANSIENT_CODES = {"ratelimited", "internal_error", "fatal_error", "service_unavailable", "request_timeout"}

# Add (or replace the content of) message ARGV[1]; a new key joins the end of the run's queue.
# The run becomes due now unless it already waits for a backoff. Returns its due time.
_ENQUEUE = """
if redis.call('hexists', KEYS[1], ARGV[1]) == 0 then redis.call('rpush', KEYS[2], ARGV[1]) end
redis.call('hset', KEYS[1], ARGV[1], ARGV[2])
redis.call('zadd', KEYS[3], 'NX', ARGV[4], ARGV[3])
return redis.call('zscore', KEYS[3], ARGV[3])
"""

# Message ARGV[1] was delivered with content ARGV[2]: forget it, unless newer content arrived meanwhile.
_DELIVERED = """
if redis.call('hget', KEYS[1], ARGV[1]) == ARGV[2] then
  redis.call('hdel', KEYS[1], ARGV[1])
  redis.call('lrem', KEYS[2], 1, ARGV[1])
  return 1
end
return 0
"""

# Nothing left for the run: it is no longer due (atomic with _ENQUEUE, so nothing is stranded).
_DONE_IF_EMPTY = """
if redis.call('llen', KEYS[1]) == 0 then
  redis.call('zrem', KEYS[2], ARGV[1])
  redis.call('del', KEYS[3])
  return 1
end
return 0
"""

_UNLOCK = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""

_RELOCK = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) end
return 0
"""


def _dead_here(holder: str) -> bool:
    """True when a lock's holder (`host:pid:nonce`) is a process of this host that is gone."""
    host, _, rest = holder.partition(":")
    pid = rest.partition(":")[0]
    if host != socket.gethostname() or not pid.isdigit():
        return False
    return not pid_alive(int(pid))


def _text(raw: Any) -> str:
    return raw.decode() if isinstance(raw, bytes) else str(raw)


def classify(error: SlackError) -> tuple[bool, float | None]:
    """(worth retrying, Slack's Retry-After in seconds) for a failed Slack call.

    SlackPoster raises SlackError from the slack_sdk error; that error is still its context.
    Rate limits, 5xx and connection errors are worth retrying; `channel_not_found` and the like are not.
    """
    cause = error.__cause__ or error.__context__
    if not isinstance(cause, SlackApiError):
        return True, None  # no answer at all: a connection error or a timeout
    response = cause.response
    status = int(getattr(response, "status_code", 200) or 200)
    code = str(response.get("error", "") if hasattr(response, "get") else "")
    retry_after: float | None = None
    headers = getattr(response, "headers", None) or {}
    for name in ("Retry-After", "retry-after"):
        value = headers.get(name) if hasattr(headers, "get") else None
        if value is not None:
            try:
                retry_after = float(value[0] if isinstance(value, list) else value)
            except (TypeError, ValueError):
                pass
            break
    return status == 429 or status >= 500 or code in TRANSIENT_CODES, retry_after


def backoff_s(tries: int, retry_after: float | None = None) -> float:
    """Seconds before the next attempt after `tries` failures in a row: 1, 2, 4... at most 60."""
    delay = min(MAX_BACKOFF_S, BASE_BACKOFF_S * 2 ** max(0, tries - 1))
    return max(delay, retry_after or 0.0)


class Outbox:
    """A run's Slack messages, kept until Slack has them."""

    def __init__(self, poster: SlackPoster, store: RunStore) -> None:
        self.poster = poster
        self.store = store
        self.redis: Redis = store.redis

    def _key(self, *parts: str) -> str:
        return ":".join((PREFIX, "outbox", *parts))

    # -- what callers use ----------------------------------------------------------------------

    def show(
        self,
        run: Run,
        key: str,
        text: str,
        blocks: list[dict[str, Any]] | None = None,
        *,
        in_thread: bool = True,
        ts: str | None = None,
        wait_s: float = 2.0,
    ) -> str | None:
        """Make message `key` of `run` show `text` (posted the first time, updated after that).

        `in_thread`: a reply in the run's thread (else a message in the channel, like the parent).
        `ts`: the message's ts when the caller knows it is posted already. Returns the message's
        ts once it is posted (now or before); None while it waits in the outbox.
        """
        item = {
            "channel": run.channel,
            "text": text,
            "blocks": blocks,
            "in_thread": in_thread,
            "thread_ts": run.thread_ts if in_thread else None,
            "ts": ts,
        }
        try:
            if ts is not None:
                self.record(run.id, key, ts)
            if run.thread_ts is not None:
                self.record(run.id, "parent", run.thread_ts)
            due = float(
                self.redis.eval(
                    _ENQUEUE,
                    3,
                    self._key("items", run.id),
                    self._key("queue", run.id),
                    self._key("due"),
                    key,
                    json.dumps(item, sort_keys=True),
                    run.id,
                    time.time(),
                )
            )
        except RedisError as error:
            # Without Redis nothing can wait: try Slack once, directly.
            log.warning("outbox for %s unavailable (%s); sending %s directly", run.id, error, key)
            try:
                return self._send(run.id, key, item, known={})
            except SlackError as failure:
                log.warning("sending %s of %s: %s", key, run.id, failure)
                return None
        try:
            if due <= time.time():
                self.flush(run.id, wait_s=wait_s)
            return self.delivered(run.id).get(key)
        except RedisError as error:  # it is stored: a deliverer sends it once Redis answers again
            log.warning("delivering %s of %s: %s", key, run.id, error)
            return None

    def record(self, run_id: str, key: str, ts: str) -> None:
        """Note that message `key` of the run is posted as `ts` (later shows update it)."""
        pipe = self.redis.pipeline()
        pipe.hset(self._key("ts", run_id), key, ts)
        pipe.expire(self._key("ts", run_id), TS_TTL_S)
        pipe.execute()

    def delivered(self, run_id: str) -> dict[str, str]:
        """The ts of every message of the run that is posted, by key."""
        raw = self.redis.hgetall(self._key("ts", run_id))
        return {_text(k): _text(v) for k, v in raw.items()}

    def pending(self, run_id: str) -> list[str]:
        """Keys of the run's messages waiting for Slack, in order."""
        return [_text(k) for k in self.redis.lrange(self._key("queue", run_id), 0, -1)]

    def deliver_due(self, limit: int = 50) -> int:
        """Try every run whose messages are due (the background thread calls this). Returns how many
        runs' outboxes were emptied."""
        due = self.redis.zrangebyscore(self._key("due"), "-inf", time.time(), start=0, num=limit)
        emptied = 0
        for raw in due:
            try:
                emptied += bool(self.flush(_text(raw), wait_s=0))
            except RedisError as error:
                log.warning("delivering the outbox of %s: %s", _text(raw), error)
        return emptied

    # -- delivery ------------------------------------------------------------------------------

    def flush(self, run_id: str, wait_s: float = 0.0) -> bool:
        """Deliver the run's waiting messages in order, stopping at the first failure (then backing off).
        Returns True when nothing is left. Only one process delivers a run's messages at a time."""
        lock = self._key("lock", run_id)
        token = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        deadline = time.monotonic() + wait_s
        while not self.redis.set(lock, token, nx=True, px=LOCK_TTL_MS):
            holder = self.redis.get(lock)
            if holder is not None and _dead_here(_text(holder)):
                # A job killed while it was sending (SIGKILL, OOM): its lock would hold everything up.
                self.redis.eval(_UNLOCK, 1, lock, holder)
                continue
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)
        try:
            return self._flush_locked(run_id, lock, token)
        finally:
            self.redis.eval(_UNLOCK, 1, lock, token)

    def _flush_locked(self, run_id: str, lock: str, token: str) -> bool:
        items, queue = self._key("items", run_id), self._key("queue", run_id)
        while True:
            if not self.redis.eval(_RELOCK, 1, lock, token, LOCK_TTL_MS):
                return False  # held up for longer than the lock lives: someone else delivers now
            head = self.redis.lindex(queue, 0)
            if head is None:
                done = self.redis.eval(_DONE_IF_EMPTY, 3, queue, self._key("due"), self._key("tries", run_id), run_id)
                if done:
                    return True
                continue
            key = _text(head)
            raw = self.redis.hget(items, key)
            if raw is None:
                self.redis.lrem(queue, 1, key)
                continue
            item = json.loads(raw)
            try:
                ts = self._send(run_id, key, item, known=self.delivered(run_id))
            except SlackError as error:
                if self._failed(run_id, key, raw, error):
                    continue  # dropped: go on with the next message
                return False
            self.record(run_id, key, ts)
            if key == "parent":
                self.store.patch(run_id, thread_ts=ts)
            self.redis.eval(_DELIVERED, 2, items, queue, key, raw)
            self.redis.delete(self._key("tries", run_id))

    def _send(self, run_id: str, key: str, item: dict[str, Any], known: dict[str, str]) -> str:
        """Post or update one message; return its ts."""
        channel, text, blocks = item["channel"], item["text"], item.get("blocks")
        ts = known.get(key) or item.get("ts")
        if ts:
            self.poster.update(channel, ts, text, blocks)
            return str(ts)
        thread_ts = None
        if item.get("in_thread"):
            thread_ts = item.get("thread_ts") or known.get("parent")
            if thread_ts is None:
                run = self.store.get(run_id)
                thread_ts = run.thread_ts if run is not None else None
            if thread_ts is None:
                log.warning("run %s has no thread yet; posting %s in the channel", run_id, key)
        return self.poster.post(channel, text, blocks, thread_ts=thread_ts)

    def _failed(self, run_id: str, key: str, raw: Any, error: SlackError) -> bool:
        """Schedule the next attempt; True when the message was dropped instead (Slack will never take it)."""
        transient, retry_after = classify(error)
        tries = int(self.redis.incr(self._key("tries", run_id)))
        if not transient and tries >= PERMANENT_TRIES:
            log.error("dropping message %s of run %s after %d tries: %s", key, run_id, tries, error)
            self.redis.eval(_DELIVERED, 2, self._key("items", run_id), self._key("queue", run_id), key, raw)
            self.redis.delete(self._key("tries", run_id))
            return True
        delay = backoff_s(tries, retry_after)
        self.redis.zadd(self._key("due"), {run_id: time.time() + delay})
        log.warning("Slack did not take message %s of run %s (%s); retrying in %.0fs", key, run_id, error, delay)
        return False
