"""Runs that survive faults, for real: SIGKILLed workers and work horses, cancels, Redis restarts,
Slack and GitHub failing while a run reports.

Everything is a real process: the worker (`python -m bot.cli worker`) and its forked work horse, the
agent and the child it spawns, valkey-server. The lease, heartbeat and reaper intervals are shortened
through the environment (the settings a worker reads), so a dead worker is noticed in seconds.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import psutil
import pytest
from conftest import agent_script
from rq.exceptions import NoSuchJobError
from test_run import answers, branches, git, messages, pulls, services

from bot.adapters.git import clone_dir
from bot.adapters.slack import SlackError
from bot.cancel import CancelStatus, cancel_queued, cancel_run
from bot.jobqueue import fetch_job
from bot.local.console import LocalStack
from bot.local.slack_api import SlackMessage
from bot.outbox import Outbox, classify
from bot.reaper import reap
from bot.retry import NotRetryable, RepositoryBusy, retry_run
from bot.runs import Run, RunState
from handlers.slack_work import LISTENING_KEY

# The sandbox hides the host from agents and gates; here the agents report their pids and
# progress through files on the host.
pytestmark = pytest.mark.unconfined

MakeStack = Callable[..., LocalStack]
T = TypeVar("T")

BRANCH = "track-1-hello-endpoint"
ALICE, BOB = "U0ALICE", "U0BOB"
REPORT_HEADER = "*Report — Track 1: hello-endpoint*"
LEASE_TTL_S, HEARTBEAT_S, REAPER_S, GRACE_S = 3.0, 0.5, 1.0, 2.0

# The agent: the first time, it records its pid and its child's, and works "for a minute" (a sleeping
# child in its process group that ignores SIGTERM, so only SIGKILL stops the whole group). Any later
# time (a retry, a new run), it makes its change at once.
AGENT = """\
import os, pathlib, subprocess, sys, time

state = pathlib.Path({state!r})
if not state.exists():
    child = subprocess.Popen([sys.executable, "-c",
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(120)"])
    state.write_text(f"{{os.getpid()}} {{child.pid}}")
    print("working on it", flush=True)
    time.sleep({sleep})
pathlib.Path("app").mkdir(exist_ok=True)
pathlib.Path("app/hello.txt").write_text("hello\\n")
print("added app/hello.txt")
"""


@pytest.fixture
def fast(monkeypatch: pytest.MonkeyPatch) -> None:
    """Short leases and a busy reaper: the settings every process of the stack reads."""
    for name, value in {
        "TRACKBOT_LEASE_TTL": LEASE_TTL_S,
        "TRACKBOT_HEARTBEAT_INTERVAL": HEARTBEAT_S,
        "TRACKBOT_REAPER_INTERVAL": REAPER_S,
        "TRACKBOT_CANCEL_GRACE": GRACE_S,
        "TRACKBOT_GITHUB_RETRY_BACKOFF": 0.2,
    }.items():
        monkeypatch.setenv(name, str(value))


# -- helpers ------------------------------------------------------------------------------------


def no_worker(stack: LocalStack) -> None:
    """Stop the stack's only worker. Its mark that it answers Slack work would expire LISTENING_TTL_S
    later (until then the web app queues commands for the workers): it is dropped now, so the web
    app answers them itself."""
    assert stack.worker is not None
    stack.worker.send_signal(signal.SIGTERM)
    stack.worker.wait(timeout=30)
    services(stack).redis.delete(LISTENING_KEY)


def wait_for(what: str, probe: Callable[[], T | None], timeout: float = 60.0, every: float = 0.05) -> T:
    """Poll `probe` until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while True:
        found = probe()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(every)


def sleepy_agent(tmp_path: Path, sleep: int = 60) -> tuple[str, Path]:
    """The AGENT's command, and the file where its first run writes `agent_pid child_pid`."""
    state = tmp_path / "agent-state"
    return agent_script(tmp_path, AGENT.format(state=str(state), sleep=sleep)), state


def quick_agent(tmp_path: Path) -> str:
    """An agent that makes its change at once."""
    body = """\
        import pathlib
        pathlib.Path("app").mkdir(exist_ok=True)
        pathlib.Path("app/hello.txt").write_text("hello\\n")
        print("added app/hello.txt")
    """
    return agent_script(tmp_path, textwrap.dedent(body), name="quick_agent.py")


def agent_pids(state: Path) -> list[int]:
    return [int(p) for p in state.read_text().split()] if state.exists() and state.read_text().strip() else []


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def latest(stack: LocalStack) -> Run:
    svc = services(stack)
    run = svc.store.latest(svc.settings.repositories[0])
    assert run is not None
    return run


def run_by_id(stack: LocalStack, run_id: str) -> Run:
    run = services(stack).store.get(run_id)
    assert run is not None
    return run


def running_agent(stack: LocalStack, state: Path) -> Run:
    """The run, once its agent is running and recorded on it."""

    def probe() -> Run | None:
        run = latest(stack)
        return run if run.state is RunState.RUNNING and run.agent_pgid and len(agent_pids(state)) == 2 else None

    return wait_for("the agent to run", probe)


def ended(stack: LocalStack, run_id: str, timeout: float = 120.0) -> Run:
    """The run once it has ended and released the repository."""

    def probe() -> Run | None:
        run = run_by_id(stack, run_id)
        repo = services(stack).settings.repositories[0]
        return run if not run.state.active and services(stack).store.lock_holder(repo) is None else None

    return wait_for(f"run {run_id} to end", probe, timeout)


def in_thread(stack: LocalStack, run: Run) -> list[SlackMessage]:
    """Replies in the run's thread (the thread of its parent message), oldest first."""
    thread_ts = run.thread_ts or run_by_id(stack, run.id).thread_ts
    return [m for m in messages(stack) if m.kind == "message" and m.thread_ts == thread_ts and m.ts != thread_ts]


def reports(stack: LocalStack) -> list[SlackMessage]:
    return [m for m in messages(stack) if m.kind == "message" and m.text.startswith(REPORT_HEADER)]


def gone(pids: list[int]) -> bool:
    return not any(alive(pid) for pid in pids)


def queue_run(stack: LocalStack) -> Run:
    """`/track run`, answered "Queued"; the run it queued."""
    before = len(answers(stack))
    stack.handle("/track run")
    reply = wait_for("the answer", lambda: answers(stack)[before:])
    assert reply[0].startswith("Queued "), reply
    return latest(stack)


# -- a dead worker -------------------------------------------------------------------------------


def test_a_sigkilled_worker_is_detected_its_run_abandoned_and_its_orphaned_agent_stopped(
    fast: None, make_stack: MakeStack, workers: Callable[[LocalStack], subprocess.Popen[bytes]], tmp_path: Path
) -> None:
    command, state = sleepy_agent(tmp_path)
    stack = make_stack(agent=command)
    assert stack.worker is not None
    queue_run(stack)
    run = running_agent(stack, state)
    pids = agent_pids(state)
    assert run.worker_host and run.worker_pid and run.worker_pid != stack.worker.pid
    assert os.getpgid(pids[0]) == run.agent_pgid == pids[0]  # the agent leads its own group
    assert os.getpgid(pids[1]) == run.agent_pgid  # and its child is in it

    # The worker and its work horse die at once (the host's OOM killer, a crashed container...).
    os.kill(stack.worker.pid, signal.SIGKILL)
    os.kill(run.worker_pid, signal.SIGKILL)
    killed_at = time.monotonic()
    stack.worker.wait()
    assert all(alive(pid) for pid in pids), "the agent outlives its worker: it runs in its own session"

    workers(stack)  # another worker (a restarted one): its reaper notices
    notice = wait_for(
        "the abandoned message",
        lambda: next((m for m in in_thread(stack, run) if m.buttons()), None),
        timeout=60,
    )
    detected_s = time.monotonic() - killed_at
    print(f"dead worker detected after {detected_s:.1f}s (lease {LEASE_TTL_S}s, reaper every {REAPER_S}s)")
    assert detected_s < LEASE_TTL_S + REAPER_S + 25  # plus a worker's start-up, on a busy machine
    assert "abandoned" in notice.text and "during step *agent*" in notice.text
    assert "Nothing reached GitHub." in notice.text
    assert notice.buttons() == [("retry_run", "Retry", run.id)]
    dead = run_by_id(stack, run.id)
    assert dead.state is RunState.ABANDONED and dead.interrupted_step == "agent"
    assert services(stack).store.lock_holder(dead.repo) is None
    wait_for("the orphaned agent and its child to be stopped", lambda: gone(pids), timeout=GRACE_S + 15)
    progress = next(m for m in in_thread(stack, run) if m.text.startswith("*Track 1: hello-endpoint*"))
    assert "abandoned" in progress.text.splitlines()[0]

    # A git command killed mid-way leaves its lock in the clone; the next run's preflight copes.
    clone = clone_dir(services(stack).settings.work_dir, run.repo)
    (clone / "git" / "index.lock").write_text("")
    # The repository is free: a new /track run is accepted and runs on the new worker.
    fresh = queue_run(stack)
    assert fresh.id != run.id
    done = ended(stack, fresh.id)
    assert done.state is RunState.PR_OPEN, (done.state, done.error)
    assert BRANCH in branches(stack) and len(pulls(stack)) == 1
    assert run_by_id(stack, run.id).state is RunState.ABANDONED  # never re-run by itself


def test_a_killed_work_horse_is_reaped_by_its_surviving_worker_and_retry_runs_the_track_again(
    fast: None, make_stack: MakeStack, tmp_path: Path
) -> None:
    command, state = sleepy_agent(tmp_path)
    stack = make_stack(agent=command)
    queue_run(stack)
    run = running_agent(stack, state)
    pids = agent_pids(state)
    assert run.worker_pid is not None
    os.kill(run.worker_pid, signal.SIGKILL)  # only the horse: the worker's main process lives on

    notice = wait_for(
        "the abandoned message", lambda: next((m for m in in_thread(stack, run) if m.buttons()), None), timeout=60
    )
    assert "during step *agent*" in notice.text
    wait_for("the orphaned agent to be stopped", lambda: gone(pids), timeout=GRACE_S + 15)
    assert stack.worker is not None and stack.worker.poll() is None

    svc = services(stack)
    with pytest.raises(NotRetryable):
        retry_run(svc, queue_blocker(stack).id, ALICE)
    retried = retry_run(svc, run.id, BOB)
    assert retried.retry_of == run.id and retried.thread_ts == run_by_id(stack, run.id).thread_ts
    assert (retried.track, retried.branch, retried.requested_by) == (run.track, run.branch, BOB)
    with pytest.raises(RepositoryBusy):
        retry_run(svc, run.id, ALICE)
    done = ended(stack, retried.id)
    assert done.state is RunState.PR_OPEN, (done.state, done.error)
    thread = in_thread(stack, run)
    assert any(m.text.startswith(":repeat: <@U0BOB> retries Track 1") for m in thread)
    assert [m.text.startswith(REPORT_HEADER) for m in thread].count(True) == 1


def test_a_job_that_loses_its_lease_stops_and_leaves_the_run_to_the_reaper(
    fast: None, make_stack: MakeStack, tmp_path: Path
) -> None:
    command, state = sleepy_agent(tmp_path)
    stack = make_stack(agent=command)
    queue_run(stack)
    run = running_agent(stack, state)
    pids = agent_pids(state)
    svc = services(stack)
    svc.redis.delete(f"trackbot:lease:{run.id}")  # as if its heartbeats had not reached Redis in time

    wait_for("the job to stop its agent", lambda: gone(pids), timeout=GRACE_S + 15)
    notice = wait_for(
        "the abandoned message", lambda: next((m for m in in_thread(stack, run) if m.buttons()), None), timeout=30
    )
    assert "during step *agent*" in notice.text
    time.sleep(2)  # the job has ended by now: it did not write over the reaper's verdict
    dead = run_by_id(stack, run.id)
    assert dead.state is RunState.ABANDONED and svc.store.lock_holder(dead.repo) is None
    assert branches(stack) == ["main"]
    assert stack.worker is not None and stack.worker.poll() is None
    fresh = queue_run(stack)
    assert ended(stack, fresh.id).state is RunState.PR_OPEN


def queue_blocker(stack: LocalStack) -> Run:
    """A run that is not retryable (it holds a PR): a stored PR_OPEN run."""
    svc = services(stack)
    run = Run(
        repo=svc.settings.repositories[0],
        track=1,
        slug="hello-endpoint",
        doc="docs/x.md",
        branch=BRANCH,
        requested_by=ALICE,
        channel="C0TRACKS",
        state=RunState.PR_OPEN,
    )
    svc.store.save(run)
    return run


def test_killing_only_the_main_worker_lets_its_running_job_finish_the_run(
    fast: None, make_stack: MakeStack, tmp_path: Path
) -> None:
    command, state = sleepy_agent(tmp_path, sleep=4)
    stack = make_stack(agent=command)
    queue_run(stack)
    run = running_agent(stack, state)
    assert stack.worker is not None
    os.kill(stack.worker.pid, signal.SIGKILL)
    stack.worker.wait()
    # The work horse is a process of its own: it keeps the lease alive and finishes the run.
    done = ended(stack, run.id)
    assert done.state is RunState.PR_OPEN, (done.state, done.error)
    assert len(reports(stack)) == 1 and len(pulls(stack)) == 1


# -- cancel ----------------------------------------------------------------------------------------


def test_cancelling_a_running_run_stops_the_agents_whole_group_and_pushes_nothing(
    fast: None, make_stack: MakeStack, tmp_path: Path
) -> None:
    command, state = sleepy_agent(tmp_path)
    stack = make_stack(agent=command)
    queue_run(stack)
    run = running_agent(stack, state)
    pids = agent_pids(state)

    asked_at = time.monotonic()
    outcome = cancel_run(services(stack), run.id, BOB)
    assert outcome.status is CancelStatus.STOPPING and "Stopping Track 1" in outcome.message
    done = ended(stack, run.id, timeout=30)
    took_s = time.monotonic() - asked_at
    print(f"cancel took {took_s:.1f}s (grace {GRACE_S}s)")
    assert took_s < GRACE_S + 10
    assert done.state is RunState.CANCELLED and done.cancelled_by == BOB and done.interrupted_step == "agent"
    assert gone(pids), "the agent and its TERM-ignoring child are killed"
    assert branches(stack) == ["main"] and pulls(stack) == []
    thread = in_thread(stack, run)
    [said] = [m.text for m in thread if "cancelled by" in m.text]
    assert "was cancelled by <@U0BOB> at step *agent*" in said and "Nothing reached GitHub." in said
    assert not reports(stack)
    assert cancel_run(services(stack), run.id, ALICE).status is CancelStatus.NOT_ACTIVE
    # The repository is free again.
    assert queue_run(stack).id != run.id


def test_cancelling_a_queued_run_removes_its_job_and_frees_the_repository(
    fast: None, make_stack: MakeStack, workers: Callable[[LocalStack], subprocess.Popen[bytes]], tmp_path: Path
) -> None:
    stack = make_stack(agent=quick_agent(tmp_path))
    no_worker(stack)  # runs stay queued
    svc = services(stack)
    run = queue_run(stack)
    assert svc.queue.job_ids == [run.id]

    outcome = cancel_run(svc, run.id, BOB)
    assert outcome.status is CancelStatus.CANCELLED
    cancelled = run_by_id(stack, run.id)
    assert cancelled.state is RunState.CANCELLED and cancelled.cancelled_by == BOB
    assert svc.queue.job_ids == []
    with pytest.raises(NoSuchJobError):
        fetch_job(run.id, svc.redis)
    assert svc.store.lock_holder(run.repo) is None
    [said] = [m.text for m in in_thread(stack, run)]
    assert "was cancelled by <@U0BOB> before it started" in said

    # A run whose job a worker has just taken (its lease is held) is not cancelled here: the request
    # stays for that job, which stops the run itself.
    other = queue_run(stack)
    assert svc.store.take_lease(other.id, "a-worker", 30)
    assert not cancel_queued(svc, other, ALICE)
    assert run_by_id(stack, other.id).state is RunState.QUEUED
    assert svc.store.cancel_requested(other.id) == ALICE
    svc.store.drop_lease(other.id, "a-worker")
    workers(stack)
    done = ended(stack, other.id)
    assert done.state is RunState.CANCELLED and done.cancelled_by == ALICE
    assert branches(stack) == ["main"]


# -- the reaper on its own ------------------------------------------------------------------------


def test_the_reaper_abandons_a_queued_run_whose_job_vanished_but_not_a_fresh_one(
    fast: None, make_stack: MakeStack, tmp_path: Path
) -> None:
    stack = make_stack(agent=quick_agent(tmp_path))
    no_worker(stack)
    svc = services(stack)
    run = queue_run(stack)
    fetch_job(run.id, svc.redis).delete()  # its job is lost (a flushed queue, say)
    assert reap(svc) == []  # queued a moment ago: its job may still be on the way
    [reaped] = reap(svc, queued_grace_s=0)
    assert reaped.id == run.id and reaped.state is RunState.ABANDONED
    assert "queued job is gone" in (reaped.error or "")
    assert svc.store.lock_holder(run.repo) is None
    notice = wait_for("the notice", lambda: [m for m in in_thread(stack, run) if m.buttons()])
    assert "before its first step" in notice[0].text and "Nothing reached GitHub." in notice[0].text
    assert reap(svc, queued_grace_s=0) == []  # once


# -- Redis restarts -------------------------------------------------------------------------------


def own_redis_stack(make_stack: MakeStack, monkeypatch: pytest.MonkeyPatch, agent: str) -> LocalStack:
    """A stack on an embedded Redis of its own (under its work dir), which the test may restart."""
    monkeypatch.delenv("REDIS_URL")
    stack = make_stack(agent=agent)
    assert services(stack).embedded_redis is not None
    return stack


def restart_redis(stack: LocalStack) -> None:
    embedded = services(stack).embedded_redis
    assert embedded is not None and embedded.url is not None
    url = embedded.url
    embedded.stop()
    time.sleep(1.0)
    assert embedded.start() == url, "the restarted server listens where it did"


def test_a_queued_run_survives_a_redis_restart_and_a_worker_runs_it(
    fast: None,
    make_stack: MakeStack,
    workers: Callable[[LocalStack], subprocess.Popen[bytes]],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    stack = own_redis_stack(make_stack, monkeypatch, quick_agent(tmp_path))
    no_worker(stack)
    run = queue_run(stack)
    svc = services(stack)
    restart_redis(stack)
    assert svc.queue.job_ids == [run.id]
    assert run_by_id(stack, run.id).state is RunState.QUEUED
    assert svc.store.lock_holder(run.repo) == run.id
    workers(stack)
    done = ended(stack, run.id)
    assert done.state is RunState.PR_OPEN, (done.state, done.error)


def test_a_worker_reconnects_after_redis_restarts_under_it(
    fast: None, make_stack: MakeStack, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    stack = own_redis_stack(make_stack, monkeypatch, quick_agent(tmp_path))
    assert stack.worker is not None
    time.sleep(2)  # the worker is up and blocked waiting for a job
    restart_redis(stack)
    run = queue_run(stack)
    done = ended(stack, run.id, timeout=120)
    assert done.state is RunState.PR_OPEN, (done.state, done.error)
    assert stack.worker.poll() is None, "the same worker process, still running"


def test_a_running_run_survives_redis_going_away_and_the_worker_starts_a_fresh_rq_loop(
    fast: None, make_stack: MakeStack, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("TRACKBOT_LEASE_TTL", "30")  # longer than the outage: the run is not abandoned
    monkeypatch.setenv("TRACKBOT_JOB_MONITORING_INTERVAL", "1")  # RQ's loop meets the outage for sure
    command, state = sleepy_agent(tmp_path, sleep=12)
    stack = own_redis_stack(make_stack, monkeypatch, command)
    assert stack.worker is not None
    run = queue_run(stack)
    running_agent(stack, state)
    embedded = services(stack).embedded_redis
    assert embedded is not None and embedded.url is not None
    url = embedded.url
    embedded.stop()
    time.sleep(4)  # RQ's monitoring of the work horse fails: its work loop gives up
    assert embedded.start() == url
    done = ended(stack, run.id, timeout=120)
    assert done.state is RunState.PR_OPEN, (done.state, done.error)
    assert len(wait_for("the report", lambda: reports(stack))) == 1
    assert stack.worker.poll() is None, "the worker process did not exit"
    log = (stack.work_dir / "worker.log").read_text()
    assert "the RQ worker stopped" in log and "starting a new one" in log
    # The fresh RQ loop takes new runs (this one updates the track's PR).
    services(stack).store.patch(run.id, state=RunState.FAILED)
    again = queue_run(stack)
    assert ended(stack, again.id).state is RunState.PR_OPEN


# -- Slack and GitHub failing while the run reports -------------------------------------------------


def test_slack_failing_while_the_run_reports_delays_the_report_never_loses_or_repeats_it(
    fast: None, make_stack: MakeStack, tmp_path: Path
) -> None:
    command, state = sleepy_agent(tmp_path, sleep=2)
    stack = make_stack(agent=command)
    assert stack.slack is not None
    stack.slack.fail_next("chat.postMessage", count=1, status=500, error="internal_error")  # the parent
    run = queue_run(stack)
    running_agent(stack, state)
    stack.slack.fail_next("chat.update", count=2, status=429, retry_after=1)
    stack.slack.fail_next("chat.postMessage", count=3, status=500, error="internal_error")
    done = ended(stack, run.id)
    assert done.state is RunState.PR_OPEN, (done.state, done.error)
    assert len(pulls(stack)) == 1

    [report] = wait_for("the report", lambda: reports(stack), timeout=60)
    parents = [m for m in messages(stack) if m.kind == "message" and m.thread_ts is None]
    assert len(parents) == 1, "the worker posted the parent the command could not"
    assert report.thread_ts == parents[0].ts
    progress = [m for m in in_thread(stack, run) if m.text.startswith("*Track 1: hello-endpoint*")]
    assert len(progress) == 1
    wait_for("the final progress", lambda: "PR open" in in_thread(stack, run)[0].text.splitlines()[0], timeout=30)
    wait_for("an empty outbox", lambda: not Outbox(services(stack).poster, services(stack).store).pending(run.id))
    time.sleep(2)
    assert len(reports(stack)) == 1, "delivered exactly once"


def test_slack_rate_limits_are_retried_after_their_retry_after(make_stack: MakeStack, tmp_path: Path) -> None:
    stack = make_stack(agent=quick_agent(tmp_path))
    assert stack.slack is not None and stack.worker is not None
    stack.worker.send_signal(signal.SIGTERM)  # its background thread delivers outboxes too: not here
    stack.worker.wait(timeout=30)
    poster = services(stack).poster
    stack.slack.fail_next("chat.postMessage", count=1, status=429, retry_after=7)
    with pytest.raises(SlackError) as limited:
        poster.post("C0TRACKS", "hello")
    assert classify(limited.value) == (True, 7.0)
    stack.slack.fail_next("chat.postMessage", count=1, status=200, error="channel_not_found")
    with pytest.raises(SlackError) as refused:
        poster.post("C0NOWHERE", "hello")
    assert classify(refused.value) == (False, None)

    svc = services(stack)
    outbox = Outbox(poster, svc.store)
    run = Run(
        repo=svc.settings.repositories[0],
        track=1,
        slug="s",
        doc="d",
        branch="b",
        requested_by=ALICE,
        channel="C0TRACKS",
        thread_ts="1.000001",
    )
    stack.slack.fail_next("chat.postMessage", count=1, status=429, retry_after=2)
    assert outbox.show(run, "note", "first") is None
    assert outbox.show(run, "note", "second, newest") is None  # waits, replacing the first
    outbox.show(run, "other", "after it")
    assert outbox.pending(run.id) == ["note", "other"]
    assert outbox.deliver_due() == 0  # Slack said: not before 2s
    time.sleep(2.2)
    assert outbox.deliver_due() == 1
    sent = [m.text for m in messages(stack) if m.kind == "message"]
    assert sent == ["second, newest", "after it"]

    # A job SIGKILLed while it was delivering leaves its lock behind: it does not hold anything up.
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    svc.redis.set(f"trackbot:outbox:lock:{run.id}", f"{socket.gethostname()}:{dead.pid}:x", px=30_000)
    assert outbox.show(run, "late", "not held up") is not None


def test_github_failing_to_open_the_pr_is_retried(fast: None, make_stack: MakeStack, tmp_path: Path) -> None:
    stack = make_stack(agent=quick_agent(tmp_path))
    assert stack.github is not None
    stack.github.fail_next(count=2, status=502, method="POST", path_prefix=f"/repos/{stack.github.full_name}/pulls")
    run = queue_run(stack)
    done = ended(stack, run.id)
    assert done.state is RunState.PR_OPEN, (done.state, done.error)
    assert len(pulls(stack)) == 1 and len(reports(stack)) == 1


@pytest.mark.parametrize(("kind", "status"), [("primary", 403), ("secondary", 429)])
def test_a_github_rate_limit_while_opening_the_pr_is_waited_out_and_the_pr_opens(
    fast: None, make_stack: MakeStack, tmp_path: Path, kind: str, status: int
) -> None:
    stack = make_stack(agent=quick_agent(tmp_path))
    assert stack.github is not None
    prefix = f"/repos/{stack.github.full_name}/pulls"
    stack.github.rate_limit_next(kind, count=1, wait_s=1, status=status, method="POST", path_prefix=prefix)
    run = queue_run(stack)
    done = ended(stack, run.id)
    assert done.state is RunState.PR_OPEN, (done.state, done.error)
    posts = [r.status for r in stack.github.requests if r.method == "POST" and r.path.startswith(prefix)]
    assert posts == [status, 201]
    assert len(pulls(stack)) == 1 and len(reports(stack)) == 1


def test_a_failing_gate_with_no_pr_opened_never_says_this_pr_is_a_draft(
    fast: None, make_stack: MakeStack, tmp_path: Path
) -> None:
    body = """\
        import pathlib
        pathlib.Path("scripts").mkdir(exist_ok=True)
        pathlib.Path("scripts/x.sh").write_text("echo red\\nexit 1\\n")
    """
    stack = make_stack(agent=agent_script(tmp_path, textwrap.dedent(body), name="red_agent.py"))
    assert stack.github is not None
    attempts = services(stack).settings.github_attempts
    stack.github.fail_next(
        count=attempts, status=503, method="POST", path_prefix=f"/repos/{stack.github.full_name}/pulls"
    )
    run = queue_run(stack)
    assert ended(stack, run.id).state is RunState.FAILED
    [report] = wait_for("the report", lambda: reports(stack))
    assert "Gates failed" in report.text and "draft" not in report.text.lower()


def test_github_down_after_the_push_fails_the_run_saying_the_branch_is_pushed_and_retry_opens_the_pr(
    fast: None, make_stack: MakeStack, tmp_path: Path
) -> None:
    stack = make_stack(agent=quick_agent(tmp_path))
    assert stack.github is not None
    attempts = services(stack).settings.github_attempts
    stack.github.fail_next(
        count=attempts, status=503, method="POST", path_prefix=f"/repos/{stack.github.full_name}/pulls"
    )
    run = queue_run(stack)
    failed = ended(stack, run.id)
    assert failed.state is RunState.FAILED
    assert BRANCH in branches(stack) and pulls(stack) == []
    [report] = wait_for("the report", lambda: reports(stack))
    assert f"The branch `{BRANCH}` IS pushed; `/track retry` opens the PR" in report.text
    assert "Nothing was pushed" not in report.text
    pushed = git(stack, "rev-parse", BRANCH).strip()

    retried = retry_run(services(stack), run.id, ALICE)
    done = ended(stack, retried.id)
    assert done.state is RunState.PR_OPEN, (done.state, done.error)
    [pr] = stack.github.pulls()
    assert pr.head_ref == BRANCH and pr.head_sha == git(stack, "rev-parse", BRANCH).strip()
    assert git(stack, "rev-list", "--count", f"main..{BRANCH}").strip() == "1"
    assert pushed  # the retry pushed over its own earlier push (--force-with-lease)
