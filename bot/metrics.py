"""Prometheus metrics, kept in Redis so that what any process observes shows in one scrape.

Runs and steps are observed in worker processes, Slack acks in the web processes (several under
gunicorn), API errors in both. Each observation is a couple of HINCRBY on a hash per metric; the
web app's `/metrics` reads the hashes and renders them with a prometheus-client Collector, together
with gauges computed at scrape time from RQ (queue depth, running jobs, workers and their
heartbeats). Recording never fails the caller: when Redis is unreachable the observation is lost
and a warning is logged.
"""

from __future__ import annotations

import atexit
import datetime as dt
import logging
import math
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from redis import Redis, RedisError
from redis.client import Pipeline
from rq import Queue, Worker
from rq.registry import StartedJobRegistry

from bot.runs import Run

log = logging.getLogger(__name__)

KEY_PREFIX = "trackbot:metrics"
SLACK_WORK_STREAM = "trackbot:slack-work"  # the web app queues Slack work here (handlers/slack_work.py)
_SEP = "\x1f"  # between label values in a hash field
_PART = "\x1e"  # between the labels and the bucket / sum / count


@dataclass(frozen=True)
class MetricDef:
    """A metric's name, help text, label names, and buckets (None: a counter)."""

    name: str
    help: str
    labels: tuple[str, ...] = ()
    buckets: tuple[float, ...] | None = None

    @property
    def key(self) -> str:
        """The Redis hash holding its values."""
        return f"{KEY_PREFIX}:{self.name}"


RUNS = MetricDef("trackbot_runs", "Runs that ended, by their final state", ("state",))
STEP_SECONDS = MetricDef(
    "trackbot_step_duration_seconds",
    "How long each step of a run took",
    ("step",),
    (0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200),
)
QUEUE_WAIT_SECONDS = MetricDef(
    "trackbot_run_queue_wait_seconds",
    "From a run being queued to a worker starting it",
    (),
    (0.1, 0.5, 1, 2, 5, 10, 30, 60, 300, 900, 1800, 3600),
)
SLACK_ACK_SECONDS = MetricDef(
    "trackbot_slack_ack_seconds",
    "How long the web app took to answer (ack) a Slack request; Slack gives up after 3 s",
    (),
    (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 3, 5),
)
API_ERRORS = MetricDef(
    "trackbot_api_errors",
    "Failed Slack and GitHub API calls, by service and kind (Slack's error code, GitHub's HTTP status, connection)",
    ("service", "kind"),
)
RECORDED: tuple[MetricDef, ...] = (RUNS, STEP_SECONDS, QUEUE_WAIT_SECONDS, SLACK_ACK_SECONDS, API_ERRORS)


def _label(value: str) -> str:
    return str(value).replace(_SEP, " ").replace(_PART, " ")[:100]


def _bucket_name(bound: float) -> str:
    return "+Inf" if math.isinf(bound) else repr(float(bound))


class Metrics:
    """Records observations in Redis (see the module docstring)."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis

    def inc(self, metric: MetricDef, labels: Sequence[str] = (), amount: int = 1) -> None:
        """Add to a counter."""
        field = _SEP.join(_label(v) for v in labels)
        self._add(metric, [(field, amount)])

    def observe(self, metric: MetricDef, value: float, labels: Sequence[str] = ()) -> None:
        """Count one observation in a histogram."""
        assert metric.buckets is not None, f"{metric.name} is not a histogram"
        field = _SEP.join(_label(v) for v in labels)
        bound = next((b for b in metric.buckets if value <= b), math.inf)
        self._add(
            metric,
            [(f"{field}{_PART}{_bucket_name(bound)}", 1), (f"{field}{_PART}count", 1), (f"{field}{_PART}sum", value)],
        )

    def _add(self, metric: MetricDef, increments: Sequence[tuple[str, float]]) -> None:
        try:
            pipe = self.redis.pipeline(transaction=False)
            _increment(pipe, metric.key, increments)
            pipe.execute()
        except RedisError as error:
            log.warning("metric %s not recorded: %s", metric.name, error)

    # -- what trackbot observes ------------------------------------------------------------------

    def run_finished(self, run: Run) -> None:
        """A worker finished a run: its final state, each step's duration, its wait in the queue."""
        self.inc(RUNS, (run.state.value,))
        for step in run.steps:
            self.observe(STEP_SECONDS, step.duration_s, (step.name,))
        if run.started_at is not None:
            self.observe(QUEUE_WAIT_SECONDS, max(0.0, run.started_at - run.created_at))

    def slack_ack(self, seconds: float) -> None:
        """The web app answered a Slack request."""
        self.observe(SLACK_ACK_SECONDS, seconds)

    def api_error(self, service: str, kind: str) -> None:
        """A Slack or GitHub API call failed."""
        self.inc(API_ERRORS, (service, kind))


def _increment(pipe: Pipeline, key: str, increments: Iterable[tuple[str, float]]) -> None:
    for field, amount in increments:
        if isinstance(amount, int):
            pipe.hincrby(key, field, amount)
        else:
            pipe.hincrbyfloat(key, field, float(amount))


class BufferedMetrics(Metrics):
    """Metrics that add up in memory and reach Redis in one pipeline every `flush_every_s` seconds.

    For the web process: an ack that waits on a Redis round trip waits for the GIL again after it,
    behind every busy thread (bench/ack_latency.py). An observation shows in `/metrics` within
    `flush_every_s`; what a killed process had added up since its last flush is lost.
    """

    def __init__(self, redis: Redis, flush_every_s: float = 1.0) -> None:
        super().__init__(redis)
        self.flush_every_s = flush_every_s
        self._pending: dict[tuple[str, str], float] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def _add(self, metric: MetricDef, increments: Sequence[tuple[str, float]]) -> None:
        with self._lock:
            for field, amount in increments:
                self._pending[(metric.key, field)] = self._pending.get((metric.key, field), 0) + amount
            if self._thread is None:  # started on first use: after gunicorn forked this worker
                self._thread = threading.Thread(target=self._flush_loop, name="trackbot-metrics", daemon=True)
                self._thread.start()
                atexit.register(self._flush_at_exit)  # a process that exits cleanly loses nothing

    def close(self) -> None:
        """Write what is left now, not at exit (the caller is about to stop Redis, or the process)."""
        atexit.unregister(self._flush_at_exit)
        self.flush()

    def _flush_at_exit(self) -> None:
        self.flush(final=True)

    def flush(self, final: bool = False) -> None:
        """Write what was added up since the last flush (kept for the next one when Redis fails)."""
        with self._lock:
            pending, self._pending = self._pending, {}
        if not pending:
            return
        try:
            pipe = self.redis.pipeline(transaction=False)
            for (key, field), amount in pending.items():
                _increment(pipe, key, [(field, amount)])
            pipe.execute()
        except RedisError as error:
            if final:
                log.warning("metrics lost at exit: %s", error)
                return
            log.warning("metrics not recorded yet (%s); trying again", error)
            with self._lock:
                for slot, amount in pending.items():
                    self._pending[slot] = self._pending.get(slot, 0) + amount

    def _flush_loop(self) -> None:
        while True:
            time.sleep(self.flush_every_s)
            self.flush()


# -- workers ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WorkerBeat:
    """A registered RQ worker and its last heartbeat."""

    name: str
    hostname: str
    pid: int | None
    state: str
    age_s: float | None  # seconds since its last heartbeat
    job_id: str | None


def worker_beats(redis: Redis, queue: Queue) -> list[WorkerBeat]:
    """The workers registered on trackbot's queue (RQ drops a worker whose heartbeat lapses)."""
    now = dt.datetime.now(dt.UTC)
    beats = []
    for worker in Worker.all(connection=redis, queue=queue):
        last = worker.last_heartbeat
        if last is not None and last.tzinfo is None:
            last = last.replace(tzinfo=dt.UTC)
        beats.append(
            WorkerBeat(
                name=worker.name,
                hostname=worker.hostname or "",
                pid=worker.pid,
                state=str(getattr(state := worker.get_state(), "value", state)),  # "idle", "busy"...
                age_s=None if last is None else max(0.0, (now - last).total_seconds()),
                job_id=worker.get_current_job_id(),
            )
        )
    return sorted(beats, key=lambda b: b.name)


# -- the scrape ---------------------------------------------------------------------------------


class TrackbotCollector:
    """Renders the metrics in Redis, and RQ's state, at scrape time."""

    def __init__(self, redis: Redis, queue: Queue) -> None:
        self.redis = redis
        self.queue = queue

    def describe(self) -> Iterable[Metric]:
        """Nothing up front: everything is read at scrape time."""
        return []

    def collect(self) -> Iterator[Metric]:
        """Every recorded metric, then the gauges from RQ. Raises RedisError when Redis is unreachable."""
        for metric in RECORDED:
            values = {
                (k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
                for k, v in self.redis.hgetall(metric.key).items()
            }
            yield self._counter(metric, values) if metric.buckets is None else self._histogram(metric, values)
        yield from self._gauges()

    def _counter(self, metric: MetricDef, values: dict[str, str]) -> Metric:
        family = CounterMetricFamily(metric.name, metric.help, labels=list(metric.labels))
        for field, value in sorted(values.items()):
            family.add_metric(_labels_of(field, metric), float(value))
        return family

    def _histogram(self, metric: MetricDef, values: dict[str, str]) -> Metric:
        assert metric.buckets is not None
        family = HistogramMetricFamily(metric.name, metric.help, labels=list(metric.labels))
        series: dict[str, dict[str, float]] = {}
        for field, value in values.items():
            labels, _, part = field.rpartition(_PART)
            series.setdefault(labels, {})[part] = float(value)
        for labels, parts in sorted(series.items()):
            cumulative, buckets = 0.0, []
            for bound in (*metric.buckets, math.inf):
                cumulative += parts.get(_bucket_name(bound), 0.0)
                buckets.append((_bucket_name(bound), cumulative))
            family.add_metric(_labels_of(labels, metric), buckets, parts.get("sum", 0.0))
        return family

    def _gauges(self) -> Iterator[Metric]:
        depth = GaugeMetricFamily("trackbot_queue_depth", "Runs queued and not yet started by a worker")
        depth.add_metric([], self.queue.count)
        yield depth
        running = GaugeMetricFamily("trackbot_runs_running", "Runs a worker is running now")
        running.add_metric([], StartedJobRegistry(queue=self.queue).count)
        yield running
        beats = worker_beats(self.redis, self.queue)
        workers = GaugeMetricFamily("trackbot_workers", "Workers registered on the queue (alive: heartbeat kept)")
        workers.add_metric([], len(beats))
        yield workers
        age = GaugeMetricFamily(
            "trackbot_worker_heartbeat_age_seconds",
            "Seconds since each worker's last heartbeat",
            labels=["worker", "hostname", "state"],
        )
        for beat in beats:
            if beat.age_s is not None:
                age.add_metric([beat.name, beat.hostname, beat.state], beat.age_s)
        yield age
        waiting = GaugeMetricFamily(
            "trackbot_slack_work_waiting",
            "Slack commands and clicks acked by the web app and not answered yet by a worker",
        )
        waiting.add_metric([], int(self.redis.xlen(SLACK_WORK_STREAM)))
        yield waiting
        scrape = GaugeMetricFamily("trackbot_scrape_timestamp_seconds", "When these metrics were read")
        scrape.add_metric([], time.time())
        yield scrape


def _labels_of(field: str, metric: MetricDef) -> list[str]:
    values = field.split(_SEP) if metric.labels else []
    return (values + [""] * len(metric.labels))[: len(metric.labels)]


def render(redis: Redis, queue: Queue) -> tuple[bytes, str]:
    """The Prometheus text exposition and its content type. Raises RedisError when Redis is unreachable."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(TrackbotCollector(redis, queue))
    return generate_latest(registry), CONTENT_TYPE_LATEST


def reset(redis: Redis) -> None:
    """Forget every recorded metric (tests)."""
    redis.delete(*(metric.key for metric in RECORDED))
