"""The reaper: runs whose job died are marked abandoned, their thread is told, their repository freed.

Every `trackbot worker` runs `reap` in a background thread (`Maintenance`) every
TRACKBOT_REAPER_INTERVAL seconds, besides delivering the Slack outbox. It does not rely on RQ:

- a RUNNING run whose lease (kept alive by its job's heartbeat, bot/jobs.py) expired is abandoned;
- a QUEUED run whose RQ job no longer exists (or failed, or ended without starting the run) is too,
  once it is older than a grace period (the job is enqueued just after the run is stored).

Abandoning marks the run ABANDONED (CANCELLED when someone had asked to cancel it), tells its thread
which step it stopped in and what reached GitHub, with a Retry button (`retry_run`), and releases the
repository's lock. A run is never re-run automatically. When the run's job ran on this host and its
agent's process group (or a gate's) is still alive, that group is stopped: TERM, then KILL. The
clone the dead job left is reset by the next run's preflight.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time

from redis import RedisError
from rq.exceptions import NoSuchJobError
from rq.job import JobStatus

from bot.adapters.github import GitHubError
from bot.adapters.process import kill_process_group
from bot.jobqueue import fetch_job
from bot.outbox import Outbox
from bot.progress import abandoned_message, cancelled_text, show_final_progress
from bot.queueing import job_timeout_s
from bot.runs import Run, RunState
from bot.services import Services

log = logging.getLogger(__name__)

QUEUED_GRACE_S = 60.0  # a run is stored, then its lock taken and its thread posted, then its job enqueued
ORPHAN_WINDOW_S = 3600.0  # how long after a run ended the reaper still looks for its processes
DEAD_JOB_STATES = {JobStatus.FAILED, JobStatus.STOPPED, JobStatus.CANCELED, JobStatus.FINISHED}


def reap(services: Services, queued_grace_s: float = QUEUED_GRACE_S) -> list[Run]:
    """One pass: abandon every run whose job is gone; stop orphaned processes of this host's runs.

    Returns the runs it abandoned (or cancelled, when a cancel had been requested).
    """
    store = services.store
    now = time.time()
    ended: list[Run] = []
    for run in store.active_runs(services.settings.repositories):
        if store.lease_holder(run.id) is not None:
            continue  # its job is alive
        if run.state is RunState.RUNNING:
            if run.worker_host is None and now - (run.started_at or run.created_at) < job_timeout_s(services):
                continue  # started by a worker without leases (an older trackbot): only RQ's timeout tells
            why = "its worker stopped answering (no heartbeat)"
        elif now - run.created_at < queued_grace_s:
            continue
        else:
            status = _job_status(services, run.id)
            if status is not None and status not in DEAD_JOB_STATES:
                continue  # still queued, or starting
            why = "its queued job is gone" if status is None else f"its queued job is {status.value}"
        reaped = abandon(services, run.id, why)
        if reaped is not None:
            ended.append(reaped)
    stop_orphans(services)
    return ended


def _job_status(services: Services, run_id: str) -> JobStatus | None:
    try:
        return fetch_job(run_id, services.redis).get_status()
    except NoSuchJobError:
        return None


def abandon(services: Services, run_id: str, why: str) -> Run | None:
    """Mark a run whose job is gone ABANDONED (or CANCELLED if a cancel was asked for), tell its
    thread, free its repository. None when it is not ours to reap (its job is alive, it changed)."""
    store = services.store
    found = store.get_with_raw(run_id)
    if found is None:
        return None
    run, raw = found
    if not run.state.active:
        return None
    cancelled_by = store.cancel_requested(run.id)
    run.interrupted_step = run.current_step if run.state is RunState.RUNNING else None
    run.current_step = None
    run.finished_at = time.time()
    if cancelled_by is not None:
        run.state, run.cancelled_by = RunState.CANCELLED, cancelled_by
    else:
        run.state, run.error = RunState.ABANDONED, f"abandoned: {why}"
    if not store.replace_unleased(run, raw):
        return None  # its job came back, or the run moved on: look again next time
    log.warning("run %s of %s abandoned in step %s: %s", run.id, run.repo, run.interrupted_step, why)
    store.release_lock(run.repo, run.id)
    store.clear_cancel(run.id)
    _tell_thread(services, run)
    try:
        services.metrics.run_finished(run)
    except Exception as error:  # metrics never stop the reaper
        log.warning("metrics of run %s: %s", run.id, error)
    return run


def _tell_thread(services: Services, run: Run) -> None:
    outbox = Outbox(services.poster, services.store)
    show_final_progress(outbox, run)
    if run.state is RunState.CANCELLED:
        outbox.show(run, "cancelled", cancelled_text(run))
        return
    text, blocks = abandoned_message(run, _open_pr(services, run))
    outbox.show(run, "abandoned", text, blocks)


def _open_pr(services: Services, run: Run) -> str | None:
    """When the run died while publishing, whether GitHub has a PR for its branch."""
    if run.pr_url or run.interrupted_step not in ("push", "pull_request"):
        return None
    try:
        pr = services.github(run.repo).find_open_pull(run.branch, services.settings.base_branch)
    except GitHubError as error:
        log.warning("looking for the PR of %s: %s", run.id, error)
        return None
    return None if pr is None else f"PR #{pr.number} is open: {pr.url}"


def stop_orphans(services: Services, host: str | None = None) -> list[int]:
    """Stop the process groups (agent, gate) that runs of this host left behind when they were
    abandoned or cancelled. Returns the groups it stopped."""
    host = host or socket.gethostname()
    now, stopped = time.time(), []
    states = (RunState.ABANDONED, RunState.CANCELLED)
    for run in services.store.recent_runs(states):
        if run.worker_host != host or run.finished_at is None or now - run.finished_at > ORPHAN_WINDOW_S:
            continue
        for pgid in {g for g in (run.agent_pgid, run.process_group) if g}:
            if pgid <= 1 or pgid == os.getpgrp():
                continue
            grace = services.settings.cancel_grace_s
            if kill_process_group(pgid, grace, not_before=run.started_at, not_after=run.finished_at):
                log.warning("stopped process group %d left by run %s (%s)", pgid, run.id, run.state.value)
                stopped.append(pgid)
    return stopped


class Maintenance:
    """A worker's background thread: the reaper every TRACKBOT_REAPER_INTERVAL seconds, the Slack
    outbox every second. Uses its own Services (its own Redis connection): never the job's."""

    TICK_S = 1.0
    FIRST_PASS_DELAY_S = 1.0

    def __init__(self, services: Services) -> None:
        self.services = services
        self.outbox = Outbox(services.poster, services.store)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="trackbot-maintenance", daemon=True)
        self._adopted: set[int] = set()

    def adopt(self, pid: int) -> None:
        """Wait (without blocking) for a child the worker left running: a work horse whose RQ loop
        gave up on Redis finishes its run by itself, and must not stay a zombie afterwards."""
        self._adopted.add(pid)

    def start(self) -> Maintenance:
        """Start the thread."""
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the thread (it finishes the pass it is in)."""
        self._stop.set()
        self._thread.join(timeout)

    def once(self) -> None:
        """One reaper pass and one outbox delivery."""
        reap(self.services)
        self.outbox.deliver_due()

    def _loop(self) -> None:
        # The first pass waits a moment: the worker registers with RQ first.
        if self._stop.wait(self.FIRST_PASS_DELAY_S):
            return
        next_reap = 0.0
        while True:
            try:
                if time.monotonic() >= next_reap:
                    next_reap = time.monotonic() + self.services.settings.reaper_interval_s
                    reap(self.services)
                self.outbox.deliver_due()
            except RedisError as error:
                log.warning("maintenance: Redis: %s", error)
            except Exception:
                log.exception("maintenance pass failed")
            self._reap_children()
            if self._stop.wait(self.TICK_S):
                return

    def _reap_children(self) -> None:
        for pid in list(self._adopted):
            try:
                done, _status = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                done = pid
            if done:
                self._adopted.discard(pid)
