"""RQ entry points: build the adapters, run the pipeline, hand the result to the store and the thread."""

from __future__ import annotations

import logging

from rq import get_current_job

from bot.adapters.git import TrackClone, clone_dir
from bot.config import load_settings
from bot.pipeline import RunContext, run_steps
from bot.progress import RunThread
from bot.runs import Run, RunState
from bot.services import Services
from bot.steps import RUN_STEPS

log = logging.getLogger(__name__)


def run_track(run_id: str) -> str:
    """The worker's job: run one queued track. Returns the run's final state."""
    job = get_current_job()
    services = Services.from_settings(load_settings(), redis=job.connection if job else None)
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
    settings = services.settings
    thread = RunThread(services.poster, store)
    thread.ensure_parent(run)
    clone = TrackClone(
        clone_dir(settings.work_dir, run.repo),
        settings.clone_url(run.repo),
        settings.base_branch,
        settings.github_token.get_secret_value(),
    )
    ctx = RunContext(
        run=run,
        settings=settings,
        rules=services.rules,
        clone=clone,
        github=services.github(run.repo),
        redact=services.redact,
        holds_lock=lambda: store.lock_holder(run.repo) == run.id,
        note=lambda line: thread.note(run, line),
    )
    try:
        run_steps(ctx, RUN_STEPS, thread.update)
        clone.clean()
        store.save(run)
        thread.report(run)
    finally:
        # Released last, so "no run active" means the report is in the thread too.
        store.release_lock(run.repo, run.id)
    log.info("run %s of %s track %s ended %s", run.id, run.repo, run.track, run.state.value)
    return run
