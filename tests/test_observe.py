"""What an operator watches: `/readyz`, `/metrics`, worker heartbeats, JSON logs.

Real parts only: the local stack (twins, the bot's HTTP app, a real worker process, real Redis);
`trackbot web` itself under gunicorn for the process-level checks.
"""

from __future__ import annotations

import io
import json
import logging
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr
from redis import Redis

from bot import metrics
from bot.config import Settings
from bot.doctor import Readiness
from bot.jobqueue import make_queue
from bot.local.console import LocalStack, settings_environment
from bot.local.github_api import GitHubTwin
from bot.local.sample import create_sample_repo
from bot.local.slack_api import SlackTwin
from bot.logs import log_context, setup_logging
from bot.redact import Redactor
from bot.runs import Run, RunState, StepResult
from bot.services import Services
from handlers.app import TrackbotApp, serve_in_thread

MakeStack = Callable[..., LocalStack]


def get(url: str) -> tuple[int, str, str]:
    """GET a URL: status, content type, body."""
    try:
        with urllib.request.urlopen(url, timeout=15) as response:
            return response.status, response.headers.get("Content-Type", ""), response.read().decode()
    except urllib.error.HTTPError as error:
        with error:
            return error.code, error.headers.get("Content-Type", ""), error.read().decode()


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a Prometheus exposition: (name, sorted labels) -> value."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def worker_env(stack: LocalStack) -> dict[str, str]:
    assert stack.services is not None
    base = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "GITHUB_", "TRACKBOT_"))}
    return {**base, **settings_environment(stack.services.settings)}


# == /readyz ===================================================================================


def test_readyz_is_ready_and_checks_the_tokens_only_once(make_stack: MakeStack) -> None:
    stack = make_stack()
    assert stack.slack is not None and stack.github is not None and stack.services is not None
    repo = stack.services.settings.github_repository

    def auth_tests() -> int:
        assert stack.slack is not None
        return sum(1 for method, _ in stack.slack.calls if method == "auth.test")

    def repo_reads() -> int:
        assert stack.github is not None
        return sum(1 for r in stack.github.requests if r.method == "GET" and r.path == f"/repos/{repo}")

    assert get(stack.bot_url + "/healthz")[0] == 200
    slack_before, github_before = auth_tests(), repo_reads()
    status, content_type, body = get(stack.bot_url + "/readyz")
    assert status == 200, body
    assert content_type.startswith("text/plain")
    lines = body.splitlines()
    assert lines[0] == "ready"
    assert "ok   redis: answers PING" in lines
    assert any(line.startswith("ok   slack: signed in as trackbot") for line in lines), body
    assert f"ok   github {repo}: credentials read {repo}" in lines
    assert auth_tests() == slack_before + 1 and repo_reads() == github_before + 1

    for _ in range(3):
        assert get(stack.bot_url + "/readyz")[0] == 200
    # Found valid once: the tokens are not checked again; Redis is, on every call.
    assert auth_tests() == slack_before + 1 and repo_reads() == github_before + 1


@pytest.fixture
def twins(tmp_path: Path) -> Iterator[tuple[SlackTwin, GitHubTwin]]:
    slack = SlackTwin("xoxb-good-token", {"U0ALICE": "alice"}).start()
    github = GitHubTwin(create_sample_repo(tmp_path / "upstream.git"), "acme/widgets", token="ghp_good" + "x" * 30)
    github.start()
    yield slack, github
    github.stop()
    slack.stop()


def offline_settings(slack: SlackTwin, github: GitHubTwin, tmp_path: Path, **changes: object) -> Settings:
    values: dict[str, object] = {
        "slack_bot_token": SecretStr(slack.bot_token),
        "slack_signing_secret": SecretStr("signing-secret"),
        "slack_api_url": slack.api_url,
        "github_token": SecretStr(github.token),
        "github_repository": github.full_name,
        "github_api_url": github.api_url,
        "github_webhook_secret": SecretStr("webhook-secret"),
        "maintainers": ["U0ALICE"],
        "redis_url": "redis://127.0.0.1:9/0",
        "work_dir": tmp_path / "work",
    }
    values.update(changes)
    return Settings(**values)  # type: ignore[arg-type]


def dead_redis() -> Redis:
    """A client of a Redis that is not there (port 9, discard: nothing listens)."""
    return Redis.from_url("redis://127.0.0.1:9/0", socket_connect_timeout=1, socket_timeout=1)


def test_readyz_answers_503_with_a_reason_per_failing_check(
    twins: tuple[SlackTwin, GitHubTwin], tmp_path: Path
) -> None:
    slack, github = twins
    settings = offline_settings(slack, github, tmp_path, github_token=SecretStr("ghp_revoked" + "y" * 30))
    services = Services(settings=settings, redis=dead_redis())
    server, url = serve_in_thread(TrackbotApp(services))
    try:
        status, content_type, body = get(url + "/readyz")
        assert status == 503 and content_type.startswith("text/plain")
        lines = body.splitlines()
        assert lines[0] == "not ready"
        [redis_line] = [line for line in lines if line.startswith("FAIL redis:")]
        assert "does not answer" in redis_line and "check REDIS_URL" in redis_line
        assert any(line.startswith("ok   slack:") for line in lines), body
        [github_line] = [line for line in lines if line.startswith("FAIL github acme/widgets:")]
        assert "401 Bad credentials" in github_line and "check GITHUB_TOKEN" in github_line
        assert "ghp_revoked" not in body

        # Metrics live in Redis: without it, /metrics says so instead of showing zeros.
        status, _, body = get(url + "/metrics")
        assert status == 503 and "Redis" in body
    finally:
        server.shutdown()
        server.server_close()


def test_readiness_reports_a_refused_slack_token_and_tries_again_later(
    twins: tuple[SlackTwin, GitHubTwin], tmp_path: Path, redis: Redis
) -> None:
    # (`trackbot web` itself does not start with a refused Slack token: Bolt checks it at start.)
    slack, github = twins
    settings = offline_settings(slack, github, tmp_path)
    services = Services(settings=settings, redis=redis)
    from slack_sdk import WebClient

    bad_client = WebClient(token="xoxb-not-the-token", base_url=slack.api_url)
    readiness = Readiness(redis, bad_client, services.github, settings, services.redact)
    ready, text = readiness.check()
    assert not ready
    assert "FAIL slack: auth.test refused SLACK_BOT_TOKEN (invalid_auth)" in text
    assert "OAuth & Permissions" in text
    calls = sum(1 for method, _ in slack.calls if method == "auth.test")
    readiness.check()
    assert sum(1 for method, _ in slack.calls if method == "auth.test") == calls  # a failure is kept a while
    readiness.RETRY_FAILED_S = 0
    readiness.check()
    assert sum(1 for method, _ in slack.calls if method == "auth.test") == calls + 1  # ...then tried again


# == /metrics ==================================================================================


def test_metrics_show_runs_steps_waits_acks_and_api_errors_from_every_process(make_stack: MakeStack) -> None:
    stack = make_stack()
    assert stack.slack is not None and stack.github is not None and stack.services is not None
    repo = stack.services.settings.github_repository
    # A GitHub error in the web process (reading the knob for /track status)...
    stack.github.fail_next(1, status=502, method="GET", path_prefix=f"/repos/{repo}/contents")
    stack.handle("/track status")
    # ...and a Slack error in the worker process (one progress update is rate limited).
    stack.slack.fail_next("chat.update", error="ratelimited", status=429)
    stack.handle("/track run")
    stack.handle(":wait 120")
    run = stack.services.store.latest(str(repo))
    assert run is not None and run.state is RunState.PR_OPEN
    # The web process adds its acks up and writes them every second (bot.metrics.BufferedMetrics).
    deadline = time.monotonic() + 5
    while True:
        status, content_type, body = get(stack.bot_url + "/metrics")
        assert status == 200 and content_type.startswith("text/plain; version=")
        found = samples(body)
        if ("trackbot_slack_ack_seconds_count", ()) in found or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert found[("trackbot_runs_total", (("state", "pr_open"),))] == 1
    for step in ("preflight", "agent", "pull_request"):
        assert found[("trackbot_step_duration_seconds_count", (("step", step),))] == 1, step
        assert found[("trackbot_step_duration_seconds_bucket", (("le", "+Inf"), ("step", step)))] == 1
    agent_seconds = next(s.duration_s for s in run.steps if s.name == "agent")
    assert found[("trackbot_step_duration_seconds_sum", (("step", "agent"),))] == pytest.approx(agent_seconds)
    assert found[("trackbot_run_queue_wait_seconds_count", ())] == 1
    assert found[("trackbot_slack_ack_seconds_count", ())] >= 2  # /track status, /track run
    assert found[("trackbot_api_errors_total", (("kind", "502"), ("service", "github")))] == 1
    assert found[("trackbot_api_errors_total", (("kind", "ratelimited"), ("service", "slack")))] == 1
    assert found[("trackbot_queue_depth", ())] == 0
    assert found[("trackbot_runs_running", ())] == 0
    assert found[("trackbot_workers", ())] == 1
    assert found[("trackbot_slack_work_waiting", ())] == 0  # every command was answered
    [(labels, age)] = [(k[1], v) for k, v in found.items() if k[0] == "trackbot_worker_heartbeat_age_seconds"]
    assert dict(labels)["hostname"] == socket.gethostname() and dict(labels)["state"] == "idle"
    assert 0 <= age < 480


def test_queue_depth_and_histograms_are_computed_from_redis(redis: Redis) -> None:
    queue = make_queue(redis)
    for n in range(3):
        queue.enqueue("bot.jobs.run_track", f"run-{n}", job_id=f"run-{n}")
    # Two processes' observations add up: each records into the same hashes.
    web, worker = metrics.Metrics(redis), metrics.Metrics(Redis(connection_pool=redis.connection_pool))
    web.slack_ack(0.004)
    web.slack_ack(0.2)
    worker.slack_ack(9.0)
    run = Run(repo="acme/widgets", track=1, slug="s", doc="d.md", branch="b", requested_by="U1", channel="C1")
    run.state, run.started_at = RunState.STOPPED, run.created_at + 2.5
    run.steps = [StepResult(name="agent", outcome="stopped", summary="", duration_s=42.0)]
    worker.run_finished(run)

    found = samples(metrics.render(redis, queue)[0].decode())
    assert found[("trackbot_queue_depth", ())] == 3
    assert found[("trackbot_workers", ())] == 0
    bucket = "trackbot_slack_ack_seconds_bucket"
    assert found[(bucket, (("le", "0.005"),))] == 1
    assert found[(bucket, (("le", "0.25"),))] == 2
    assert found[(bucket, (("le", "5.0"),))] == 2
    assert found[(bucket, (("le", "+Inf"),))] == 3
    assert found[("trackbot_slack_ack_seconds_sum", ())] == pytest.approx(9.204)
    assert found[("trackbot_runs_total", (("state", "stopped"),))] == 1
    assert found[("trackbot_step_duration_seconds_bucket", (("le", "60.0"), ("step", "agent")))] == 1
    assert found[("trackbot_step_duration_seconds_bucket", (("le", "30.0"), ("step", "agent")))] == 0
    assert found[("trackbot_run_queue_wait_seconds_bucket", (("le", "5.0"),))] == 1
    assert found[("trackbot_run_queue_wait_seconds_bucket", (("le", "2.0"),))] == 0


def test_recording_a_metric_never_fails_the_caller() -> None:
    recorder = metrics.Metrics(dead_redis())
    recorder.slack_ack(0.1)  # Redis is not there: the observation is lost, nothing raises
    recorder.api_error("github", "502")


# == worker heartbeats =========================================================================


def test_worker_check_passes_while_this_hosts_worker_keeps_its_heartbeat(make_stack: MakeStack) -> None:
    stack = make_stack()
    env = worker_env(stack)
    command = [sys.executable, "-m", "bot.cli", "worker", "--check"]
    deadline = time.monotonic() + 30
    while True:
        done = subprocess.run(command, env=env, cwd=stack.work_dir, capture_output=True, text=True, timeout=60)
        if done.returncode == 0 or time.monotonic() > deadline:
            break
        time.sleep(0.2)  # the worker process may still be registering
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.startswith("ok   worker: ") and socket.gethostname() in done.stdout

    assert stack.worker is not None
    stack.worker.terminate()  # a warm shutdown unregisters the worker
    stack.worker.wait(timeout=60)
    done = subprocess.run(command, env=env, cwd=stack.work_dir, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert done.stdout.startswith("FAIL worker: no worker of ")


# == logs ======================================================================================


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers, root.level = handlers, level


def test_json_logs_carry_the_run_and_pass_the_redactor(
    capsys: pytest.CaptureFixture[str], restore_logging: None
) -> None:
    secret = "hunter2-the-webhook-secret"
    setup_logging(Redactor([secret]), "json")
    log = logging.getLogger("bot.test")
    log.info("outside any run")
    with log_context(run_id="run-1", repo="acme/widgets", track=9):
        log.warning("pushing with %s", secret, extra={"step": "push"})
        try:
            raise RuntimeError(f"git said {secret} and ghp_{'a' * 36}")
        except RuntimeError:
            log.exception("the push failed")
    log.info("after the run")

    err = capsys.readouterr().err
    assert secret not in err and "ghp_" + "a" * 36 not in err
    lines = [json.loads(line) for line in err.splitlines()]
    assert [line["message"] for line in lines] == [
        "outside any run",
        "pushing with [redacted]",
        "the push failed",
        "after the run",
    ]
    assert "run_id" not in lines[0] and "run_id" not in lines[3]
    for line in lines[1:3]:
        assert (line["run_id"], line["repo"], line["track"]) == ("run-1", "acme/widgets", 9)
    assert lines[1]["level"] == "warning" and lines[1]["logger"] == "bot.test" and lines[1]["step"] == "push"
    assert "RuntimeError: git said [redacted] and [redacted]" in lines[2]["exception"]
    assert lines[0]["time"].endswith("+00:00")


def test_text_logs_keep_the_context_too(capsys: pytest.CaptureFixture[str], restore_logging: None) -> None:
    setup_logging(Redactor(["s3cret-value"]), "text")
    with log_context(run_id="run-2", repo="acme/widgets", track=3):
        logging.getLogger("bot.test").info("token s3cret-value")
    err = capsys.readouterr().err
    assert "INFO bot.test: token [redacted] [run_id=run-2 repo=acme/widgets track=3]" in err


def test_the_workers_log_is_json_lines_with_each_runs_context(make_stack: MakeStack) -> None:
    stack = make_stack()
    stack.handle("/track run")
    stack.handle(":wait 120")
    assert stack.services is not None
    run = stack.services.store.latest(str(stack.services.settings.github_repository))
    assert run is not None
    stack.stop()  # flushes and closes the worker's log
    lines = [json.loads(line) for line in (stack.work_dir / "worker.log").read_text().splitlines() if line.strip()]
    assert lines and all({"time", "level", "logger", "message"} <= line.keys() for line in lines)
    [ended] = [line for line in lines if line["message"].startswith(f"run {run.id} ")]
    assert ended["logger"] == "bot.jobs" and ended["message"].endswith("ended pr_open")
    assert (ended["run_id"], ended["repo"], ended["track"]) == (run.id, run.repo, run.track)
    assert any(line["logger"].startswith("rq.") for line in lines)  # RQ's own lines are JSON too


def test_trackbot_web_serves_readyz_and_metrics_under_gunicorn_with_json_logs(
    make_stack: MakeStack, tmp_path: Path
) -> None:
    stack = make_stack()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    err = io.BytesIO()
    web = subprocess.Popen(
        [sys.executable, "-m", "bot.cli", "web", "--host", "127.0.0.1", "--port", str(port), "--workers", "2"],
        env=worker_env(stack),
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                if get(url + "/healthz")[0] == 200:
                    break
            except OSError:
                pass
            assert web.poll() is None and time.monotonic() < deadline, "trackbot web did not come up"
            time.sleep(0.1)
        status, _, body = get(url + "/readyz")
        assert status == 200 and body.startswith("ready\n"), body
        assert stack.services is not None
        deadline = time.monotonic() + 30
        while not metrics.worker_beats(stack.services.redis, stack.services.queue):  # the stack's worker
            assert time.monotonic() < deadline, "the worker did not register"
            time.sleep(0.05)
        status, _, body = get(url + "/metrics")
        assert status == 200 and samples(body)[("trackbot_workers", ())] == 1
    finally:
        web.terminate()
        out, _ = web.communicate(timeout=30)
        err.write(out)
    lines = [line for line in err.getvalue().decode().splitlines() if line.strip()]
    parsed = [json.loads(line) for line in lines]  # every line, gunicorn's included, is one JSON object
    assert any(line["logger"].startswith("gunicorn") for line in parsed), lines
