"""The `trackbot` command: `console`, `worker`, `web`, `doctor`, `status`."""

from __future__ import annotations

import argparse
import logging
import os
import re
import socket
import sys
from pathlib import Path

from bot.adapters.process import pid_alive
from bot.config import ConfigError, Settings, load_settings
from bot.logs import setup_logging
from bot.redact import Redactor


def setup_process_logging(settings: Settings) -> None:
    """`web` and `worker`: JSON lines (or text with TRACKBOT_LOG_FORMAT=text), redacted, with run context."""
    setup_logging(Redactor(settings.secret_values()), settings.log_format or "json")


def cmd_worker(args: argparse.Namespace) -> int:
    """Run an RQ worker on trackbot's queue; background threads run the reaper, the Slack outbox, the merge
    poller and answer the Slack commands and clicks the web app queued (handlers/slack_work.py).

    RQ is tuned to notice a dead worker in about 2 minutes instead of 13 (TRACKBOT_WORKER_TTL,
    TRACKBOT_JOB_MONITORING_INTERVAL, TRACKBOT_RQ_MAINTENANCE_INTERVAL); trackbot's reaper notices a
    dead run within TRACKBOT_LEASE_TTL + TRACKBOT_REAPER_INTERVAL (1 minute). When RQ's work loop
    gives up (it does on some Redis connection errors), a fresh worker takes over after a backoff.
    """
    import signal
    import threading
    import time

    from redis import Redis, RedisError

    from bot.jobqueue import TrackbotWorker as SignedJobsWorker
    from bot.poller import PollerLoop
    from bot.reaper import Maintenance
    from bot.services import Services
    from handlers.slack_work import SlackWorkConsumer

    settings = load_settings()
    if args.check:
        return worker_check(settings)
    setup_process_logging(settings)
    log = logging.getLogger("trackbot.worker")
    services = Services.from_settings(settings)
    url = settings.redis_url or (services.embedded_redis.url if services.embedded_redis else None)

    def own_services() -> Services:
        # Each background part gets its own Redis connection and API clients: the work horse forks
        # from this process, and a GitHub client stays its own thread's.
        return Services(settings=settings, redis=Redis.from_url(str(url), health_check_interval=30))

    maintenance = Maintenance(own_services()).start()
    # Merges without a webhook (Socket Mode).
    poller = PollerLoop(own_services())
    poller.start()  # a no-op when TRACKBOT_POLL_INTERVAL is 0
    # Slack commands and clicks the web app acked; threads of this (idle) main process answer them.
    answering = SlackWorkConsumer(own_services(), settings.slack_work_threads).start()

    class TrackbotWorker(SignedJobsWorker):
        stop_signalled = False  # SIGTERM/SIGINT: stop for good, not a crash to recover from

        def request_stop(self, signum: int, frame: object) -> None:
            self.stop_signalled = True
            super().request_stop(signum, frame)

    stopping = threading.Event()

    def stop_between_workers(signum: int, frame: object) -> None:
        stopping.set()

    delay = 1.0
    try:
        while not stopping.is_set():
            started, failure, worker = time.monotonic(), "", None
            try:
                worker = TrackbotWorker(  # it talks to Redis already (CLIENT SETNAME)
                    [services.queue],
                    connection=services.redis,
                    worker_ttl=settings.worker_ttl_s,
                    job_monitoring_interval=settings.job_monitoring_interval_s,
                    maintenance_interval=settings.rq_maintenance_interval_s,
                    queue_key=settings.queue_key,
                )
                worker.work(burst=args.burst, with_scheduler=False)
            except (RedisError, OSError) as error:
                failure = str(error)
            signal.signal(signal.SIGTERM, stop_between_workers)
            signal.signal(signal.SIGINT, stop_between_workers)
            pubsub_thread = getattr(worker, "pubsub_thread", None)
            if failure and pubsub_thread is not None:
                pubsub_thread.stop()  # RQ's teardown could not unsubscribe: its thread would retry forever
            if worker is not None and worker.horse_pid:
                maintenance.adopt(worker.horse_pid)  # a job still running: it carries on by itself
            if worker is not None and (worker.stop_signalled or (args.burst and not failure)):
                return 0
            if time.monotonic() - started > 60:
                delay = 1.0
            log.warning("the RQ worker stopped (%s); starting a new one in %.0fs", failure or "see above", delay)
            stopping.wait(delay)
            delay = min(delay * 2, 60.0)
        return 0
    finally:
        answering.stop()
        maintenance.stop()
        poller.stop()


def cmd_web(args: argparse.Namespace) -> int:
    """Serve the HTTP app: gunicorn in HTTP mode; Socket Mode for Slack when SLACK_APP_TOKEN is set."""
    settings = load_settings()
    setup_process_logging(settings)
    if settings.slack_app_token is None:
        return _serve_gunicorn(args.host, args.port, args.workers)
    from slack_bolt.adapter.socket_mode import SocketModeHandler

    from bot.services import Services
    from handlers.app import TrackbotApp, serve_in_thread

    # Slack arrives over the socket; the webhook and health checks still need HTTP.
    app = TrackbotApp(Services.from_settings(settings))
    _server, url = serve_in_thread(app, args.host, args.port)
    logging.getLogger("trackbot").info("Socket Mode; HTTP (webhook, health, metrics) on %s", url)
    SocketModeHandler(app.bolt, settings.slack_app_token.get_secret_value()).start()
    return 0


def _serve_gunicorn(host: str, port: int, workers: int) -> int:
    from gunicorn.app.base import BaseApplication
    from gunicorn.glogging import Logger

    from handlers.app import create_app

    class _GunicornLogger(Logger):
        """gunicorn's own lines go through trackbot's handler too (JSON, redacted)."""

        def setup(self, cfg: object) -> None:
            super().setup(cfg)
            for logger in (self.error_log, self.access_log):
                logger.handlers = list(logging.getLogger().handlers)

    class _Gunicorn(BaseApplication):
        def load_config(self) -> None:
            for key, value in {
                "bind": f"{host}:{port}",
                "workers": workers,
                "threads": 8,
                "timeout": 30,
                "accesslog": None,
                "logger_class": _GunicornLogger,
            }.items():
                self.cfg.set(key, value)

        def load(self) -> object:
            return create_app()

    _Gunicorn().run()
    return 0


def cmd_console(args: argparse.Namespace) -> int:
    """The local stack with a console."""
    from bot.local.console import PROTECTED_TOUR, TOUR, run_console

    logging.basicConfig(level=logging.WARNING)
    lines = list(PROTECTED_TOUR if args.protect_main else TOUR) if args.tour else None
    return run_console(
        lines,
        sys.stdout,
        repo=args.repo,
        agent=args.agent,
        work_dir=args.work_dir,
        interactive=sys.stdin.isatty() and not args.tour,
        protect_main=args.protect_main,
    )


def worker_check(settings: Settings) -> int:
    """`trackbot worker --check` (a container's health check): a worker of this host keeps its heartbeat."""
    from bot.jobqueue import make_queue
    from bot.metrics import worker_beats
    from bot.services import connect_redis

    redis, _embedded = connect_redis(settings)
    try:
        beats = worker_beats(redis, make_queue(redis))
    except Exception as error:
        print(f"FAIL worker: cannot read the workers from Redis: {error}")
        return 1
    finally:
        redis.close()
    host = socket.gethostname()
    # RQ refreshes a worker's heartbeat at least every worker_ttl - 15 s, even when idle.
    limit = settings.worker_ttl_s + 60
    alive = [b for b in beats if b.hostname == host and pid_alive(b.pid) and (b.age_s or 0) <= limit]
    if not alive:
        print(f"FAIL worker: no worker of {host} keeps a heartbeat on the queue ({len(beats)} registered in all)")
        return 1
    for beat in alive:
        print(f"ok   worker: {beat.name} pid {beat.pid} on {host}, {beat.state}, heartbeat {beat.age_s or 0:.0f}s ago")
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    """Check every setting and service; one line per check; non-zero when any fails."""
    from bot.doctor import run_doctor

    logging.basicConfig(level=logging.CRITICAL)
    only = {name.strip() for name in (args.only or "").split(",") if name.strip()} or None
    return run_doctor(sys.stdout, only)


def plain_text(mrkdwn: str) -> str:
    """Slack mrkdwn, lightly, for a terminal: links as `text (url)`, mentions as `@U…`, no bold stars."""
    text = re.sub(r"<([@#])([^<>|]+)(?:\|([^<>]+))?>", lambda m: m.group(1) + (m.group(3) or m.group(2)), mrkdwn)
    text = re.sub(r"<!([^<>|]+)(?:\|([^<>]+))?>", lambda m: "@" + (m.group(2) or m.group(1)), text)
    text = re.sub(r"<([^<>|]+)\|([^<>]+)>", lambda m: f"{m.group(2)} ({m.group(1)})", text)
    text = re.sub(r"<([^<>]+)>", r"\1", text)
    text = re.sub(r"(?<![\w*])\*([^*\n]+)\*(?![\w*])", r"\1", text)
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def cmd_status(args: argparse.Namespace) -> int:
    """What `/track status` says about a repository, in the terminal."""
    from bot.commands import Commands
    from bot.services import Services

    settings = load_settings()
    logging.basicConfig(level=logging.WARNING)
    repos = settings.repositories
    repo = args.repo or (repos[0] if len(repos) == 1 else None)
    if repo is None or repo not in repos:
        print(f"name a configured repository with --repo: {', '.join(repos)}", file=sys.stderr)
        return 2
    services = Services.from_settings(settings)
    try:
        reply = Commands(services).status(repo)
    finally:
        services.redis.close()
    print(plain_text(reply.text))
    return 1 if reply.ephemeral else 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `trackbot` console script."""
    parser = argparse.ArgumentParser(prog="trackbot", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    console = sub.add_parser("console", help="the whole bot locally, against local Slack and GitHub stand-ins")
    console.add_argument("--repo", type=Path, help="a local git repository (bare or not) whose main is upstream")
    console.add_argument("--agent", help="the agent command (default: the sample agent)")
    console.add_argument("--work-dir", type=Path, help="keep clones and Redis data here (default: a temp dir)")
    console.add_argument("--tour", action="store_true", help="play the scripted tour instead of reading stdin")
    console.add_argument(
        "--protect-main",
        action="store_true",
        help="the local GitHub protects main (a ruleset needing a review): the advance goes through its own PR",
    )
    console.set_defaults(func=cmd_console)
    worker = sub.add_parser("worker", help="run a queue worker")
    worker.add_argument("--burst", action="store_true", help="exit when the queue is empty")
    worker.add_argument(
        "--check", action="store_true", help="health check: exit 0 when a worker of this host keeps its heartbeat"
    )
    worker.set_defaults(func=cmd_worker)
    web = sub.add_parser("web", help="serve /slack/events and /github/webhook")
    web.add_argument("--host", default="0.0.0.0")
    web.add_argument("--port", type=int, default=int(os.environ.get("PORT", "3000")))
    web.add_argument("--workers", type=int, default=2, help="gunicorn worker processes (HTTP mode)")
    web.set_defaults(func=cmd_web)
    doctor = sub.add_parser("doctor", help="check every setting and service, one line each")
    doctor.add_argument("--only", help="comma-separated checks: settings,redis,workers,slack,github,agent")
    doctor.set_defaults(func=cmd_doctor)
    status = sub.add_parser("status", help="what /track status says, in the terminal")
    status.add_argument("--repo", help="owner/name (default: the only configured repository)")
    status.set_defaults(func=cmd_status)
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except ConfigError as error:
        print(error, file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
