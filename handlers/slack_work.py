"""Slack work answered by the workers: the web process acks, a worker does what was asked.

Every listener is an immediate ack plus `lazy` work (handlers/slack.py). Bolt runs lazy work on a
thread pool of the process that acked; under load that work (GitHub and Slack calls, rendering)
competes with the acks for the GIL. bench/ack_latency.py measured a p99 ack of about 200 ms with the
work in the web process against about 60 ms without it (the bare app's). So the web app hands each
lazy call to the workers through a Redis stream, and every `trackbot worker` answers them on a few
threads of its main process, which stays idle while its work horse runs a track: commands are
answered even while every worker runs a track. A web restart after an ack loses nothing either.
Queueing is one Redis round trip (the original request's retry marker rides in the same pipeline,
handlers/slack_dedupe.py): a thread that blocks on Redis waits for the GIL again afterwards, and
three round trips per ack cost about twice the bare app's p99.

- Delivery is at least once. A worker that dies while answering leaves its entry pending; another
  worker claims it once it has been idle for TRACKBOT_SLACK_WORK_CLAIM_IDLE seconds. An entry that
  was delivered MAX_DELIVERIES times is dropped and logged (it kills whoever takes it).
- When no worker has said within LISTENING_TTL_S that it answers, the web process does the work
  itself, as Bolt would (a deployment with no worker still answers `/track status`).
- An entry older than MAX_AGE_S is dropped and logged: its response_url has expired (Slack keeps
  one for 30 minutes), so there is nobody to answer.
- Every entry carries an HMAC-SHA256 of its fields keyed with the server-side queue key
  (`Settings.queue_key`: TRACKBOT_QUEUE_KEY, or derived from SLACK_SIGNING_SECRET). The worker answers
  only entries whose HMAC is right; anything else in the stream (a forged command "from a
  maintainer", say) is dropped and logged, never answered. A copy of a real entry added again (a
  replay) is dropped too: the first entry to carry an HMAC claims it (REPLAY_KEY) until it expires.

The entry is the request as Slack sent it (raw body, content type), already verified by the web
process; the worker's Bolt app replays it with Bolt's own lazy-only dispatch (the mechanism of
Bolt's AWS Lambda adapter), so the listener code is the same wherever it runs.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import socket
import threading
import time
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from logging import Logger
from typing import TYPE_CHECKING, Any

from redis import Redis
from redis.client import Pipeline
from redis.exceptions import RedisError, ResponseError
from slack_bolt import App, BoltRequest
from slack_bolt.lazy_listener import LazyListenerRunner

from bot.metrics import SLACK_WORK_STREAM
from handlers.slack_dedupe import remember_seen

if TYPE_CHECKING:
    from bot.services import Services

log = logging.getLogger(__name__)

STREAM = SLACK_WORK_STREAM
GROUP = "trackbot-workers"
LISTENING_KEY = "trackbot:slack-work:listening"
LISTENING_TTL_S = 15  # a worker renews it every BEAT_S; the web trusts it this long
BEAT_S = 5.0
MAX_DELIVERIES = 3
MAX_AGE_S = 25 * 60  # Slack's response_url lives 30 minutes
MAX_ENTRIES = 10_000  # the stream is trimmed (approximately, oldest first) beyond this
TIDY_EVERY_S = 600.0
GONE_AFTER_S = 3600.0  # a consumer that has not read for this long belongs to a worker that is gone
REPLAY_KEY = "trackbot:slack-work:mac:"  # + an entry's HMAC -> the id of the entry that carried it first
LAZY_ONLY = "x-slack-bolt-lazy-only"
LAZY_FUNCTION = "x-slack-bolt-lazy-function-name"


@dataclass(frozen=True)
class SlackWork:
    """One lazy listener call: which function, and the Slack request it answers."""

    function: str
    mode: str  # "http" or "socket_mode", as BoltRequest has it
    body: str  # the raw body (HTTP), or the payload as JSON (Socket Mode)
    content_type: str
    queued_at: float  # time.time() on the web process

    @classmethod
    def from_request(cls, request: BoltRequest) -> SlackWork:
        """The work Bolt hands a lazy listener runner (a copy of the request, with the function's name).

        Slack's legacy verification `token` is left out: nothing needs it after the signature check,
        and a credential has no business waiting in a queue."""
        if request.lazy_function_name is None:
            raise ValueError("not a lazy listener request")
        if request.mode == "http":
            body = _without_token(request.raw_body, request.content_type or "")
        else:
            body = json.dumps({k: v for k, v in request.body.items() if k != "token"})
        return cls(request.lazy_function_name, request.mode, body, request.content_type or "", time.time())

    def fields(self, key: bytes) -> dict[str, str]:
        """The stream entry, signed with `key`."""
        fields = {
            "function": self.function,
            "mode": self.mode,
            "body": self.body,
            "content_type": self.content_type,
            "queued_at": repr(self.queued_at),
        }
        return {**fields, "mac": _mac(key, fields)}

    @classmethod
    def from_fields(cls, fields: Mapping[bytes, bytes], key: bytes) -> SlackWork:
        """Read a stream entry back; ValueError when it is not one, ForgedWork when `key` did not sign it."""
        try:
            text = {k.decode(): v.decode() for k, v in fields.items()}
            names = ("function", "mode", "body", "content_type", "queued_at")
            signed = {name: text[name] for name in names}
            if not hmac.compare_digest(text.get("mac", ""), _mac(key, signed)):
                raise ForgedWork("missing" if "mac" not in text else "wrong")
            return cls(text["function"], text["mode"], text["body"], text["content_type"], float(text["queued_at"]))
        except (KeyError, UnicodeDecodeError) as error:
            raise ValueError(f"not a Slack work entry: {error}") from error

    def request(self) -> BoltRequest:
        """The request to dispatch: Bolt runs only the named lazy function on it, synchronously."""
        headers: dict[str, str | Sequence[str]] = {LAZY_ONLY: "1", LAZY_FUNCTION: self.function}
        if self.content_type:
            headers["content-type"] = self.content_type
        body: str | dict[str, Any] = self.body if self.mode == "http" else json.loads(self.body)
        return BoltRequest(body=body, headers=headers, mode=self.mode)


class ForgedWork(ValueError):
    """A stream entry whose HMAC is missing or wrong: trackbot did not queue it."""


def _mac(key: bytes, fields: Mapping[str, str]) -> str:
    message = json.dumps([fields[name] for name in sorted(fields)], separators=(",", ":"))
    return hmac.new(key, message.encode(), hashlib.sha256).hexdigest()


class SlackWorkQueue:
    """The Redis stream of Slack work, and whether any worker answers it."""

    def __init__(self, redis: Redis, key: bytes, listening_cache_s: float = 2.0) -> None:
        self.redis = redis
        self.key = key  # signs the entries (Settings.queue_key)
        self._listening_cache_s = listening_cache_s
        self._listening_until = 0.0
        self._lock = threading.Lock()

    def put(self, work: SlackWork, also: Callable[[Pipeline], None] | None = None) -> str:
        """Queue the work, and run `also` on the same pipeline (one round trip); the entry's id."""
        pipe = self.redis.pipeline(transaction=False)
        if also is not None:
            also(pipe)
        pipe.xadd(STREAM, work.fields(self.key), maxlen=MAX_ENTRIES, approximate=True)  # type: ignore[arg-type]
        entry = pipe.execute()[-1]
        return entry.decode() if isinstance(entry, bytes) else str(entry)

    def listening(self) -> bool:
        """Whether a worker said lately that it answers. A yes is trusted for a couple of seconds (no
        Redis round trip per ack); a no is asked again each time, so a worker that starts is used at once."""
        now = time.monotonic()
        with self._lock:
            if now < self._listening_until:
                return True
        try:
            answer = bool(self.redis.exists(LISTENING_KEY))
        except RedisError as error:
            log.warning("cannot tell whether a worker answers Slack work (%s); answering here", error)
            return False
        if answer:
            with self._lock:
                self._listening_until = now + self._listening_cache_s
        return answer

    def say_listening(self) -> None:
        """A worker answers: the web may hand it work for the next LISTENING_TTL_S seconds."""
        self.redis.set(LISTENING_KEY, socket.gethostname(), ex=LISTENING_TTL_S)

    def ensure_group(self) -> None:
        """Create the stream and the workers' consumer group (from the stream's start) unless they exist."""
        try:
            self.redis.xgroup_create(STREAM, GROUP, id="0", mkstream=True)
        except ResponseError as error:
            if "BUSYGROUP" not in str(error):
                raise

    def take(self, consumer: str, block_ms: int) -> list[tuple[str, Mapping[bytes, bytes]]]:
        """New entries for `consumer`, waiting up to `block_ms` for one."""
        answer: Any = self.redis.xreadgroup(GROUP, consumer, {STREAM: ">"}, count=1, block=block_ms)
        return _entries(answer[0][1] if answer else [])  # [[stream, [(id, fields), ...]]]

    def claim(self, consumer: str, idle_s: float) -> list[tuple[str, Mapping[bytes, bytes]]]:
        """Entries another consumer took and left idle for `idle_s` (its worker died), now `consumer`'s."""
        claimed = self.redis.xautoclaim(STREAM, GROUP, consumer, int(idle_s * 1000), "0-0", count=10)
        return _entries(claimed[1] if claimed else [])  # [next start, [(id, fields), ...], deleted ids]

    def deliveries(self, entry_id: str) -> int:
        """How many times the entry was handed to a consumer."""
        pending = self.redis.xpending_range(STREAM, GROUP, min=entry_id, max=entry_id, count=1)
        return int(pending[0]["times_delivered"]) if pending else 0

    def forget_gone_consumers(self, idle_s: float) -> int:
        """Drop the group's consumers that hold nothing and have not read for `idle_s` (their workers are
        gone: a live one reads every second), so the group does not grow with every worker restart."""
        gone = 0
        for consumer in self.redis.xinfo_consumers(STREAM, GROUP):
            if int(consumer["pending"]) == 0 and int(consumer["idle"]) > idle_s * 1000:
                self.redis.xgroup_delconsumer(STREAM, GROUP, consumer["name"])
                gone += 1
        return gone

    def first_with(self, mac: str, entry_id: str) -> bool:
        """Whether `entry_id` is the first entry seen with this HMAC (False: a copy of another, a replay)."""
        key = REPLAY_KEY + mac
        if self.redis.set(key, entry_id, nx=True, ex=int(MAX_AGE_S) + 60):
            return True
        return _text(self.redis.get(key) or b"") == entry_id  # a claimed entry comes back as itself

    def done(self, entry_id: str) -> None:
        """The entry is answered (or given up): acknowledge and delete it."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.xack(STREAM, GROUP, entry_id)
        pipe.xdel(STREAM, entry_id)
        pipe.execute()


def _without_token(raw_body: str, content_type: str) -> str:
    """A request body (JSON; a form: a slash command, or `payload=` JSON of an interaction) without `token`."""
    if content_type.startswith("application/json"):
        try:
            document = json.loads(raw_body)
        except ValueError:
            return raw_body
        if isinstance(document, dict):
            document.pop("token", None)
        return json.dumps(document)
    form_body = raw_body
    fields = [(k, v) for k, v in urllib.parse.parse_qsl(form_body, keep_blank_values=True) if k != "token"]
    for index, (key, value) in enumerate(fields):
        if key == "payload":
            try:
                payload = json.loads(value)
            except ValueError:
                continue
            if isinstance(payload, dict):
                payload.pop("token", None)
                fields[index] = (key, json.dumps(payload))
    return urllib.parse.urlencode(fields)


def _entries(raw: Any) -> list[tuple[str, Mapping[bytes, bytes]]]:
    """Stream entries as (id, fields), leaving out those deleted since (their fields are None)."""
    return [(_text(entry_id), fields) for entry_id, fields in raw if fields is not None]


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class QueuedLazyListenerRunner(LazyListenerRunner):
    """Bolt's lazy listener runner for the web app: the work goes to the workers, or runs here when none listens."""

    def __init__(self, queue: SlackWorkQueue, here: LazyListenerRunner, logger: Logger) -> None:
        self.queue = queue
        self.here = here
        self.logger = logger

    def start(self, function: Callable[..., None], request: BoltRequest) -> None:
        """Queue the call for a worker; when no worker answers, or Redis refuses it, run it on this process.

        The request is remembered as seen (its Slack retries are dropped) in the same round trip."""
        if self.queue.listening():
            try:
                self.queue.put(SlackWork.from_request(request), also=lambda pipe: remember_seen(pipe, request.context))
                return
            except RedisError as error:
                log.warning("cannot queue Slack work for the workers (%s); answering here", error)
        try:
            remember_seen(self.queue.redis, request.context)
        except RedisError as error:
            log.warning("cannot remember a Slack request as seen (%s)", error)
        self.here.start(function, request)


def hand_lazy_work_to_workers(app: App, queue: SlackWorkQueue) -> None:
    """Make `app` queue its listeners' lazy work for the workers (see the module docstring)."""
    runner = app.listener_runner
    runner.lazy_listener_runner = QueuedLazyListenerRunner(queue, runner.lazy_listener_runner, runner.logger)


class SlackWorkConsumer:
    """Threads of a worker's main process that answer the Slack work the web app queued."""

    def __init__(self, services: Services, threads: int, app: App | None = None) -> None:
        from handlers.slack import build_slack_app

        self.services = services
        self.queue = SlackWorkQueue(services.redis, services.settings.queue_key)
        self.app = app or build_slack_app(services, answering_queued_work=True)
        self.claim_idle_s = services.settings.slack_work_claim_idle_s
        self._stop = threading.Event()
        base = f"{socket.gethostname()}:{threading.get_native_id()}"
        self._threads = [
            threading.Thread(target=self._loop, args=(f"{base}:{n}",), name=f"trackbot-slack-work-{n}", daemon=True)
            for n in range(threads)
        ]
        self._beat = threading.Thread(target=self._beat_loop, name="trackbot-slack-work-beat", daemon=True)

    def start(self) -> SlackWorkConsumer:
        """Start answering (no threads, nothing started: the web process answers)."""
        if self._threads:
            self._beat.start()
            for thread in self._threads:
                thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop taking work; an answer under way finishes first (up to `timeout`)."""
        self._stop.set()
        deadline = time.monotonic() + timeout
        for thread in [self._beat, *self._threads]:
            if thread.is_alive():
                thread.join(max(0.0, deadline - time.monotonic()))

    def _beat_loop(self) -> None:
        next_tidy = time.monotonic() + TIDY_EVERY_S
        while True:
            try:
                self.queue.ensure_group()
                self.queue.say_listening()
                if time.monotonic() >= next_tidy:
                    next_tidy = time.monotonic() + TIDY_EVERY_S
                    self.queue.forget_gone_consumers(GONE_AFTER_S)
            except RedisError as error:
                log.warning("Slack work: cannot say this worker answers (%s)", error)
            if self._stop.wait(BEAT_S):
                return

    def _loop(self, consumer: str) -> None:
        delay = 1.0
        next_claim = 0.0
        group_ready = False  # again after any Redis error: a restarted Redis may have lost the group
        while not self._stop.is_set():
            try:
                if not group_ready:
                    self.queue.ensure_group()
                    group_ready = True
                if time.monotonic() >= next_claim:
                    next_claim = time.monotonic() + min(30.0, self.claim_idle_s / 2)
                    for entry_id, fields in self.queue.claim(consumer, self.claim_idle_s):
                        self.answer(entry_id, fields, claimed=True)
                for entry_id, fields in self.queue.take(consumer, block_ms=1000):
                    self.answer(entry_id, fields)
                delay = 1.0
            except RedisError as error:
                group_ready = False
                if "NOGROUP" in str(error):
                    continue
                log.warning("Slack work: Redis: %s; again in %.0fs", error, delay)
                self._stop.wait(delay)
                delay = min(delay * 2, 30.0)
            except Exception:
                log.exception("Slack work: the answering loop failed")
                self._stop.wait(delay)

    def answer(self, entry_id: str, fields: Mapping[bytes, bytes], claimed: bool = False) -> None:
        """Answer one entry; it stays pending (a worker claims it later) when it could not be answered."""
        try:
            work = SlackWork.from_fields(fields, self.queue.key)
        except ForgedWork as error:
            log.error("Slack work %s dropped, not answered: its HMAC is %s (not queued by trackbot)", entry_id, error)
            self.queue.done(entry_id)
            return
        except ValueError as error:
            log.error("Slack work %s dropped: %s", entry_id, error)
            self.queue.done(entry_id)
            return
        delivered = self.queue.deliveries(entry_id) if claimed else 1
        if delivered > MAX_DELIVERIES:
            log.error("Slack work %s (%s) dropped after %d deliveries", entry_id, work.function, delivered - 1)
            self.queue.done(entry_id)
            return
        if not self.queue.first_with(_text(fields.get(b"mac", b"")), entry_id):
            log.error("Slack work %s (%s) dropped, not answered: a copy of an earlier entry", entry_id, work.function)
            self.queue.done(entry_id)
            return
        age = time.time() - work.queued_at
        if age > MAX_AGE_S:
            log.warning(
                "Slack work %s (%s) dropped: queued %.0f minutes ago, its response_url has expired",
                entry_id,
                work.function,
                age / 60,
            )
            self.queue.done(entry_id)
            return
        response = self.app.dispatch(work.request())
        if response.status != 200:
            # Bolt could not run it (e.g. Slack's auth.test failed): leave it for a later claim.
            log.warning("Slack work %s (%s) not answered: Bolt said %d", entry_id, work.function, response.status)
            return
        self.queue.done(entry_id)
