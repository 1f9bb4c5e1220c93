"""`trackbot console`: the real bot against local stand-ins for Slack and GitHub.

It starts the embedded Redis, a Slack Web API twin, a GitHub REST API twin over a local git
repository, the bot's real HTTP app and a real RQ worker process; then it reads console lines and
turns them into what Slack and GitHub would send: signed slash commands, signed button clicks,
merges that fire signed webhooks. Every message the bot posts is printed.
"""

from __future__ import annotations

import dataclasses
import os
import re
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TextIO

from pydantic import SecretStr

from bot.adapters.redis_server import masked_url
from bot.adapters.sandbox import probe as sandbox_probe
from bot.config import Settings
from bot.local.github_api import GitHubTwin
from bot.local.sample import create_sample_repo
from bot.local.slack_api import SlackMessage, SlackTwin
from bot.local.slack_requests import block_actions_body, post_signed, slash_command_body
from bot.services import Services, connect_redis

USERS = {"alice": "U0ALICE", "bob": "U0BOB"}
CHANNEL_ID, CHANNEL_NAME = "C0TRACKS", "tracks"
# The sample agent by its file (it needs only the standard library): the sandbox shows the files
# a command names, and the interpreter through TRACKBOT_SANDBOX_READ_ONLY.
SAMPLE_AGENT = f"{shlex.quote(sys.executable)} {shlex.quote(str(Path(__file__).with_name('sample_agent.py')))}"
# What the sandbox must show for this Python to run a script (a venv and the Python it was made from).
PYTHON_PATHS = sorted({Path(sys.prefix).resolve(), Path(sys.base_prefix).resolve()})
TOUR = [
    "/track status",
    "/track run",
    ":wait 300",
    ":merge 1",
    ":as bob",
    ":click approve_advance",
    ":as alice",
    ":click approve_advance",
    "/track status",
]
# With `--protect-main`, the approved advance opens its own PR (#2) that a maintainer merges.
PROTECTED_TOUR = [*TOUR[:-1], "/track status", ":merge 2", "/track status"]
HELP = """Console commands, one per line:
  /track ...            a slash command from the current user (e.g. /track status, /track run)
  :as USER              become alice (maintainer) or bob (may run, may not approve)
  :merge N              merge PR N in the local GitHub (it sends the signed webhook); also the
                        advance's own PR when main is protected (trackbot console --protect-main)
  :click ACTION_ID      press the latest button with that id (approve_advance, dismiss_advance)
  :wait [SECONDS]       wait until no run is queued or running (default 600)
  :help                 this text
  :quit                 shut everything down and exit"""


class ConsoleError(Exception):
    """A console line that cannot be carried out; printed, and the console goes on."""


def _display(text: str) -> str:
    names = {uid: name for name, uid in USERS.items()}
    return re.sub(r"<@([A-Z0-9]+)>", lambda m: "@" + names.get(m.group(1), m.group(1)), text)


class LocalStack:
    """Everything `trackbot console` runs, started and stopped together."""

    def __init__(
        self,
        out: TextIO,
        repo: Path | None = None,
        agent: str | None = None,
        work_dir: Path | None = None,
        settings: Mapping[str, Any] | None = None,
        protect_main: bool = False,
    ) -> None:
        """`settings`: Settings fields to set instead of the console's own (tests), in every process.
        `protect_main`: the local GitHub protects main like a ruleset needing one approving review."""
        self.protect_main = protect_main
        self.out = out
        self.overrides = dict(settings or {})
        self._own_work_dir = work_dir is None
        self.work_dir = Path(work_dir or tempfile.mkdtemp(prefix="trackbot-console-")).resolve()
        self.repo = repo.resolve() if repo else None
        self.agent = agent or SAMPLE_AGENT
        self.user = "alice"
        self._print_lock = threading.Lock()
        self._seen: dict[tuple[str, str], list[str]] = {}
        self.worker: subprocess.Popen[bytes] | None = None
        self.slack: SlackTwin | None = None
        self.github: GitHubTwin | None = None
        self.services: Services | None = None
        self.server: object | None = None
        self.bot_url = ""

    def say(self, text: str) -> None:
        """Print a line of the transcript."""
        with self._print_lock:
            try:
                print(text, file=self.out, flush=True)
            except (BrokenPipeError, ValueError):
                # A closed reader (`| head`) must not stop the console from shutting down cleanly.
                pass

    def _on_slack(self, message: SlackMessage, event: str) -> None:
        where = f"#{CHANNEL_NAME}" if message.channel == CHANNEL_ID else message.channel
        if message.thread_ts:
            where += f" thread {message.thread_ts}"
        if message.kind == "ephemeral" or message.response_type == "ephemeral":
            where += f", only @{self._name(message.user)} sees this"
        lines = _display(message.text).splitlines() or [""]
        key = (message.channel, message.ts)
        previous = self._seen.get(key)
        self._seen[key] = lines
        if event == "updated" and previous is not None:
            # A progress message changes a line or two per step: show what changed, not all of it.
            changed = [line for line in lines if line not in previous]
            if not changed:
                return
            self.say(f"[slack updated {message.ts}] [{where}]\n    " + "\n    ".join(changed))
        else:
            self.say(
                f"[slack {'updated' if event == 'updated' else 'posted'} {message.ts}] [{where}] trackbot:\n    "
                + "\n    ".join(lines)
            )
        for action_id, label, _value in message.buttons():
            self.say(f"    [button: {label} -> :click {action_id}]")

    def _name(self, user_id: str | None) -> str:
        return next((name for name, uid in USERS.items() if uid == user_id), user_id or "?")

    def start(self) -> None:
        """Start Redis, the twins, the bot's HTTP app and a worker process."""
        from handlers.app import TrackbotApp, serve_in_thread

        self.work_dir.mkdir(parents=True, exist_ok=True)
        if self.repo is None:
            self.repo = create_sample_repo(self.work_dir / "sample-upstream.git")
            self.say(f"sample repository (three tracks): {self.repo}")
        elif not (self.repo / "HEAD").exists() and not (self.repo / ".git").exists():
            raise ConsoleError(f"{self.repo} is not a git repository")
        full_name = "local/" + re.sub(r"[^A-Za-z0-9_.-]", "-", self.repo.name.removesuffix(".git")) or "local/repo"
        tokens = {
            "slack": "xoxb-local-" + secrets.token_hex(8),
            "signing": secrets.token_hex(16),
            "github": "ghp_local" + secrets.token_hex(16),
            "webhook": secrets.token_hex(16),
        }
        self.slack = SlackTwin(
            tokens["slack"], {uid: name for name, uid in USERS.items()}, on_message=self._on_slack
        ).start()
        self.github = GitHubTwin(
            self.repo,
            full_name=full_name,
            token=tokens["github"],
            webhook_secret=tokens["webhook"],
            on_event=lambda line: self.say(f"[{line}]"),
        ).start()
        if self.protect_main:
            self.github.protect("main", required_approvals=1)
        fields: dict[str, Any] = {
            "slack_bot_token": SecretStr(tokens["slack"]),
            "slack_signing_secret": SecretStr(tokens["signing"]),
            "slack_api_url": self.slack.api_url,
            "github_token": SecretStr(tokens["github"]),
            "github_repository": full_name,
            "github_api_url": self.github.api_url,
            "github_webhook_secret": SecretStr(tokens["webhook"]),
            "git_url": str(self.repo),
            "maintainers": [USERS["alice"]],
            "runners": [USERS["alice"], USERS["bob"]],
            "redis_url": os.environ.get("REDIS_URL"),
            "agent_command": self.agent,
            "work_dir": self.work_dir,
            "github_write_interval_s": 0,
            "sandbox_read_only": PYTHON_PATHS,
        }
        if "sandbox" not in self.overrides:
            # The console's own sample agent may run unconfined where no sandbox can be made (a
            # laptop, macOS); production never does without TRACKBOT_SANDBOX=off.
            reason = sandbox_probe()
            fields["sandbox"] = "bwrap" if reason is None else "off"
            if reason is not None:
                self.say(f"the sandbox is OFF: the sample agent runs unconfined on this machine ({reason})")
        settings = Settings(**{**fields, **self.overrides})
        redis, embedded = connect_redis(settings)
        self.services = Services(settings=settings, redis=redis, embedded_redis=embedded)
        redis_url = settings.redis_url or (embedded.url if embedded else None)
        self.server, self.bot_url = serve_in_thread(TrackbotApp(self.services))
        self.github.webhook_url = self.bot_url + "/github/webhook"
        self.signing_secret = tokens["signing"]
        self.worker = self.spawn_worker()
        self._wait_worker_ready()
        self.say(
            f"trackbot is up: Slack twin {self.slack.api_url}, GitHub twin {self.github.api_url} "
            f"({full_name} over {self.repo}), bot {self.bot_url}, Redis {masked_url(str(redis_url))}"
        )
        self.say(f"you are @{self.user} (maintainer); :help lists the console commands")

    def _wait_worker_ready(self, timeout: float = 60.0) -> None:
        """Until the worker has registered with RQ and answers Slack work: a command typed at once must
        not be told that no worker is running, nor be answered by the web app in its stead."""
        from bot.metrics import worker_beats
        from handlers.slack_work import LISTENING_KEY

        assert self.services is not None and self.worker is not None
        redis, queue = self.services.redis, self.services.queue
        deadline = time.monotonic() + timeout
        while not (worker_beats(redis, queue) and redis.exists(LISTENING_KEY)):
            if self.worker.poll() is not None:
                raise ConsoleError(f"the worker exited ({self.worker.returncode}); see {self.work_dir}/worker.log")
            if time.monotonic() > deadline:
                raise ConsoleError(f"the worker did not start within {timeout:.0f}s; see {self.work_dir}/worker.log")
            time.sleep(0.05)

    def spawn_worker(self, log_name: str = "worker.log") -> subprocess.Popen[bytes]:
        """A `trackbot worker` process on this stack's settings and Redis, logging to `log_name` in the
        work dir (the stack stops only its own `worker`; whoever spawns another stops it)."""
        assert self.services is not None
        settings, embedded = self.services.settings, self.services.embedded_redis
        redis_url = settings.redis_url or (embedded.url if embedded else None)
        env = {**os.environ, **settings_environment(settings), "REDIS_URL": str(redis_url)}
        log = open(self.work_dir / log_name, "ab")  # noqa: SIM115 - lives as long as the worker
        return subprocess.Popen(
            [sys.executable, "-m", "bot.cli", "worker"],
            preexec_fn=_die_with_parent,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.work_dir,
        )

    def stop(self) -> None:
        """Shut down everything this stack started, in reverse order."""
        if self.worker is not None and self.worker.poll() is None:
            self.worker.send_signal(signal.SIGTERM)  # warm shutdown: a running job finishes first
            try:
                self.worker.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.worker.send_signal(signal.SIGTERM)  # cold shutdown
                try:
                    self.worker.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    self.worker.kill()
                    self.worker.wait()
        if self.server is not None:
            self.server.shutdown()  # type: ignore[attr-defined]
            self.server.server_close()  # type: ignore[attr-defined]
            self.server.get_app().close()  # type: ignore[attr-defined]
        if self.github is not None:
            self.github.stop()
        if self.slack is not None:
            self.slack.stop()
        if self.services is not None:
            self.services.redis.close()
            if self.services.embedded_redis is not None:
                self.services.embedded_redis.stop()
        if self._own_work_dir:
            shutil.rmtree(self.work_dir, ignore_errors=True)

    # -- console lines ---------------------------------------------------------------------------

    def handle(self, line: str) -> bool:
        """Carry out one console line. Returns False for :quit."""
        line = line.strip()
        if not line or line.startswith("#"):
            return True
        word, _, rest = line.partition(" ")
        rest = rest.strip()
        if word == ":quit":
            return False
        if word == ":help":
            self.say(HELP)
        elif word.startswith("/"):
            self.slash(word, rest)
        elif word == ":as":
            if rest not in USERS:
                raise ConsoleError(f"unknown user {rest!r}: use one of {', '.join(USERS)}")
            self.user = rest
            self.say(f"(you are now @{rest})")
        elif word == ":merge":
            if not rest.isdigit():
                raise ConsoleError(":merge takes a PR number, e.g. :merge 1")
            assert self.github is not None
            try:
                self.github.merge_pull(int(rest), merged_by=self.user)
            except Exception as error:
                raise ConsoleError(f"cannot merge PR #{rest}: {error}") from None
        elif word == ":click":
            self.click(rest)
        elif word == ":wait":
            self.wait(float(rest) if rest else 600.0)
        else:
            raise ConsoleError(f"unknown console command {word!r}; :help lists them")
        return True

    def _responses(self) -> int:
        assert self.slack is not None
        return sum(1 for m in self.slack.snapshot() if m.kind == "response_url")

    def _await_response(self, before: int, timeout: float = 30.0) -> None:
        """The bot answers every command and click through response_url: wait for that answer."""
        deadline = time.monotonic() + timeout
        while self._responses() <= before and time.monotonic() < deadline:
            time.sleep(0.02)

    def slash(self, command: str, text: str) -> None:
        """Send a signed slash command as Slack does."""
        assert self.slack is not None
        uid = USERS[self.user]
        response_url = self.slack.new_response_url(CHANNEL_ID, uid)
        body = slash_command_body(command, text, uid, self.user, CHANNEL_ID, CHANNEL_NAME, response_url)
        before = self._responses()
        status, _, answer = post_signed(self.bot_url + "/slack/events", body, self.signing_secret)
        if status != 200:
            raise ConsoleError(f"the bot answered {status}: {answer.decode(errors='replace')[:200]}")
        if answer.strip():
            self.say(f"[slack ack to @{self.user}] {answer.decode(errors='replace')}")
        self._await_response(before)

    def click(self, action_id: str) -> None:
        """Press the latest button with `action_id`, as the current user."""
        assert self.slack is not None
        message = self.slack.latest_with_button(action_id)
        if message is None:
            raise ConsoleError(f"no message has a {action_id!r} button")
        value = next(v for a, _, v in message.buttons() if a == action_id)
        uid = USERS[self.user]
        response_url = self.slack.new_response_url(message.channel, uid, message.ts)
        block_id = next((b.get("block_id", "actions") for b in message.blocks if b.get("type") == "actions"), "actions")
        body = block_actions_body(
            action_id,
            value,
            block_id,
            uid,
            self.user,
            message.channel,
            dataclasses.asdict(message),
            response_url,
            channel_name=CHANNEL_NAME,
        )
        before = self._responses()
        self.say(f"(@{self.user} clicks {action_id})")
        status, _, answer = post_signed(self.bot_url + "/slack/events", body, self.signing_secret)
        if status != 200:
            raise ConsoleError(f"the bot answered {status}: {answer.decode(errors='replace')[:200]}")
        self._await_response(before)

    def wait(self, seconds: float) -> None:
        """Until no run is queued or running (and the worker is alive), at most `seconds`."""
        assert self.services is not None
        store, repo = self.services.store, self.services.settings.repositories[0]
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if store.lock_holder(repo) is None and self.services.queue.count == 0:
                return
            if self.worker is not None and self.worker.poll() is not None:
                raise ConsoleError(f"the worker exited ({self.worker.returncode}); see {self.work_dir}/worker.log")
            time.sleep(0.1)
        self.say(f"(still busy after {seconds:.0f}s)")


def _die_with_parent() -> None:
    """In the worker child: get SIGTERM if the console dies without stopping it (Linux)."""
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL(None).prctl(pr_set_pdeathsig, signal.SIGTERM)


def settings_environment(settings: Settings) -> dict[str, str]:
    """Settings as the environment variables a worker process reads."""
    env = {
        "SLACK_BOT_TOKEN": settings.slack_bot_token.get_secret_value(),
        "SLACK_SIGNING_SECRET": settings.slack_signing_secret.get_secret_value(),
        "SLACK_API_URL": settings.slack_api_url,
        "GITHUB_REPOSITORY": settings.github_repository or "",
        "GITHUB_API_URL": settings.github_api_url,
        "GITHUB_WEBHOOK_SECRET": settings.github_webhook_secret.get_secret_value(),
        "TRACKBOT_MAINTAINERS": ",".join(settings.maintainers),
        "TRACKBOT_RUNNERS": ",".join(settings.runners),
        "TRACKBOT_AGENT_COMMAND": settings.agent_command,
        "TRACKBOT_AGENT_TIMEOUT": str(settings.agent_timeout_s),
        "TRACKBOT_GATE_TIMEOUT": str(settings.gate_timeout_s),
        "TRACKBOT_WORK_DIR": str(settings.work_dir),
        "TRACKBOT_AGENT_ENV": ",".join(settings.agent_env_passthrough),
        "TRACKBOT_SANDBOX": settings.sandbox,
        "TRACKBOT_AGENT_EGRESS": ",".join(settings.agent_egress),
        "TRACKBOT_SANDBOX_READ_ONLY": ",".join(str(p) for p in settings.sandbox_read_only),
        "TRACKBOT_GITHUB_WRITE_INTERVAL": str(settings.github_write_interval_s),
        "TRACKBOT_HEARTBEAT_INTERVAL": str(settings.heartbeat_interval_s),
        "TRACKBOT_LEASE_TTL": str(settings.lease_ttl_s),
        "TRACKBOT_REAPER_INTERVAL": str(settings.reaper_interval_s),
        "TRACKBOT_CANCEL_GRACE": str(settings.cancel_grace_s),
        "TRACKBOT_WORKER_TTL": str(settings.worker_ttl_s),
        "TRACKBOT_JOB_MONITORING_INTERVAL": str(settings.job_monitoring_interval_s),
        "TRACKBOT_RQ_MAINTENANCE_INTERVAL": str(settings.rq_maintenance_interval_s),
        "TRACKBOT_GITHUB_ATTEMPTS": str(settings.github_attempts),
        "TRACKBOT_GITHUB_RETRY_BACKOFF": str(settings.github_retry_backoff_s),
        "TRACKBOT_GITHUB_RATE_LIMIT_WAIT": str(settings.github_rate_limit_wait_s),
        "TRACKBOT_SLACK_WORK_THREADS": str(settings.slack_work_threads),
        "TRACKBOT_SLACK_WORK_CLAIM_IDLE": str(settings.slack_work_claim_idle_s),
    }
    if settings.git_url:
        env["TRACKBOT_GIT_URL"] = settings.git_url
    if settings.github_token is not None:
        env["GITHUB_TOKEN"] = settings.github_token.get_secret_value()
    if settings.uses_github_app:
        env["GITHUB_APP_ID"] = str(settings.github_app_id)
        env["GITHUB_APP_PRIVATE_KEY"] = settings.github_app_key() or ""
        env["GITHUB_APP_INSTALLATION_ID"] = str(settings.github_app_installation_id)
    if settings.log_format:
        env["TRACKBOT_LOG_FORMAT"] = settings.log_format
    if settings.channels:
        env["TRACKBOT_CHANNELS"] = ",".join(f"{c}={r}" for c, r in settings.channels.items())
    # Roles (bot/roles.py) and the merge poller (bot/poller.py).
    env["TRACKBOT_MAINTAINER_GROUPS"] = ",".join(settings.maintainer_groups)
    env["TRACKBOT_RUNNER_GROUPS"] = ",".join(settings.runner_groups)
    env["TRACKBOT_TWO_PERSON_RULE"] = "true" if settings.two_person_rule else "false"
    env["TRACKBOT_POLL_INTERVAL"] = str(settings.poll_interval_s)
    if settings.redis_url:
        env["REDIS_URL"] = settings.redis_url
    if settings.queue_key_setting is not None:
        env["TRACKBOT_QUEUE_KEY"] = settings.queue_key_setting.get_secret_value()
    return env


def run_console(
    lines: list[str] | None,
    out: TextIO,
    repo: Path | None = None,
    agent: str | None = None,
    work_dir: Path | None = None,
    interactive: bool = False,
    protect_main: bool = False,
) -> int:
    """Run the local stack: play `lines` (the tour), or read stdin line by line. Returns the exit code."""
    stack = LocalStack(out, repo=repo, agent=agent, work_dir=work_dir, protect_main=protect_main)
    try:
        stack.start()
        source = iter(lines) if lines is not None else _stdin_lines(stack, interactive)
        for line in source:
            if lines is not None or not interactive:
                stack.say(f"\n@{stack.user}> {line.rstrip()}")
            try:
                if not stack.handle(line):
                    break
            except ConsoleError as error:
                stack.say(f"(console: {error})")
    except KeyboardInterrupt:
        stack.say("(interrupted)")
    finally:
        stack.say("(shutting down)")
        stack.stop()
    return 0


def _stdin_lines(stack: LocalStack, interactive: bool):  # type: ignore[no-untyped-def]
    while True:
        if interactive:
            try:
                line = input(f"@{stack.user}> ")
            except EOFError:
                return
        else:
            line = sys.stdin.readline()
            if not line:
                return
        yield line
