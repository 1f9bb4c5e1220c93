"""How fast trackbot acks Slack, against a bare Bolt app that only acks, on the same stack in the same run.

Slack gives an app 3 seconds to ack a slash command, then shows the user an error and retries.
This starts a Slack twin, a GitHub twin over a generated sample repository and a real Redis (the
embedded one, or --redis-url), then two gunicorn servers with the same worker and thread counts:

- trackbot: `handlers.app:create_app()`, the production HTTP app, configured through the
  environment (`bot.local.console.settings_environment`);
- bare: a Bolt app on the same Slack twin whose `/track` listener only acks.

From a second process (threads, one connection per request), it sends `--requests` signed
`/track status` and `/track run` requests (alternating), `--concurrency` at a time, to each:
first the bare app, then trackbot. Every `/track run` after the first is refused (the repository
is busy): that is realistic. No RQ worker runs, so the first run stays queued. The latency is
from sending the request to reading the ack (the HTTP answer). It then waits until trackbot
has answered every command through its response_url and says how long that took.

The last line is machine-readable:

    p50_ms=<trackbot p50> p99_ms=<trackbot p99> bare_p99_ms=<bare p99> ratio=<p99/bare p99>

Usage: .venv/bin/python bench/ack_latency.py [--requests 2000] [--concurrency 50] [--workers 2] [--threads 8]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from collections import Counter
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from bot.adapters.redis_server import EmbeddedRedis
from bot.config import Settings
from bot.local.console import CHANNEL_ID, CHANNEL_NAME, USERS, settings_environment
from bot.local.github_api import GitHubTwin
from bot.local.sample import create_sample_repo
from bot.local.slack_api import SlackTwin
from bot.local.slack_requests import signed_headers, slash_command_body

ROOT = Path(__file__).resolve().parent.parent
ALICE = USERS["alice"]


# -- the bare app (gunicorn imports this module from bench/) ------------------------------------


def bare_app() -> Any:
    """A Bolt app whose `/track` only acks, configured like trackbot's (same client, same signing)."""
    from slack_bolt import App
    from slack_bolt.adapter.wsgi import SlackRequestHandler
    from slack_sdk import WebClient

    client = WebClient(token=os.environ["SLACK_BOT_TOKEN"], base_url=os.environ["SLACK_API_URL"], timeout=15)
    app = App(client=client, signing_secret=os.environ["SLACK_SIGNING_SECRET"], process_before_response=False)

    @app.command("/track")
    def track(ack: Any) -> None:
        ack()

    return SlackRequestHandler(app, path="/slack/events")


# -- the client (a second process) ---------------------------------------------------------------


def run_client() -> int:
    """Read the job from stdin, send every request, print the latencies (ms) and statuses as JSON."""
    job = json.load(sys.stdin)
    url = urllib.parse.urlsplit(job["url"])
    bodies: list[str] = job["bodies"]
    secret: str = job["secret"]
    latencies: list[float] = [0.0] * len(bodies)
    statuses: list[int] = [0] * len(bodies)
    lock = threading.Lock()
    next_index = 0

    def worker() -> None:
        nonlocal next_index
        while True:
            with lock:
                index = next_index
                next_index += 1
            if index >= len(bodies):
                return
            body = bodies[index]
            headers = signed_headers(secret, body)
            started = time.perf_counter()
            try:
                connection = http.client.HTTPConnection(url.hostname, url.port, timeout=60)
                connection.request("POST", url.path, body=body.encode(), headers=headers)
                response = connection.getresponse()
                response.read()
                statuses[index] = response.status
                connection.close()
            except OSError:
                statuses[index] = -1
            latencies[index] = (time.perf_counter() - started) * 1000

    threads = [threading.Thread(target=worker) for _ in range(job["concurrency"])]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    json.dump({"latencies": latencies, "statuses": statuses, "wall_s": time.perf_counter() - started}, sys.stdout)
    return 0


def send_from_client(url: str, secret: str, bodies: list[str], concurrency: int) -> dict[str, Any]:
    """Run the client process on `bodies`; its results."""
    job = json.dumps({"url": url, "secret": secret, "bodies": bodies, "concurrency": concurrency})
    done = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--client"],
        input=job,
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    )
    return dict(json.loads(done.stdout))


# -- the parent ----------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_gunicorn(
    app: str, port: int, env: dict[str, str], args: argparse.Namespace, log: Path
) -> subprocess.Popen[bytes]:
    """gunicorn as `trackbot web` runs it (gthread workers), serving `app` on `port`."""
    command = [
        sys.executable,
        "-m",
        "gunicorn",
        "--bind",
        f"127.0.0.1:{port}",
        "--workers",
        str(args.workers),
        "--threads",
        str(args.threads),
        "--timeout",
        "30",
        "--pythonpath",
        f"{ROOT},{ROOT / 'bench'}",
        app,
    ]
    out = log.open("ab")
    return subprocess.Popen(command, env=env, cwd=log.parent, stdout=out, stderr=subprocess.STDOUT)


def wait_listening(port: int, process: subprocess.Popen[bytes], log: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"gunicorn exited ({process.returncode}):\n{log.read_text()[-3000:]}")
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            connection.request("GET", "/healthz")
            connection.getresponse().read()
            connection.close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"gunicorn did not listen on {port} within {timeout}s")


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (nearest rank)."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def answers(slack: SlackTwin) -> int:
    return sum(1 for m in slack.snapshot() if m.kind == "response_url")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers (trackbot web's default)")
    parser.add_argument("--threads", type=int, default=8, help="gunicorn threads per worker (trackbot web's)")
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--redis-url", help="a Redis to use (it gets trackbot keys); default: an embedded one")
    parser.add_argument("--client", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.client:
        return run_client()

    work = Path(tempfile.mkdtemp(prefix="trackbot-ack-bench-"))
    embedded: EmbeddedRedis | None = None
    servers: list[subprocess.Popen[bytes]] = []
    slack: SlackTwin | None = None
    github: GitHubTwin | None = None
    try:
        if args.redis_url:
            redis_url = args.redis_url
        else:
            embedded = EmbeddedRedis(work / "redis")
            redis_url = embedded.start()
        repo = create_sample_repo(work / "sample-upstream.git")
        full_name = "local/sample-upstream"
        tokens = {k: secrets.token_hex(16) for k in ("slack", "signing", "github", "webhook")}
        tokens["slack"] = "xoxb-bench-" + tokens["slack"]
        slack = SlackTwin(tokens["slack"], {uid: name for name, uid in USERS.items()}).start()
        github = GitHubTwin(repo, full_name=full_name, token=tokens["github"], webhook_secret=tokens["webhook"]).start()
        settings = Settings(
            slack_bot_token=SecretStr(tokens["slack"]),
            slack_signing_secret=SecretStr(tokens["signing"]),
            slack_api_url=slack.api_url,
            github_token=SecretStr(tokens["github"]),
            github_repository=full_name,
            github_api_url=github.api_url,
            github_webhook_secret=SecretStr(tokens["webhook"]),
            git_url=str(repo),
            maintainers=[ALICE],
            runners=[ALICE, USERS["bob"]],
            redis_url=redis_url,
            work_dir=work / "bot",
            github_write_interval_s=0,
        )
        env = {**os.environ, **settings_environment(settings), "REDIS_URL": redis_url}
        ports = {"trackbot": free_port(), "bare": free_port()}
        apps = {"trackbot": "handlers.app:create_app()", "bare": "ack_latency:bare_app()"}
        for name in ("trackbot", "bare"):
            log = work / f"{name}.log"
            servers.append(start_gunicorn(apps[name], ports[name], env, args, log))
            wait_listening(ports[name], servers[-1], log)

        def bodies(count: int) -> list[str]:
            texts = ("status", "run")
            return [
                slash_command_body(
                    "/track",
                    texts[n % 2],
                    ALICE,
                    "alice",
                    CHANNEL_ID,
                    CHANNEL_NAME,
                    slack.new_response_url(CHANNEL_ID, ALICE),
                )
                for n in range(count)
            ]

        cpus = os.cpu_count()
        print(
            f"{platform.platform()}, {cpus} CPUs, Python {platform.python_version()}; gunicorn "
            f"{args.workers} workers x {args.threads} threads each; {args.requests} requests, "
            f"{args.concurrency} at a time, from a second process"
        )
        results: dict[str, dict[str, Any]] = {}
        for name in ("bare", "trackbot"):
            url = f"http://127.0.0.1:{ports[name]}/slack/events"
            before = answers(slack)
            send_from_client(url, tokens["signing"], bodies(args.warmup), min(args.concurrency, args.warmup))
            if name == "trackbot":  # let the warm-up's answers finish before measuring
                deadline = time.monotonic() + 120
                while answers(slack) < before + args.warmup and time.monotonic() < deadline:
                    time.sleep(0.05)
            before = answers(slack)
            seen = len(slack.snapshot())
            started = time.monotonic()
            results[name] = send_from_client(url, tokens["signing"], bodies(args.requests), args.concurrency)
            if name == "trackbot":
                deadline = time.monotonic() + 1800
                while answers(slack) < before + args.requests and time.monotonic() < deadline:
                    time.sleep(0.1)
                results[name]["answered"] = answers(slack) - before
                results[name]["answered_s"] = time.monotonic() - started
                results[name]["run_answers"] = Counter(
                    "queued"
                    if m.text.startswith("Queued")
                    else "busy"
                    if "One run per repository" in m.text
                    else "other"
                    for m in slack.snapshot()[seen:]
                    if m.kind == "response_url" and m.response_type == "ephemeral"
                )

        for name in ("bare", "trackbot"):
            result = results[name]
            latencies = result["latencies"]
            statuses = Counter(result["statuses"])
            line = (
                f"{name:8}: p50 {percentile(latencies, 50):7.1f} ms  p90 {percentile(latencies, 90):7.1f} ms  "
                f"p99 {percentile(latencies, 99):7.1f} ms  max {max(latencies):7.1f} ms  "
                f"mean {statistics.fmean(latencies):7.1f} ms  over 3 s: {sum(1 for x in latencies if x > 3000)}  "
                f"HTTP {dict(statuses)}  sent in {result['wall_s']:.1f} s"
            )
            if "answered" in result:
                line += f"; {result['answered']} answers in {result['answered_s']:.1f} s"
            print(line)
        print(f"trackbot's answers to the measured /track run: {dict(results['trackbot']['run_answers'])}")
        p50 = percentile(results["trackbot"]["latencies"], 50)
        p99 = percentile(results["trackbot"]["latencies"], 99)
        bare_p99 = percentile(results["bare"]["latencies"], 99)
        print(f"p50_ms={p50:.1f} p99_ms={p99:.1f} bare_p99_ms={bare_p99:.1f} ratio={p99 / bare_p99:.2f}")
        return 0
    finally:
        for server in servers:
            server.terminate()
        for server in servers:
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
        if github is not None:
            github.stop()
        if slack is not None:
            slack.stop()
        if embedded is not None:
            embedded.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
