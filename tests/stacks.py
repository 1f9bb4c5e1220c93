"""A local stack with several repositories, several worker processes, or a GitHub App.

`bot.local.console.LocalStack` is the console's stack: one repository, one worker, a token. The
scale-out and GitHub App tests need more, built from the same real parts: the Slack twin, ONE
GitHub twin serving every repository (`GitHubTwin.serve`), the bot's real HTTP app, and real
`trackbot worker` processes, each with its own work directory, all on one Redis.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import SecretStr
from redis import Redis

from bot.config import Settings
from bot.local.console import PYTHON_PATHS, USERS, settings_environment
from bot.local.github_api import GitHubTwin
from bot.local.sample import create_sample_repo
from bot.local.slack_api import SlackMessage, SlackTwin
from bot.local.slack_requests import post_signed, slash_command_body
from bot.services import Services

ALICE = USERS["alice"]


@dataclass
class AppKey:
    """A GitHub App's id, installation and RSA key pair (PEM), made for a test."""

    app_id: str
    installation_id: int
    private_pem: str
    public_pem: str

    @classmethod
    def generate(cls, app_id: str = "424242", installation_id: int = 777) -> AppKey:
        """A fresh 2048-bit RSA key (cryptography, which PyGithub depends on)."""
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import rsa

        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        private = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
        ).decode()
        public = (
            key.public_key()
            .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
            .decode()
        )
        return cls(app_id, installation_id, private, public)


@dataclass
class Repo:
    """One upstream repository of the stack, and the Slack channel that drives it."""

    full_name: str
    channel: str
    path: Path
    twin: GitHubTwin


@dataclass
class Stack:
    """Twins, the bot's HTTP app and worker processes; see the module docstring."""

    work_dir: Path
    redis_url: str
    agent: str
    channels: dict[str, str]  # channel id -> owner/name
    workers: int = 1
    app: AppKey | None = None
    token_ttl_s: int = 3600
    sandbox: str = "bwrap"  # "off" for agents that record what they saw on the host
    make_repo: Callable[[Path], Path] = create_sample_repo  # a bare upstream at the given path
    worker_env: dict[str, str] = field(default_factory=dict)  # more environment for the workers
    repos: list[Repo] = field(default_factory=list)
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    slack: SlackTwin | None = None
    services: Services | None = None
    bot_url: str = ""
    signing_secret: str = ""
    _server: Any = None

    @property
    def host(self) -> GitHubTwin:
        """The GitHub twin whose server serves every repository."""
        return self.repos[0].twin

    def repo(self, full_name: str) -> Repo:
        return next(r for r in self.repos if r.full_name == full_name)

    def start(self) -> Stack:
        from handlers.app import TrackbotApp, serve_in_thread

        Redis.from_url(self.redis_url).flushdb()
        token = "ghp_stack" + secrets.token_hex(16)
        webhook = secrets.token_hex(16)
        self.signing_secret = secrets.token_hex(16)
        upstreams = self.work_dir / "upstream"
        for channel, full_name in self.channels.items():
            path = self.make_repo(upstreams / f"{full_name}.git")
            twin = GitHubTwin(path, full_name=full_name, token=token, webhook_secret=webhook)
            if self.repos:
                self.repos[0].twin.serve(twin)
            else:
                twin.start()
                if self.app is not None:
                    twin.enable_app(
                        self.app.app_id, self.app.public_pem, self.app.installation_id, token_ttl_s=self.token_ttl_s
                    )
            self.repos.append(Repo(full_name, channel, path, twin))
        slack_token = "xoxb-stack-" + secrets.token_hex(8)
        self.slack = SlackTwin(slack_token, {uid: name for name, uid in USERS.items()}).start()
        credentials: dict[str, Any] = (
            {"github_token": SecretStr(token)}
            if self.app is None
            else {
                "github_app_id": self.app.app_id,
                "github_app_private_key": SecretStr(self.app.private_pem),
                "github_app_installation_id": self.app.installation_id,
            }
        )
        settings = Settings(
            slack_bot_token=SecretStr(slack_token),
            slack_signing_secret=SecretStr(self.signing_secret),
            slack_api_url=self.slack.api_url,
            github_repository=self.repos[0].full_name if len(self.repos) == 1 else None,
            channels=dict(self.channels) if len(self.repos) > 1 else {},
            github_api_url=self.host.api_url,
            github_webhook_secret=SecretStr(webhook),
            git_url=str(upstreams) + "/{repo}.git",
            maintainers=[ALICE],
            runners=[ALICE, USERS["bob"]],
            redis_url=self.redis_url,
            agent_command=self.agent,
            work_dir=self.work_dir / "web",
            github_write_interval_s=0,
            sandbox=self.sandbox,
            sandbox_read_only=PYTHON_PATHS,
            **credentials,
        )
        self.services = Services(settings=settings, redis=Redis.from_url(self.redis_url))
        self._server, self.bot_url = serve_in_thread(TrackbotApp(self.services))
        for repo in self.repos:
            repo.twin.webhook_url = self.bot_url + "/github/webhook"
        base = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "GITHUB_", "TRACKBOT_"))}
        for index in range(self.workers):
            self.start_worker(index, {**base, **settings_environment(settings), **self.worker_env})
        return self

    def start_worker(self, index: int, env: dict[str, str]) -> None:
        """A `trackbot worker` process with its own work directory (clones), logging to worker{index}.log."""
        work = self.work_dir / f"worker{index}"
        work.mkdir(parents=True, exist_ok=True)
        log = open(work / "worker.log", "ab")  # noqa: SIM115 - lives as long as the worker
        self.procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "bot.cli", "worker"],
                env={**env, "TRACKBOT_WORK_DIR": str(work)},
                cwd=work,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        )

    def wait_workers_registered(self, timeout: float = 30) -> None:
        from bot.metrics import worker_beats

        assert self.services is not None
        deadline = time.monotonic() + timeout
        while len(worker_beats(self.services.redis, self.services.queue)) < self.workers:
            assert time.monotonic() < deadline, "the workers did not register"
            for proc in self.procs:
                assert proc.poll() is None, f"a worker exited with {proc.returncode}; see {self.work_dir}/worker*"
            time.sleep(0.05)

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server.get_app().close()
        for repo in self.repos:
            if repo.twin._host is None:
                repo.twin.stop()
        if self.slack is not None:
            self.slack.stop()
        if self.services is not None:
            self.services.redis.close()

    # -- Slack -------------------------------------------------------------------------------------

    def answers(self, channel: str) -> list[SlackMessage]:
        assert self.slack is not None
        return [m for m in self.slack.snapshot() if m.kind == "response_url" and m.channel == channel]

    def send(self, channel: str, text: str, user: str = ALICE) -> int:
        """POST a signed `/track <text>` from `channel`; the HTTP status (the answer comes via response_url)."""
        assert self.slack is not None
        url = self.slack.new_response_url(channel, user)
        body = slash_command_body("/track", text, user, "alice", channel, "tracks", url)
        status, _, _ = post_signed(self.bot_url + "/slack/events", body, self.signing_secret)
        return status

    def wait_answers(self, channel: str, count: int, timeout: float = 30) -> list[str]:
        deadline = time.monotonic() + timeout
        while len(self.answers(channel)) < count:
            assert time.monotonic() < deadline, f"expected {count} answers in {channel}: {self.answers(channel)}"
            time.sleep(0.02)
        return [m.text for m in self.answers(channel)]

    def command(self, channel: str, text: str) -> str:
        before = len(self.answers(channel))
        assert self.send(channel, text) == 200
        return self.wait_answers(channel, before + 1)[before]

    def wait_idle(self, timeout: float = 120) -> None:
        """Until no repository is locked (queued or running) and the queue is empty."""
        assert self.services is not None
        store, queue = self.services.store, self.services.queue
        deadline = time.monotonic() + timeout
        while any(store.lock_holder(r.full_name) for r in self.repos) or queue.count:
            assert time.monotonic() < deadline, "runs did not finish in time"
            for proc in self.procs:
                assert proc.poll() is None, f"a worker exited with {proc.returncode}; see {self.work_dir}/worker*"
            time.sleep(0.05)
