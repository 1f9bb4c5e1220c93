"""Retrying a run, for `/track retry` and the Retry button (`retry_run`) to call.

A retry is a NEW run of the same track in the same thread (`retry_of` names the old one), queued
exactly like `/track run` queues one. Nothing is ever retried automatically. The new run starts from
a fresh branch like any run; when the old one had pushed the branch, the push is made with
--force-with-lease against it and the branch's open PR, if any, is updated instead of duplicated.
"""

from __future__ import annotations

from bot.outbox import Outbox
from bot.queueing import QueueingError, enqueue_run
from bot.render import STATE_WORDS, mention, parent_text, track_title
from bot.runs import Run, RunState
from bot.services import Services

RETRYABLE = (RunState.ABANDONED, RunState.FAILED, RunState.CANCELLED, RunState.STOPPED)


class RetryError(Exception):
    """Why a run cannot be retried; the message is meant for the user."""


class RunNotFound(RetryError):
    """There is no such run."""


class NotAllowed(RetryError):
    """The user may not start runs."""


class NotRetryable(RetryError):
    """The run is still active, or it produced a PR: there is nothing to retry."""


class RepositoryBusy(RetryError):
    """Another run holds the repository; `holder` is that run (None if it vanished meanwhile)."""

    def __init__(self, message: str, holder: Run | None) -> None:
        super().__init__(message)
        self.holder = holder


class RetryNotQueued(RetryError):
    """The new run could not be queued (it is marked FAILED and the repository released)."""


def retry_run(services: Services, run_id: str, user: str) -> Run:
    """Queue a new run copying track, slug, doc, branch, channel, thread (and dry-run-ness) of run `run_id`.

    Raises RunNotFound, NotAllowed, NotRetryable, RepositoryBusy or RetryNotQueued (all RetryError).
    Returns the new, queued run; its thread is told who retried it.
    """
    store = services.store
    old = store.get(run_id)
    if old is None:
        raise RunNotFound(f"There is no run `{run_id}` to retry.")
    if not services.roles.may_run(user):
        raise NotAllowed(f"{mention(user)} may not start runs.")
    if old.state not in RETRYABLE:
        raise NotRetryable(
            f"{track_title(old)} is {STATE_WORDS[old.state]}: "
            + ("it is still going." if old.state.active else "there is nothing to retry.")
        )
    run = old.follow_up(user, retry_of=old.id, dry_run=old.dry_run)
    holder = store.claim(run)
    if holder is not None:
        busy = store.get(holder)
        what = f"{track_title(busy)} is {STATE_WORDS[busy.state]}" if busy else "Another run holds it"
        raise RepositoryBusy(f"{run.repo} is busy: {what}. One run per repository at a time.", busy)
    outbox = Outbox(services.poster, store)
    if run.thread_ts is None:
        run.thread_ts = outbox.show(run, "parent", parent_text(run), in_thread=False)
    else:
        outbox.show(run, "retry", f":repeat: {mention(user)} retries {track_title(run)} (run `{old.id}`).")
    store.save(run)
    try:
        enqueue_run(services, run)
    except QueueingError as error:
        raise RetryNotQueued(f"I could not queue the retry ({services.redact(str(error))}). Try again.") from error
    return run
