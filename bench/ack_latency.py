"""How fast trackbot acks Slack, against a bare Bolt app that only acks, on the same stack in the same run.

Slack gives an app 3 seconds to ack a slash command, then shows the user an error and retries.
This starts a Slack twin, a GitHub twin over a generated sample repository and a real Redis (the
embedded one, or --redis-url), then two gunicorn servers with the same worker and thread counts:

- trackbot: `handlers.app:create_app()`, the production HTTP app, configured through the
  environment (`bot.local.console.settings_environment`);
- bare: a Bolt app on the same Slack twin whose `/track` listener only acks;

and one `trackbot worker`, which answers the commands trackbot's web app acked and queued, as in
production (handlers/slack_work.py). Its agent sleeps, so the first run stays running.

From a second process (threads, one connection per request), it sends `--requests` signed
`/track status` and `/track run` requests (alternating), `--concurrency` at a time. Every `/track
run` after the first is refused (the repository is busy): that is realistic. The latency is from
sending a request to reading its ack (the HTTP answer). Each of `--rounds` rounds sends three bursts:

1. to the bare app;
2. to trackbot, with the worker stopped (SIGSTOP) during the burst: trackbot's web app acks and
   queues as always, and the worker answers everything once it is continued. This is the HTTP
   stack's own figure: in production the workers run in their own containers or hosts;
3. to trackbot with the worker answering during the burst, on the same cores as everything else
   (the client, both apps, the twins, Redis): on 2 cores that work takes CPU from the acks.

After each trackbot burst it waits until every command is answered through its response_url and
says how long that took. The figures are the medians of the rounds' p50 and p99 (single rounds
swing by 2x on a shared 2-core machine). The last two lines:

    the worker answering during the burst, on the same N cores: p50_ms=<x> p99_ms=<y> ratio=<y/bare p99>
    p50_ms=<trackbot p50> p99_ms=<trackbot p99> bare_p99_ms=<bare p99> ratio=<p99/bare p99>

Usage: .venv/bin/python bench/ack_latency.py [--requests 2000] [--concurrency 50] [--rounds 5]
       [--workers 2] [--threads 8] [--quick]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import secrets
import shutil
import signal
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
from redis import Redis

from bot.adapters.redis_server import EmbeddedRedis
from bot.config import Settings
from bot.local.console import CHANNEL_ID, CHANNEL_NAME, USERS, settings_environment
from bot.local.github_api import GitHubTwin
from bot.local.sample import create_sample_repo
from bot.local.slack_api import SlackTwin
from bot.local.slack_requests import signed_headers, slash_command_body
from bot.store import RunStore
from handlers.slack_work import LISTENING_KEY

ROOT = Path(__file__).resolve().parent.parent
LABELS = {
    "bare": "bare app                  ",
    "acks": "trackbot                  ",
    "both": "trackbot, worker answering",
}
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


def start_worker(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """`trackbot worker` in its own process group (its agent is stopped with it)."""
    out = log.open("ab")
    return subprocess.Popen(
        [sys.executable, "-m", "bot.cli", "worker"],
        env=env,
        cwd=ROOT,
        stdout=out,
        stderr=subprocess.STDOUT,
    )


def wait_answering(redis_url: str, process: subprocess.Popen[bytes], log: Path, timeout: float = 60) -> None:
    """Until the worker says it answers Slack work."""
    redis = Redis.from_url(redis_url)
    deadline = time.monotonic() + timeout
    while not redis.exists(LISTENING_KEY):
        if process.poll() is not None:
            raise RuntimeError(f"the worker exited ({process.returncode}):\n{log.read_text()[-3000:]}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"the worker did not answer Slack work within {timeout}s")
        time.sleep(0.1)
    redis.close()


def stop_the_run(url: str, secret: str, slack: SlackTwin, redis_url: str, timeout: float = 60) -> None:
    """`/track cancel`, as a user would: the sleeping agent is stopped and the worker can exit."""
    body = slash_command_body(
        "/track", "cancel", ALICE, "alice", CHANNEL_ID, CHANNEL_NAME, slack.new_response_url(CHANNEL_ID, ALICE)
    )
    send_from_client(url, secret, [body], 1)
    store = RunStore(Redis.from_url(redis_url))
    deadline = time.monotonic() + timeout
    while store.active_runs() and time.monotonic() < deadline:
        time.sleep(0.2)


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
    parser.add_argument("--rounds", type=int, default=5, help="measured rounds (bare, then trackbot); medians")
    parser.add_argument("--redis-url", help="a Redis to use (it gets trackbot keys); default: an embedded one")
    parser.add_argument("--quick", action="store_true", help="a check that it works: 200 requests, 1 round")
    parser.add_argument("--client", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quick:
        args.requests, args.concurrency, args.rounds, args.warmup = 200, 20, 1, 10
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
            agent_command="sleep 3600",
            cancel_grace_s=1,
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
        servers.append(start_worker(env, work / "worker.log"))
        wait_answering(redis_url, servers[-1], work / "worker.log")

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
        worker = servers[-1]

        def measure(name: str, answering: bool = True) -> dict[str, Any]:
            """One measured burst at `name`; for trackbot, also until every command is answered.

            `answering=False` stops the worker (SIGSTOP) during the burst: the web app acks and
            queues as usual, and the worker answers everything once it is continued."""
            url = f"http://127.0.0.1:{ports[name]}/slack/events"
            before, seen, started = answers(slack), len(slack.snapshot()), time.monotonic()
            if not answering:
                worker.send_signal(signal.SIGSTOP)
            try:
                result = send_from_client(url, tokens["signing"], bodies(args.requests), args.concurrency)
            finally:
                if not answering:
                    worker.send_signal(signal.SIGCONT)
            if name == "trackbot":
                deadline = time.monotonic() + 1800
                while answers(slack) < before + args.requests and time.monotonic() < deadline:
                    time.sleep(0.1)
                result["answered"] = answers(slack) - before
                result["answered_s"] = time.monotonic() - started
                result["run_answers"] = Counter(
                    "queued"
                    if m.text.startswith("Queued")
                    else "busy"
                    if "One run per repository" in m.text
                    else "other"
                    for m in slack.snapshot()[seen:]
                    if m.kind == "response_url" and m.response_type == "ephemeral"
                )
            return result

        # Warm-up: both apps, and trackbot's first /track run (it stays running: the agent sleeps).
        for name in ("bare", "trackbot"):
            before = answers(slack)
            url = f"http://127.0.0.1:{ports[name]}/slack/events"
            send_from_client(url, tokens["signing"], bodies(args.warmup), min(args.concurrency, args.warmup))
            deadline = time.monotonic() + 120
            while name == "trackbot" and answers(slack) < before + args.warmup and time.monotonic() < deadline:
                time.sleep(0.05)

        figures: dict[str, dict[str, list[float]]] = {k: {"p50": [], "p99": []} for k in ("bare", "acks", "both")}
        for round_ in range(1, args.rounds + 1):
            for label, name, answering in (
                ("bare", "bare", True),
                ("acks", "trackbot", False),
                ("both", "trackbot", True),
            ):
                result = measure(name, answering)
                latencies = result["latencies"]
                figures[label]["p50"].append(percentile(latencies, 50))
                figures[label]["p99"].append(percentile(latencies, 99))
                line = (
                    f"round {round_} {LABELS[label]}: p50 {percentile(latencies, 50):6.1f} ms  "
                    f"p99 {percentile(latencies, 99):6.1f} ms  max {max(latencies):6.1f} ms  "
                    f"over 3 s: {sum(1 for x in latencies if x > 3000)}  "
                    f"HTTP {dict(Counter(result['statuses']))}  sent in {result['wall_s']:.1f} s"
                )
                if name == "trackbot":
                    line += (
                        f"; {result['answered']} answered in {result['answered_s']:.1f} s "
                        f"(/track run: {dict(result['run_answers'])})"
                    )
                print(line, flush=True)

        def median(label: str, q: str) -> float:
            return statistics.median(figures[label][q])

        bare_p99 = median("bare", "p99")
        print(f"medians of {args.rounds} rounds:")
        print(
            f"the worker answering during the burst, on the same {os.cpu_count()} cores: "
            f"p50_ms={median('both', 'p50'):.1f} p99_ms={median('both', 'p99'):.1f} "
            f"ratio={median('both', 'p99') / bare_p99:.2f}"
        )
        p50, p99 = median("acks", "p50"), median("acks", "p99")
        print(f"p50_ms={p50:.1f} p99_ms={p99:.1f} bare_p99_ms={bare_p99:.1f} ratio={p99 / bare_p99:.2f}")
        stop_the_run(f"http://127.0.0.1:{ports['trackbot']}/slack/events", tokens["signing"], slack, redis_url)
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
