"""Someone who can write to Redis cannot make a worker run code: forged RQ jobs are dropped, not run.

Each test starts the local stack with a real `trackbot worker` process, plants a job in trackbot's
queue with plain redis-py or RQ (as an intruder would), and checks that its side effect (a file it
would create) never happens, that the job is gone and that the worker logged why. A job trackbot
signed still runs.
"""

from __future__ import annotations

import os
import pickle
import time
import zlib
from collections.abc import Callable
from pathlib import Path

from rq import Queue
from rq.registry import FailedJobRegistry
from rq.serializers import JSONSerializer

from bot.jobqueue import QUEUE_NAME, enqueue_signed, job_mac
from bot.local.console import LocalStack

MakeStack = Callable[..., LocalStack]


class Touch:
    """Unpickling this runs `touch <path>`: what a pickled RQ job can do to a worker that loads it."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return os.system, (f"touch {self.path}",)


def worker_log(stack: LocalStack) -> str:
    return (stack.work_dir / "worker.log").read_text(errors="replace")


def wait_for(predicate: Callable[[], bool], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def wait_dropped(stack: LocalStack, job_id: str) -> None:
    """Until the worker has logged that it dropped `job_id`, and the job is gone from Redis."""
    assert stack.services is not None
    redis = stack.services.redis
    wait_for(lambda: f"RQ job {job_id} dropped, not run" in worker_log(stack), f"the worker to drop {job_id}")
    assert not redis.exists(f"rq:job:{job_id}")
    assert job_id.encode() not in redis.lrange(f"rq:queue:{QUEUE_NAME}", 0, -1)


def signed_job_still_runs(stack: LocalStack) -> None:
    """A job trackbot signed is run (run_track of a run that does not exist: it fails, saying so)."""
    assert stack.services is not None
    services = stack.services
    enqueue_signed(services.queue, services.settings.queue_key, "bot.jobs.run_track", "no-such-run", job_id="real")
    failed = FailedJobRegistry(queue=services.queue)
    wait_for(lambda: "real" in failed.get_job_ids(), "the signed job to run")
    job = services.queue.fetch_job("real")
    assert job is not None and "run no-such-run is not in the store" in str(job.latest_result().exc_string)  # type: ignore[union-attr]


def test_a_forged_pickled_job_is_not_run(make_stack: MakeStack, tmp_path: Path) -> None:
    stack = make_stack()
    assert stack.services is not None
    redis = stack.services.redis
    marker, control = tmp_path / "pwned", tmp_path / "pickle-is-live"
    # The job RQ's default (pickle) serializer would write: loading its data runs `touch`.
    data = zlib.compress(pickle.dumps(("bot.jobs.run_track", None, (Touch(marker),), {})))
    pickle.loads(pickle.dumps(Touch(control)))  # the payload is live: a pickle-loading worker would run it
    assert control.exists()
    redis.hset(
        "rq:job:forged",
        mapping={"data": data, "origin": QUEUE_NAME, "status": "queued", "description": "bot.jobs.run_track(...)"},
    )
    redis.rpush(f"rq:queue:{QUEUE_NAME}", "forged")
    wait_dropped(stack, "forged")
    assert "its data is not trackbot's JSON" in worker_log(stack)
    signed_job_still_runs(stack)
    assert not marker.exists()


def test_a_forged_json_job_naming_os_system_is_dropped(make_stack: MakeStack, tmp_path: Path) -> None:
    stack = make_stack()
    assert stack.services is not None
    marker = tmp_path / "pwned"
    intruder = Queue(QUEUE_NAME, connection=stack.services.redis, serializer=JSONSerializer)
    intruder.enqueue("os.system", f"touch {marker}", job_id="os-system")
    wait_dropped(stack, "os-system")
    assert "it names 'os.system', not one of trackbot's job functions" in worker_log(stack)
    assert not marker.exists()


def test_an_unsigned_or_wrongly_signed_job_is_dropped(make_stack: MakeStack) -> None:
    """trackbot's own function, but not queued by trackbot: without its key's HMAC the job is not run."""
    stack = make_stack()
    assert stack.services is not None
    intruder = Queue(QUEUE_NAME, connection=stack.services.redis, serializer=JSONSerializer)
    intruder.enqueue("bot.jobs.run_track", "no-such-run", job_id="unsigned")
    wait_dropped(stack, "unsigned")
    assert "RQ job unsigned dropped, not run: it is not signed" in worker_log(stack)
    mac = job_mac(b"a guessed key", "guessed", "bot.jobs.run_track", ["no-such-run"], {})
    intruder.enqueue("bot.jobs.run_track", "no-such-run", job_id="guessed", meta={"trackbot_mac": mac})
    wait_dropped(stack, "guessed")
    assert "RQ job guessed dropped, not run: its signature is wrong" in worker_log(stack)
    assert "run no-such-run is not in the store" not in worker_log(stack)  # neither ran
    signed_job_still_runs(stack)
