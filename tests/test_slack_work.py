"""Slack commands are acked by the web app and answered by a worker (handlers/slack_work.py).

Each test starts the local stack (twins, the bot's HTTP app, a real `trackbot worker` process),
sends real signed requests, and checks what the user sees: the ack, then the answer through the
command's response_url. The worker is paused with SIGSTOP where a test needs work to wait in the
queue, exactly as it waits when every worker is busy or gone.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator

import pytest
from redis import Redis
from slack_bolt import BoltRequest
from test_handlers import answers, wait_answers

from bot.local.console import CHANNEL_ID, CHANNEL_NAME, USERS, LocalStack
from bot.local.slack_requests import post_signed, slash_command_body
from handlers.slack_work import (
    GROUP,
    LISTENING_KEY,
    MAX_AGE_S,
    STREAM,
    SlackWork,
    SlackWorkConsumer,
    SlackWorkQueue,
)

MakeStack = Callable[..., LocalStack]
ALICE = USERS["alice"]
KEY = b"a test's queue key"
RETRY = {"X-Slack-Retry-Num": "1", "X-Slack-Retry-Reason": "http_timeout"}


def no_more_answers(stack: LocalStack, count: int, seconds: float = 1.5) -> bool:
    """True when there are still exactly `count` answers after `seconds`."""
    time.sleep(seconds)
    return len(answers(stack)) == count


def command_body(stack: LocalStack, text: str) -> str:
    assert stack.slack is not None
    response_url = stack.slack.new_response_url(CHANNEL_ID, ALICE)
    return slash_command_body("/track", text, ALICE, "alice", CHANNEL_ID, CHANNEL_NAME, response_url)


def send(stack: LocalStack, body: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    status, _, answer = post_signed(stack.bot_url + "/slack/events", body, stack.signing_secret, extra_headers=headers)
    return status, answer


def worker_listening(stack: LocalStack, timeout: float = 30) -> None:
    """Until the worker has said that it answers Slack work."""
    assert stack.services is not None
    deadline = time.monotonic() + timeout
    while not stack.services.redis.exists(LISTENING_KEY):
        assert time.monotonic() < deadline, "the worker never said it answers Slack work"
        time.sleep(0.05)


@contextlib.contextmanager
def paused(stack: LocalStack) -> Iterator[None]:
    """The worker process stopped (SIGSTOP) inside the block, continued after it."""
    assert stack.worker is not None
    stack.worker.send_signal(signal.SIGSTOP)
    try:
        yield
    finally:
        stack.worker.send_signal(signal.SIGCONT)


def queued(stack: LocalStack) -> int:
    assert stack.services is not None
    return int(stack.services.redis.xlen(STREAM))


def test_a_command_acked_while_the_worker_is_busy_is_answered_when_it_is_back(make_stack: MakeStack) -> None:
    stack = make_stack()
    worker_listening(stack)
    with paused(stack):
        assert send(stack, command_body(stack, "status")) == (200, b"")  # the ack: nothing shown yet
        assert queued(stack) == 1
        [(_, fields)] = stack.services.redis.xrange(STREAM)  # type: ignore[union-attr]
        assert b"user_id=U0ALICE" in fields[b"body"] and b"token=" not in fields[b"body"]  # no credential waits
        assert no_more_answers(stack, 0)  # the web app did not answer it itself
        with urllib.request.urlopen(stack.bot_url + "/metrics", timeout=15) as response:
            assert "trackbot_slack_work_waiting 1.0" in response.read().decode()  # operators see the backlog
    [answer] = wait_answers(stack, 0, 1)
    assert "Track 1: *hello-endpoint*" in answer.text
    assert queued(stack) == 0  # answered work leaves the stream
    assert no_more_answers(stack, 1)


def test_with_no_worker_listening_the_web_app_answers_by_itself(make_stack: MakeStack) -> None:
    stack = make_stack()
    worker_listening(stack)
    assert stack.worker is not None and stack.services is not None
    stack.worker.send_signal(signal.SIGTERM)
    stack.worker.wait(timeout=60)
    stack.services.redis.delete(LISTENING_KEY)  # what its expiry does LISTENING_TTL_S after the last worker
    assert send(stack, command_body(stack, "status"))[0] == 200
    [answer] = wait_answers(stack, 0, 1)
    assert "Track 1" in answer.text
    assert queued(stack) == 0  # nothing was left waiting for a worker
    # A run can be queued, and the user is told that nothing will start it yet.
    assert send(stack, command_body(stack, "run"))[0] == 200
    queued_answer = wait_answers(stack, 0, 2)[1].text
    assert queued_answer.startswith("Queued Track 1: hello-endpoint")
    assert "No trackbot worker is running: the run waits in the queue until one starts" in queued_answer
    assert send(stack, command_body(stack, "status"))[0] == 200
    assert "Queue position: 1\n:warning: No trackbot worker is running" in wait_answers(stack, 0, 3)[2].text


def test_a_command_a_killed_worker_had_taken_is_answered_by_another(
    make_stack: MakeStack, workers: Callable[[LocalStack], subprocess.Popen[bytes]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TRACKBOT_SLACK_WORK_CLAIM_IDLE", "1")
    stack = make_stack()
    worker_listening(stack)
    assert stack.services is not None and stack.worker is not None
    redis = stack.services.redis
    with paused(stack):
        assert send(stack, command_body(stack, "status"))[0] == 200
        # A thread of the stopped worker was waiting on the stream: Redis handed it the entry.
        assert redis.xpending(STREAM, GROUP)["pending"] == 1
        stack.worker.kill()
        stack.worker.wait()
    assert no_more_answers(stack, 0)
    workers(stack)  # another worker
    [answer] = wait_answers(stack, 0, 1, timeout=30)
    assert "Track 1: *hello-endpoint*" in answer.text
    assert no_more_answers(stack, 1)
    assert redis.xpending(STREAM, GROUP)["pending"] == 0


def test_a_slack_retry_of_a_queued_command_is_dropped(make_stack: MakeStack) -> None:
    stack = make_stack()
    worker_listening(stack)
    body = command_body(stack, "status")
    with paused(stack):
        assert send(stack, body)[0] == 200
        assert send(stack, body, RETRY) == (200, b"")  # Slack gave up waiting; trackbot had it already
        assert queued(stack) == 1
    wait_answers(stack, 0, 1)
    assert no_more_answers(stack, 1)


def worker_gone(stack: LocalStack) -> None:
    """Stop the worker; for up to LISTENING_TTL_S the web app still takes it for listening, and queues."""
    assert stack.worker is not None
    stack.worker.terminate()
    stack.worker.wait(timeout=60)


def test_work_that_keeps_killing_its_worker_is_dropped_after_three_deliveries(make_stack: MakeStack) -> None:
    stack = make_stack()
    worker_listening(stack)
    assert stack.services is not None
    redis = stack.services.redis
    worker_gone(stack)
    assert send(stack, command_body(stack, "status"))[0] == 200
    [[_, [(entry_id, _)]]] = redis.xreadgroup(GROUP, "crashing:1:0", {STREAM: ">"}, count=1)
    for n in range(2, 4):  # two more workers took it and died
        redis.xclaim(STREAM, GROUP, f"crashing:{n}:0", 0, [entry_id])
    consumer = SlackWorkConsumer(stack.services, threads=0)
    [(claimed_id, fields)] = consumer.queue.claim("here:1:0", idle_s=0.001)
    assert claimed_id == entry_id.decode()
    consumer.answer(claimed_id, fields, claimed=True)  # the fourth delivery: given up, not answered
    assert queued(stack) == 0 and redis.xpending(STREAM, GROUP)["pending"] == 0
    assert no_more_answers(stack, 0)


def test_work_older_than_its_response_url_is_dropped(make_stack: MakeStack) -> None:
    stack = make_stack()
    worker_listening(stack)
    assert stack.services is not None
    worker_gone(stack)
    consumer = SlackWorkConsumer(stack.services, threads=0)
    stale = SlackWork(
        "track",
        "http",
        command_body(stack, "status"),
        "application/x-www-form-urlencoded",
        time.time() - MAX_AGE_S - 60,
    )
    consumer.queue.put(stale)
    [(entry_id, fields)] = consumer.queue.take("here:1:0", block_ms=1000)
    consumer.answer(entry_id, fields)
    assert queued(stack) == 0
    assert no_more_answers(stack, 0)


def test_a_socket_mode_command_is_answered_by_the_worker(make_stack: MakeStack) -> None:
    stack = make_stack()
    worker_listening(stack)
    payload = dict(urllib.parse.parse_qsl(command_body(stack, "status")))
    web_app = stack.server.get_app().bolt  # type: ignore[attr-defined]
    with paused(stack):
        # What Bolt's SocketModeHandler does with a slash command that arrives over the socket.
        response = web_app.dispatch(BoltRequest(body=payload, mode="socket_mode"))
        assert response.status == 200
        assert queued(stack) == 1
    [answer] = wait_answers(stack, 0, 1)
    assert "Track 1" in answer.text


def test_consumers_of_gone_workers_are_forgotten_unless_they_hold_work(redis: Redis) -> None:
    queue = SlackWorkQueue(redis, KEY)
    queue.ensure_group()
    for n in range(3):
        queue.put(SlackWork("track", "http", f"text={n}", "application/x-www-form-urlencoded", time.time()))
    for name in ("gone:1:0", "gone:2:0", "holding:3:0"):
        [(entry_id, _)] = queue.take(name, block_ms=100)
        if not name.startswith("holding"):
            queue.done(entry_id)
    time.sleep(0.05)
    assert queue.forget_gone_consumers(idle_s=10) == 0  # all of them read just now
    assert queue.forget_gone_consumers(idle_s=0.01) == 2
    [left] = redis.xinfo_consumers(STREAM, GROUP)
    assert left["name"] == b"holding:3:0" and left["pending"] == 1  # its entry waits to be claimed


def test_an_answer_slack_refuses_for_a_moment_still_arrives_once(make_stack: MakeStack) -> None:
    stack = make_stack()
    worker_listening(stack)
    assert stack.slack is not None
    stack.slack.fail_next("response_url", count=1, status=429, retry_after=1)
    stack.slack.fail_next("response_url", count=1, status=500, error="internal_error")
    assert send(stack, command_body(stack, "status"))[0] == 200
    [answer] = wait_answers(stack, 0, 1, timeout=30)
    assert "Track 1: *hello-endpoint*" in answer.text
    assert no_more_answers(stack, 1)


def test_an_answer_slack_keeps_refusing_is_logged_not_retried_forever(make_stack: MakeStack) -> None:
    stack = make_stack()
    worker_listening(stack)
    assert stack.slack is not None
    stack.slack.fail_next("response_url", count=3, status=500, error="internal_error")
    assert send(stack, command_body(stack, "status"))[0] == 200
    log = stack.work_dir / "worker.log"
    deadline = time.monotonic() + 30
    while "was not delivered: Slack answered 500" not in log.read_text():
        assert time.monotonic() < deadline, log.read_text()[-2000:]
        time.sleep(0.1)
    assert answers(stack) == [] and queued(stack) == 0


def worker_log(stack: LocalStack) -> str:
    return (stack.work_dir / "worker.log").read_text(errors="replace")


def wait_for(predicate: Callable[[], bool], timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_forged_slack_work_from_a_maintainer_is_dropped(make_stack: MakeStack) -> None:
    """Someone who can write to Redis queues `/track run` "from" a maintainer: no HMAC, or one made with
    another key. The real worker never answers it (no post in the Slack twin) and logs that it dropped
    it; a command that came through the web app is answered as ever."""
    stack = make_stack()
    worker_listening(stack)
    assert stack.services is not None and stack.slack is not None
    redis = stack.services.redis
    work = SlackWork("track", "http", command_body(stack, "run"), "application/x-www-form-urlencoded", time.time())
    unsigned = {k: v for k, v in work.fields(KEY).items() if k != "mac"}
    redis.xadd(STREAM, unsigned)  # type: ignore[arg-type]
    redis.xadd(STREAM, work.fields(b"not the server's key"))  # type: ignore[arg-type]
    wait_for(lambda: queued(stack) == 0 and worker_log(stack).count("dropped, not answered") == 2)
    assert "its HMAC is missing" in worker_log(stack) and "its HMAC is wrong" in worker_log(stack)
    assert no_more_answers(stack, 0)
    assert stack.slack.snapshot() == []  # no answer, no run thread: nothing at all was posted
    assert stack.services.store.runs(stack.services.settings.repositories[0]) == []

    with paused(stack):
        assert send(stack, command_body(stack, "status")) == (200, b"")  # a real one, through the web app
        [(_, real)] = redis.xrange(STREAM)  # type: ignore[misc]
    [answer] = wait_answers(stack, 0, 1)
    assert "Track 1" in answer.text

    redis.xadd(STREAM, real)  # the real entry, copied: a replay
    wait_for(lambda: queued(stack) == 0 and "dropped, not answered: a copy of an earlier entry" in worker_log(stack))
    assert no_more_answers(stack, 1)
