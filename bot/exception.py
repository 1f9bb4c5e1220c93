"""A maintainer's guardrail exception: the `approve_exception` button of a STOP's report.

A guardrail STOP whose forbidden paths the track doc ALL explicitly allows keeps its change
(bot.steps.held). Granting the exception queues a new run of the same track, on the same branch and
in the same thread, that applies exactly that change instead of running the agent, lets exactly
those paths through the guardrail, and opens the PR with the exception at the top of its body.

Who may grant is the caller's check (maintainers only); this module checks the run.
"""

from __future__ import annotations

from bot.queueing import QueueingError, enqueue_run
from bot.render import track_title
from bot.runs import Run, RunState
from bot.services import Services
from bot.store import HELD_CHANGE_TTL_S


class ExceptionRefused(Exception):
    """The exception cannot be granted; the message says why, in words for the user."""


def grant_exception(services: Services, run_id: str, user: str) -> Run:
    """Queue the run that applies STOPPED run `run_id`'s held change, granted by `user`. Once only.

    Raises ExceptionRefused when there is nothing to grant: no such run, not a guardrail STOP the
    doc allows, already granted, a newer run of the track exists, the held change expired, or
    another run holds the repository.
    """
    store = services.store
    stopped = store.get(run_id)
    if stopped is None:
        raise ExceptionRefused(f"There is no run `{run_id}`.")
    title = track_title(stopped)
    if (
        stopped.state is not RunState.STOPPED
        or not stopped.exception_paths
        or not stopped.held_base
        or stopped.exception_of is not None  # the run of an exception offers none itself
    ):
        raise ExceptionRefused(
            f"Run `{run_id}` of {title} did not stop on forbidden paths its doc allows: there is no exception to grant."
        )
    if stopped.exception_run is not None:
        raise ExceptionRefused(f"The exception for run `{run_id}` was already granted (run `{stopped.exception_run}`).")
    latest = store.latest(stopped.repo, stopped.track, stopped.plan)
    # A run of this very exception that could not be queued does not count as newer.
    if latest is not None and latest.id != stopped.id and latest.exception_of != stopped.id:
        raise ExceptionRefused(
            f"{title} has a newer run (`{latest.id}`, {latest.state.value}); this exception no longer applies."
        )
    if store.held_change(run_id) is None:
        raise ExceptionRefused(
            f"The change of run `{run_id}` is no longer kept (it expires after "
            f"{HELD_CHANGE_TTL_S // 86400} days); `/track run` again."
        )
    if not store.once("exception", run_id, ttl_s=HELD_CHANGE_TTL_S):
        raise ExceptionRefused(f"The exception for run `{run_id}` was already granted.")
    run = stopped.follow_up(
        user,
        exception_of=stopped.id,
        exception_paths=list(stopped.exception_paths),
        exception_conflicts=list(stopped.exception_conflicts),
        held_base=stopped.held_base,
        exception_granted_by=user,
    )
    holder = store.claim(run)
    if holder is not None:
        store.forget("exception", run_id)
        busy = store.get(holder)
        what = f"Track {busy.track} is {busy.state.value}" if busy is not None else "Another run holds it"
        raise ExceptionRefused(
            f"{what} for {run.repo}: one run per repository at a time. Approve again when it is done."
        )
    stopped.exception_run = run.id
    store.save(stopped)
    try:
        enqueue_run(services, run)
    except QueueingError as error:
        stopped.exception_run = None
        store.save(stopped)
        store.forget("exception", run_id)
        raise ExceptionRefused(
            f"I could not queue the exception's run ({services.redact(str(error))}). Try again."
        ) from error
    return run
