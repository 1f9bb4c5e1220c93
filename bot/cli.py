"""The `trackbot` command: `console`, `worker`, `web`."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from bot.config import ConfigError, load_settings
from bot.redact import Redactor


class RedactingFilter(logging.Filter):
    """Every log line passes the redactor."""

    def __init__(self, redact: Redactor) -> None:
        super().__init__()
        self.redact = redact

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = self.redact(record.getMessage())
        record.args = None
        return True


def setup_logging(redact: Redactor) -> None:
    """Log to stderr, redacted."""
    handler = logging.StreamHandler()
    handler.addFilter(RedactingFilter(redact))
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.INFO, handlers=[handler], force=True)


def cmd_worker(args: argparse.Namespace) -> int:
    """Run an RQ worker on trackbot's queue."""
    from rq import Worker

    from bot.services import Services

    settings = load_settings()
    setup_logging(Redactor(settings.secret_values()))
    services = Services.from_settings(settings)
    worker = Worker([services.queue], connection=services.redis)
    worker.work(burst=args.burst, with_scheduler=False)
    return 0


def cmd_web(args: argparse.Namespace) -> int:
    """Serve the HTTP app: gunicorn in HTTP mode; Socket Mode for Slack when SLACK_APP_TOKEN is set."""
    settings = load_settings()
    setup_logging(Redactor(settings.secret_values()))
    if settings.slack_app_token is None:
        return _serve_gunicorn(args.host, args.port, args.workers)
    from slack_bolt.adapter.socket_mode import SocketModeHandler

    from bot.services import Services
    from handlers.app import TrackbotApp, serve_in_thread

    # Slack arrives over the socket; the webhook and health checks still need HTTP.
    app = TrackbotApp(Services.from_settings(settings))
    _server, url = serve_in_thread(app, args.host, args.port)
    logging.getLogger("trackbot").info("Socket Mode; serving /github/webhook and /healthz on %s", url)
    SocketModeHandler(app.bolt, settings.slack_app_token.get_secret_value()).start()
    return 0


def _serve_gunicorn(host: str, port: int, workers: int) -> int:
    from gunicorn.app.base import BaseApplication

    from handlers.app import create_app

    class _Gunicorn(BaseApplication):
        def load_config(self) -> None:
            for key, value in {
                "bind": f"{host}:{port}",
                "workers": workers,
                "threads": 8,
                "timeout": 30,
                "accesslog": None,
            }.items():
                self.cfg.set(key, value)

        def load(self) -> object:
            return create_app()

    _Gunicorn().run()
    return 0


def cmd_console(args: argparse.Namespace) -> int:
    """The local stack with a console."""
    from bot.local.console import TOUR, run_console

    logging.basicConfig(level=logging.WARNING)
    lines = list(TOUR) if args.tour else None
    return run_console(
        lines,
        sys.stdout,
        repo=args.repo,
        agent=args.agent,
        work_dir=args.work_dir,
        interactive=sys.stdin.isatty() and not args.tour,
    )


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `trackbot` console script."""
    parser = argparse.ArgumentParser(prog="trackbot", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    console = sub.add_parser("console", help="the whole bot locally, against local Slack and GitHub stand-ins")
    console.add_argument("--repo", type=Path, help="a local git repository (bare or not) whose main is upstream")
    console.add_argument("--agent", help="the agent command (default: the sample agent)")
    console.add_argument("--work-dir", type=Path, help="keep clones and Redis data here (default: a temp dir)")
    console.add_argument("--tour", action="store_true", help="play the scripted tour instead of reading stdin")
    console.set_defaults(func=cmd_console)
    worker = sub.add_parser("worker", help="run a queue worker")
    worker.add_argument("--burst", action="store_true", help="exit when the queue is empty")
    worker.set_defaults(func=cmd_worker)
    web = sub.add_parser("web", help="serve /slack/events and /github/webhook")
    web.add_argument("--host", default="0.0.0.0")
    web.add_argument("--port", type=int, default=int(os.environ.get("PORT", "3000")))
    web.add_argument("--workers", type=int, default=2, help="gunicorn worker processes (HTTP mode)")
    web.set_defaults(func=cmd_web)
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except ConfigError as error:
        print(error, file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
