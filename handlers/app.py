"""The HTTP app: `/slack/events`, `/github/webhook`, `/healthz`, `/readyz`, `/metrics`.

A plain WSGI app (gunicorn in production). `/healthz` says the process serves; `/readyz` that Redis
answers and the Slack and GitHub credentials were found valid (see bot/doctor.py: Readiness);
`/metrics` is the Prometheus exposition (bot/metrics.py).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from socketserver import ThreadingMixIn
from typing import TYPE_CHECKING, Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from redis import RedisError
from slack_bolt.adapter.wsgi import SlackRequestHandler

from bot import metrics
from bot.config import load_settings
from bot.doctor import Readiness
from bot.metrics import BufferedMetrics
from bot.services import Services
from handlers.github import MAX_BODY, GitHubWebhook
from handlers.slack import build_slack_app

if TYPE_CHECKING:
    from wsgiref.types import StartResponse, WSGIEnvironment

log = logging.getLogger(__name__)


class TrackbotApp:
    """Routes requests to Slack's Bolt handler, the GitHub webhook, or health."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self.bolt = build_slack_app(services)
        self.slack = SlackRequestHandler(self.bolt, path="/slack/events")
        self.ack_metrics = BufferedMetrics(services.redis)  # no Redis round trip of its own per ack
        self.github = GitHubWebhook(services)
        self.readiness = Readiness(
            services.redis, services.slack_client, services.github, services.settings, services.redact
        )

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        method = environ.get("REQUEST_METHOD", "GET")
        if path == "/slack/events":
            started = time.perf_counter()
            acked = self.slack(environ, start_response)  # Bolt acks; the work is queued for the workers
            self.ack_metrics.slack_ack(time.perf_counter() - started)
            return acked
        if path == "/github/webhook" and method == "POST":
            length = int(environ.get("CONTENT_LENGTH") or 0)
            if length > MAX_BODY:
                return _plain(start_response, 413, "payload too large")
            body = environ["wsgi.input"].read(length) if length else b""
            headers = {k[5:].replace("_", "-"): v for k, v in environ.items() if k.startswith("HTTP_")}
            answer = self.github.handle(headers, body)
            return _plain(start_response, answer.status, answer.body)
        if path == "/healthz":
            return _plain(start_response, 200, "ok")
        if path == "/readyz":
            ready, text = self.readiness.check()
            return _plain(start_response, 200 if ready else 503, text)
        if path == "/metrics":
            return self._metrics(start_response)
        return _plain(start_response, 404, "not found")

    def close(self) -> None:
        """Write the acks' metrics still added up in memory (before Redis or the process goes away)."""
        self.ack_metrics.close()

    def _metrics(self, start_response: StartResponse) -> list[bytes]:
        try:
            body, content_type = metrics.render(self.services.redis, self.services.queue)
        except RedisError as error:
            return _plain(start_response, 503, f"metrics live in Redis, which does not answer: {error}")
        start_response("200 OK", [("Content-Type", content_type), ("Content-Length", str(len(body)))])
        return [body]


_REASONS = {
    200: "OK",
    202: "Accepted",
    400: "Bad Request",
    401: "Unauthorized",
    404: "Not Found",
    413: "Payload Too Large",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


def _plain(start_response: StartResponse, status: int, text: str) -> list[bytes]:
    body = (text + "\n").encode()
    start_response(
        f"{status} {_REASONS.get(status, 'Status')}",
        [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body)))],
    )
    return [body]


def create_app() -> TrackbotApp:
    """The app from the environment (gunicorn: `handlers.app:create_app()`)."""
    return TrackbotApp(Services.from_settings(load_settings()))


class _ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        log.debug("http: " + format, *args)


def serve_in_thread(app: Any, host: str = "127.0.0.1", port: int = 0) -> tuple[WSGIServer, str]:
    """Serve a WSGI app on a background thread (local stack and tests). Returns the server and its URL."""
    server = make_server(host, port, app, server_class=_ThreadingWSGIServer, handler_class=_QuietHandler)
    threading.Thread(target=server.serve_forever, daemon=True, name="trackbot-http").start()
    return server, f"http://{host}:{server.server_port}"
