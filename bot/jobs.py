"""RQ entry points: build the adapters, run the pipeline, hand the result to the store and the thread.

While a run is running its job holds a lease in Redis (`trackbot:lease:<run id>`), renewed by a
heartbeat thread together with the repository lock's TTL. A job that dies stops renewing both: the
reaper (bot/reaper.py) then marks the run abandoned and frees the repository. The heartbeat also
watches for a cancel request (bot/cancel.py) and stops the agent's whole process group.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import threading
import time
from typing import Any

from redis import RedisError
from rq import get_current_job

from bot.adapters.git import TrackClone, clone_dir
from bot.adapters.github import GitHubError, GitHubRepo, PullRef, StaleFile
from bot.adapters.process import LiveGroup, kill_process_group, live_groups, watching_processes
from bot.config import load_settings
from bot.logs import log_context
from bot.outbox import Outbox
from bot.pipeline import Halt, RunContext, run_steps
from bot.progress import RunThread
from bot.render import report_text
from bot.runs import Run, RunState
from bot.services import Services
from bot.steps import RUN_STEPS

log = logging.getLogger(__name__)

CANCEL_POLL_S = 0.5  # how often the heartbeat thread looks for a cancel request
OWN_COMMANDS = ("git",)  # trackbot's own commands: a cancel lets them finish (they keep the clone sane)


def run_track(run_id: str) -> str:
    """The worker's job: run one queued track. Returns the run's final state."""
    job = get_current_job()
    services = Services.from_settings(load_settings(), redis=job.connection if job else None)
    queued = services.store.get(run_id)  # its repository and track label every log line of the run
    with log_context(run_id=run_id, repo=queued.repo if queued else None, track=queued.track if queued else None):
        return execute_run(services, run_id).state.value


def execute_run(services: Services, run_id: str) -> Run:
    """Run the steps for `run_id`, keep its thread up to date, release the repository when done."""
    store = services.store
    run = store.get(run_id)
    if run is None:
        raise LookupError(f"run {run_id} is not in the store")
    if run.state is not RunState.QUEUED:
        log.warning("run %s is %s, not queued; not running it again", run_id, run.state)
        return run
    outbox = Outbox(services.poster, store)
    session = RunSession(services, outbox)
    started = session.begin(run_id)
    if started is None:
        return store.get(run_id) or run
    run = started
    try:
        with watching_processes(session.on_process):
            _run(services, session, outbox, run)
    finally:
        # Released last, so "no run active" means the report is in the thread (or the outbox) too.
        session.end()
    log.info("run %s of %s track %s ended %s", run.id, run.repo, run.track, run.state.value)
    return run


def _run(services: Services, session: RunSession, outbox: Outbox, run: Run) -> None:
    settings = services.settings
    thread = RunThread(outbox, session.save)
    thread.ensure_parent(run)
    clone = TrackClone(
        clone_dir(settings.work_dir, run.repo),
        settings.clone_url(run.repo),
        settings.base_branch,
        services.git_token,  # asked before each git command: App installation tokens expire
    )
    ctx = RunContext(
        run=run,
        settings=settings,
        rules=services.rules,
        clone=clone,
        github=PatientGitHub.around(
            services.github(run.repo), settings.github_attempts, settings.github_retry_backoff_s
        ),
        redact=services.redact,
        holds_lock=session.may_push,
        note=lambda line: thread.note(run, line),
        store=services.store,
    )
    run_steps(ctx, RUN_STEPS, thread.update, session.should_halt)
    if session.lost is not None:
        # The reaper has (or soon will have) the run: it tells the thread and frees the repository.
        log.warning("run %s lost its lease (%s); leaving it to the reaper", run.id, session.lost)
        return
    services.metrics.run_finished(run)
    session.save(run)
    thread.report(run)
    clone.clean()  # after the report: the user need not wait for it (the lock is still held)


class RunSession:
    """A job's hold on its run: the lease, the lock's TTL, the heartbeat thread, cancel requests."""

    def __init__(self, services: Services, outbox: Outbox) -> None:
        self.services = services
        self.store = services.store
        self.outbox = outbox
        self.settings = services.settings
        self.host = socket.gethostname()
        self.token = f"{self.host}:{os.getpid()}:{secrets.token_hex(4)}"
        self.run: Run | None = None
        self.cancelled_by: str | None = None
        self.lost: str | None = None  # why this job no longer holds the run
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None
        self._stopping: set[int] = set()

    # -- start and end -------------------------------------------------------------------------

    def begin(self, run_id: str) -> Run | None:
        """Take the run's lease and start the heartbeat; the run as it is now, or None when this job
        must not run it (another job has it, or it was cancelled while this one was being dequeued)."""
        store, ttl = self.store, self.settings.lease_ttl_s
        if not store.take_lease(run_id, self.token, ttl):
            log.warning("run %s is leased by %s already; not running it", run_id, store.lease_holder(run_id))
            return None
        run = store.get(run_id)
        if run is None or run.state is not RunState.QUEUED:
            store.drop_lease(run_id, self.token)
            return None
        self.run = run
        run.worker_host, run.worker_pid = self.host, os.getpid()
        # A queued run's lock has no TTL; from now on it lives as long as the heartbeats do.
        if not store.hold_lock(run.repo, run.id, ttl):
            holder = store.try_lock(run.repo, run.id)
            if holder is not None:
                # Its lock vanished while it was queued (a Redis restart without its data) and another
                # run took the repository: running both at once is what the lock exists to prevent.
                run.state, run.finished_at = RunState.FAILED, time.time()
                run.error = f"another run ({holder}) took the repository while this one was queued; run it again"
                store.save_leased(run, self.token)
                store.drop_lease(run.id, self.token)
                self.outbox.show(run, "report", report_text(run))
                return None
            store.hold_lock(run.repo, run.id, ttl)
        self._beat = threading.Thread(target=self._heartbeat, name=f"heartbeat-{run_id}", daemon=True)
        self._beat.start()
        return run

    def end(self) -> None:
        """Stop the heartbeat; drop the lease, the lock and any cancel request (unless the run was lost)."""
        self._stop.set()
        if self._beat is not None:
            self._beat.join(timeout=5)
        for group in live_groups():
            # Only when the job is leaving through an exception (RQ's job timeout, say) mid-command.
            if group.argv[:1] != OWN_COMMANDS[:1]:
                kill_process_group(group.pgid, self.settings.cancel_grace_s)
        run = self.run
        if run is None or self.lost is not None:
            return
        try:
            self.store.drop_lease(run.id, self.token)
            self.store.release_lock(run.repo, run.id)
            self.store.clear_cancel(run.id)
        except RedisError as error:
            # The lease and the lock expire by themselves; the reaper tidies up after them.
            log.warning("releasing run %s: %s", run.id, error)

    # -- what the pipeline asks ----------------------------------------------------------------

    def save(self, run: Run) -> bool:
        """Persist the run while this job holds its lease (riding out a short Redis outage).

        Returns False, and marks the run lost, when the lease is gone.
        """
        if self.lost is not None:
            return False
        deadline = time.monotonic() + self.settings.lease_ttl_s
        delay = 0.2
        while True:
            try:
                known = self.outbox.delivered(run.id)
                run.thread_ts = run.thread_ts or known.get("parent")
                run.progress_ts = run.progress_ts or known.get("progress")
                if self.store.save_leased(run, self.token):
                    return True
                self._lose("its lease expired")
                return False
            except RedisError as error:
                if time.monotonic() >= deadline:
                    raise
                log.warning("saving run %s: %s; trying again in %.1fs", run.id, error, delay)
                time.sleep(delay)
                delay = min(delay * 2, 5.0)

    def should_halt(self) -> Halt | None:
        """Asked before each step: the run was cancelled, or this job lost it."""
        if self.lost is not None:
            return Halt(RunState.ABANDONED, f"the job lost the run: {self.lost}")
        if self.cancelled_by is None and self.run is not None:
            try:
                self.cancelled_by = self.store.cancel_requested(self.run.id)
            except RedisError as error:
                log.warning("checking for a cancel of %s: %s", self.run.id, error)
        if self.cancelled_by is not None:
            return Halt(RunState.CANCELLED, "cancelled", by=self.cancelled_by)
        return None

    def may_push(self) -> bool:
        """Right before `git push`: not cancelled, the lease is this job's, and so is the (unexpired) lock."""
        run = self.run
        if run is None or self.should_halt() is not None:
            return False
        ttl = self.settings.lease_ttl_s
        if not self.store.renew_lease(run.id, self.token, ttl):
            self._lose("its lease expired before the push")
            return False
        return self.store.hold_lock(run.repo, run.id, ttl)

    def on_process(self, group: LiveGroup, started: bool) -> None:
        """Record the process group of the command the run is running (the agent's too) for the reaper."""
        run = self.run
        if run is None or group.argv[:1] == OWN_COMMANDS[:1]:
            return
        if started:
            run.process_group = group.pgid
            if run.current_step == "agent":
                run.agent_pgid = group.pgid
            self.save(run)
            if self.cancelled_by is not None or self.lost is not None:
                self._stop_commands()
        elif run.process_group == group.pgid:
            run.process_group = None

    # -- the heartbeat -------------------------------------------------------------------------

    def _heartbeat(self) -> None:
        run = self.run
        assert run is not None
        interval, ttl = self.settings.heartbeat_interval_s, self.settings.lease_ttl_s
        next_beat = time.monotonic() + interval
        while not self._stop.wait(min(CANCEL_POLL_S, interval)):
            try:
                if time.monotonic() >= next_beat:
                    if not self.store.renew_lease(run.id, self.token, ttl):
                        self._lose("its lease expired (no heartbeat reached Redis in time)")
                        return
                    self.store.hold_lock(run.repo, run.id, ttl)
                    next_beat = time.monotonic() + interval
                if self.cancelled_by is None:
                    self.cancelled_by = self.store.cancel_requested(run.id)
                    if self.cancelled_by is not None:
                        log.info("run %s: cancel requested by %s", run.id, self.cancelled_by)
            except RedisError as error:
                log.warning("heartbeat of run %s: %s", run.id, error)
            if self.cancelled_by is not None:
                self._stop_commands()

    def _lose(self, why: str) -> None:
        if self.lost is None:
            self.lost = why
            log.error("run %s: %s; stopping it", self.run.id if self.run else "?", why)
        self._stop_commands()

    def _stop_commands(self) -> None:
        """Stop the agent (and any gate) of this run: TERM its process group, KILL it after the grace period."""
        for group in live_groups():
            if group.argv[:1] == OWN_COMMANDS[:1] or group.pgid in self._stopping:
                continue
            self._stopping.add(group.pgid)
            log.info("stopping process group %d (%s)", group.pgid, " ".join(group.argv)[:200])
            threading.Thread(
                target=kill_process_group,
                args=(group.pgid, self.settings.cancel_grace_s),
                name=f"stop-{group.pgid}",
                daemon=True,
            ).start()


class PullNotOpened(GitHubError):
    """GitHub kept failing to open the PR after the branch was pushed."""

    def __init__(self, branch: str, tries: int, last: GitHubError) -> None:
        self.status = last.status
        Exception.__init__(
            self,
            f"GitHub did not open the PR after {tries} tries (last answer: {last}). "
            f"The branch `{branch}` IS pushed; `/track retry` opens the PR",
        )


def transient(error: GitHubError) -> bool:
    """A 5xx or no answer at all: worth another try."""
    return not isinstance(error, StaleFile) and (error.status is None or error.status >= 500)


class PatientGitHub(GitHubRepo):
    """The run's GitHub: a 5xx or a connection error is tried again, with backoff, a few times.

    Opening a PR is never doubled: before each new try it looks for the PR GitHub may have opened
    although it answered with an error.
    """

    attempts: int = 1
    backoff_s: float = 0.0
    _opening: bool = False

    @classmethod
    def around(cls, inner: GitHubRepo, attempts: int, backoff_s: float) -> PatientGitHub:
        """The same client as `inner` (its credentials, its base URL), patient."""
        patient = cls.__new__(cls)
        patient.__dict__.update(vars(inner))
        patient.attempts, patient.backoff_s = max(1, attempts), backoff_s
        return patient

    def _pause(self, attempt: int) -> None:
        time.sleep(self.backoff_s * 2 ** (attempt - 1))

    def _call(self, doing: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        if self._opening:
            return super()._call(doing, fn, *args, **kwargs)
        for attempt in range(1, self.attempts + 1):
            try:
                return super()._call(doing, fn, *args, **kwargs)
            except GitHubError as error:
                if not transient(error) or attempt == self.attempts:
                    raise
                log.warning("GitHub failed to %s (%s); try %d of %d", doing, error, attempt + 1, self.attempts)
            self._pause(attempt)

    def open_pull(self, head: str, base: str, title: str, body: str, draft: bool) -> PullRef:
        """Open the PR, trying again on a 5xx or no answer; PullNotOpened when GitHub never does."""
        last: GitHubError | None = None
        for attempt in range(1, self.attempts + 1):
            try:
                self._opening = True
                return super().open_pull(head, base, title, body, draft)
            except GitHubError as error:
                if not transient(error):
                    raise
                last = error
                log.warning("GitHub failed to open a PR from %s (%s); try %d/%d", head, error, attempt, self.attempts)
            finally:
                self._opening = False
            if attempt < self.attempts:
                self._pause(attempt)
            try:
                existing = self.find_open_pull(head, base)
            except GitHubError:
                existing = None
            if existing is not None:
                return self.update_pull(existing.number, title, body, draft)
        assert last is not None
        raise PullNotOpened(head, self.attempts, last)
