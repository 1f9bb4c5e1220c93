"""Putting a run on the worker queue: the one way `/track run` and `/track retry` enqueue a run."""

from __future__ import annotations

from bot.jobqueue import enqueue_signed
from bot.runs import Run, RunState
from bot.services import Services

RESULT_TTL_S = 7 * 24 * 3600
FAILURE_TTL_S = 30 * 24 * 3600


class QueueingError(Exception):
    """The run could not be queued; it is marked FAILED and its repository released."""


def job_timeout_s(services: Services) -> int:
    """How long RQ lets one run's job take: the agent, every gate, and room for git and GitHub."""
    settings = services.settings
    return settings.agent_timeout_s + 4 * settings.gate_timeout_s + 600


def enqueue_run(services: Services, run: Run) -> None:
    """Enqueue `bot.jobs.run_track(run.id)` as RQ job `run.id`, signed (the run is stored and holds the lock).

    On failure the run is marked FAILED, the repository's lock released, and QueueingError raised
    (its message says why, unredacted: redact it before showing it).
    """
    try:
        enqueue_signed(
            services.queue,
            services.settings.queue_key,
            "bot.jobs.run_track",
            run.id,
            job_id=run.id,
            unique=True,
            job_timeout=job_timeout_s(services),
            result_ttl=RESULT_TTL_S,
            failure_ttl=FAILURE_TTL_S,
        )
    except Exception as error:
        run.state = RunState.FAILED
        run.error = f"queueing the run: {error}"
        services.store.save(run)
        services.store.release_lock(run.repo, run.id)
        raise QueueingError(str(error)) from error
