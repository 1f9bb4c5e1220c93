"""Cancelling a run, for `/track cancel` (bot/commands.py) to call.

- A QUEUED run is cancelled at once (`cancel_queued`): its RQ job is removed, the run is marked
  CANCELLED, the repository released, and its thread told.
- A RUNNING run is asked to stop (`RunStore.request_cancel`): its job's heartbeat sees the request
  within a second, stops the agent's whole process group (SIGTERM, then SIGKILL after
  TRACKBOT_CANCEL_GRACE seconds), the pipeline stops before its next step (so nothing is pushed if
  the cancel came before the push), and the job marks the run CANCELLED and tells the thread who
  cancelled it.

`cancel_run` does whichever applies. None of these check who may cancel: the caller does.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from enum import StrEnum

from rq.exceptions import NoSuchJobError

from bot.jobqueue import fetch_job
from bot.outbox import Outbox
from bot.progress import cancelled_text
from bot.render import STATE_WORDS, mention, track_title
from bot.runs import Run, RunState
from bot.services import Services

log = logging.getLogger(__name__)


class CancelStatus(StrEnum):
    """What a cancel did."""

    CANCELLED = "cancelled"  # it was queued: cancelled now
    STOPPING = "stopping"  # it is running: its worker stops it and says so in the thread
    NOT_ACTIVE = "not_active"  # it already ended
    NOT_FOUND = "not_found"  # no such run


@dataclass(frozen=True)
class CancelOutcome:
    """The result of `cancel_run`: what happened, the run as it is now, and a reply for the user."""

    status: CancelStatus
    run: Run | None
    message: str


def cancel_run(services: Services, run_id: str, user: str) -> CancelOutcome:
    """Cancel run `run_id` on behalf of Slack user `user`, whether queued or running."""
    store = services.store
    run = store.get(run_id)
    if run is None:
        return CancelOutcome(CancelStatus.NOT_FOUND, None, f"There is no run `{run_id}`.")
    if run.state is RunState.QUEUED and cancel_queued(services, run, user):
        return CancelOutcome(
            CancelStatus.CANCELLED, run, f"Cancelled {track_title(run)} (it was still queued). Nothing ran."
        )
    run = store.get(run_id) or run
    if run.state.active:
        store.request_cancel(run.id, user)
        by = store.cancel_requested(run.id) or user
        grace = services.settings.cancel_grace_s
        who = "" if by == user else f" ({mention(by)} asked first)"
        return CancelOutcome(
            CancelStatus.STOPPING,
            run,
            f"Stopping {track_title(run)}{who}: the agent is stopped now (killed if it is still there after "
            f"{grace:g}s) and no further step runs. Its thread says when it has stopped.",
        )
    return CancelOutcome(
        CancelStatus.NOT_ACTIVE, run, f"{track_title(run)} is {STATE_WORDS[run.state]}: there is nothing to cancel."
    )


def cancel_active(services: Services, repo: str, user: str) -> CancelOutcome:
    """Cancel whichever run holds `repo` (queued or running); NOT_FOUND when the repository is idle."""
    holder = services.store.lock_holder(repo)
    if holder is None:
        return CancelOutcome(CancelStatus.NOT_FOUND, None, f"No run is queued or running for {repo}.")
    return cancel_run(services, holder, user)


def cancel_queued(services: Services, run: Run, user: str) -> bool:
    """Cancel a run still waiting in the queue: remove its RQ job, mark it CANCELLED (by `user`),
    release the repository's lock, say so in its thread. Updates `run` in place.

    Returns False when the run is no longer queued (a worker has just started it): the cancel
    request stays, and that worker stops the run itself.
    """
    store = services.store
    store.request_cancel(run.id, user)  # first: a job starting right now sees it and does not run
    found = store.get_with_raw(run.id)
    if found is None:
        return False
    current, raw = found
    if current.state is not RunState.QUEUED:
        return False
    current.state = RunState.CANCELLED
    current.cancelled_by = store.cancel_requested(run.id) or user
    current.finished_at = time.time()
    if not store.replace_unleased(current, raw):
        return False  # its job took the run's lease a moment ago: it sees the request
    try:
        fetch_job(run.id, services.redis).delete(remove_from_queue=True)
    except NoSuchJobError:
        pass
    except Exception as error:  # the run is cancelled; a job left behind finds it so and does nothing
        log.warning("removing the job of cancelled run %s: %s", run.id, error)
    store.release_lock(current.repo, current.id)
    store.clear_cancel(current.id)
    Outbox(services.poster, store).show(current, "cancelled", cancelled_text(current))
    for name in ("state", "cancelled_by", "finished_at"):
        setattr(run, name, getattr(current, name))
    return True
