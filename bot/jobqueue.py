"""RQ as trackbot uses it: JSON, not pickle; only trackbot's own job functions; every job signed.

RQ's default serializer is pickle, and loading a pickle runs whatever code it names: anyone who can
write to Redis could run code in the worker. Even with JSON, an RQ job names a dotted function path
that the worker imports and calls (`os.system` would do). So every queue, job and worker trackbot
makes comes from here:

- `TrackbotJob` and `make_queue` use RQ's `JSONSerializer`: job data, meta and results are only
  ever loaded as data.
- `TrackbotJob.func` resolves only the names in `JOB_FUNCTIONS`; the job's callbacks and webhooks
  (which RQ would import or call too) are never used.
- `enqueue_signed` puts an HMAC-SHA256 of the job's id, function and arguments, keyed with a
  server-side key (`Settings.queue_key`), in the job's meta. `TrackbotWorker` checks it before it
  forks a work horse: a job that fails (unreadable, an unknown function, no or a wrong signature) is
  not run; it is deleted and logged.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import uuid
from typing import Any

from redis import Redis
from rq import Queue, Worker
from rq.job import Job
from rq.serializers import JSONSerializer

log = logging.getLogger(__name__)

QUEUE_NAME = "trackbot-runs"
MAC_FIELD = "trackbot_mac"  # in the job's meta
# The only functions a trackbot worker runs: dotted name -> (module, attribute), imported when run.
JOB_FUNCTIONS: dict[str, tuple[str, str]] = {"bot.jobs.run_track": ("bot.jobs", "run_track")}


class RefusedJob(Exception):
    """A job that trackbot did not queue: it is not run."""


def job_mac(key: bytes, job_id: str, func_name: str, args: Any, kwargs: Any) -> str:
    """The signature of a job: HMAC-SHA256 over its id, function and arguments (as JSON)."""
    message = json.dumps([job_id, func_name, list(args), dict(kwargs)], sort_keys=True, separators=(",", ":"))
    return hmac.new(key, message.encode(), hashlib.sha256).hexdigest()


class TrackbotJob(Job):
    """An RQ job that can only call one of `JOB_FUNCTIONS`, and never a callback or a webhook."""

    @property
    def func(self) -> Any:
        """The job's function, when it is one of trackbot's; RefusedJob otherwise."""
        name = self.func_name
        if self.instance is not None or name not in JOB_FUNCTIONS:
            raise RefusedJob(f"{name!r} is not one of trackbot's job functions")
        import importlib

        module, attribute = JOB_FUNCTIONS[name]
        return getattr(importlib.import_module(module), attribute)

    # trackbot sets no callbacks and no webhooks: whatever a job in Redis says, none is imported or called.
    @property
    def success_callback(self) -> None:
        """Never one."""
        return None

    @property
    def failure_callback(self) -> None:
        """Never one."""
        return None

    @property
    def stopped_callback(self) -> None:
        """Never one."""
        return None

    def send_webhooks(self, *args: Any, **kwargs: Any) -> None:
        """Never any."""
        return None


def make_queue(redis: Redis) -> Queue:
    """trackbot's run queue on `redis`: JSON, TrackbotJob."""
    return Queue(QUEUE_NAME, connection=redis, job_class=TrackbotJob, serializer=JSONSerializer)


def fetch_job(job_id: str, redis: Redis) -> Job:
    """A job of trackbot's queue (JSON); rq's NoSuchJobError when there is none."""
    return TrackbotJob.fetch(job_id, connection=redis, serializer=JSONSerializer)


def enqueue_signed(
    queue: Queue, key: bytes, func_name: str, *args: Any, job_id: str | None = None, **options: Any
) -> Job:
    """Enqueue `func_name(*args)` (one of JOB_FUNCTIONS) as a job signed with `key`."""
    if func_name not in JOB_FUNCTIONS:
        raise ValueError(f"{func_name} is not one of trackbot's job functions")
    job_id = job_id or uuid.uuid4().hex
    meta = {MAC_FIELD: job_mac(key, job_id, func_name, args, {})}
    return queue.enqueue(func_name, *args, job_id=job_id, meta=meta, **options)


def refusal(job: Job, key: bytes) -> str | None:
    """Why the worker must not run `job`, or None when trackbot queued it."""
    try:
        func_name, instance, args, kwargs = job.func_name, job.instance, job.args, job.kwargs
    except Exception as error:  # RQ's DeserializationError: not JSON (a pickled job, say)
        return f"its data is not trackbot's JSON ({type(error).__name__})"
    if instance is not None or func_name not in JOB_FUNCTIONS:
        return f"it names {str(func_name)[:200]!r}, not one of trackbot's job functions"
    meta = job.meta if isinstance(job.meta, dict) else {}
    mac = meta.get(MAC_FIELD)
    if not isinstance(mac, str):
        return "it is not signed"
    if not hmac.compare_digest(mac, job_mac(key, job.id, func_name, args, kwargs)):
        return "its signature is wrong"
    return None


class TrackbotWorker(Worker):
    """An RQ worker on trackbot's queue that runs only jobs trackbot signed (see the module docstring)."""

    job_class = TrackbotJob

    def __init__(self, *args: Any, queue_key: bytes, **kwargs: Any) -> None:
        kwargs.setdefault("serializer", JSONSerializer)
        kwargs.setdefault("job_class", TrackbotJob)
        super().__init__(*args, **kwargs)
        self.queue_key = queue_key

    def execute_job(self, job: Job, queue: Queue) -> None:
        """Run the job in a work horse, unless it fails the checks: then it is dropped and logged."""
        why = refusal(job, self.queue_key)
        if why is None:
            super().execute_job(job, queue)
            return
        log.error("RQ job %s dropped, not run: %s", job.id, why)
        try:
            with self.connection.pipeline() as pipe:
                pipe.lrem(queue.intermediate_queue_key, 1, job.id)
                job.delete(pipeline=pipe, remove_from_queue=True)
                pipe.execute()
        except Exception as error:  # it stays dropped: RQ's clean-up removes what is left
            log.warning("removing dropped RQ job %s: %s", job.id, error)
