"""The adapters one process needs, built once from Settings."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path

from redis import Redis
from rq import Queue
from slack_sdk import WebClient

from bot.adapters.github import GitHubAuth, GitHubRepo, rate_limit_retry
from bot.adapters.redis_server import EmbeddedRedis, redis_url_or_embedded
from bot.adapters.slack import SlackPoster
from bot.config import Settings
from bot.jobqueue import QUEUE_NAME, make_queue
from bot.metrics import Metrics
from bot.redact import Redactor
from bot.repo_rules import REPO_RULES_PATH, RepoRules, parse_repo_rules
from bot.roles import Roles
from bot.rules import DEFAULT_RULES, Rules
from bot.store import RunStore

__all__ = ["QUEUE_NAME", "Services", "connect_redis", "redis_dir"]


def redis_dir(settings: Settings) -> Path:
    """Where the embedded Redis keeps its data (AOF) and pidfile."""
    return settings.work_dir / "redis"


def connect_redis(settings: Settings) -> tuple[Redis, EmbeddedRedis | None]:
    """REDIS_URL when set, otherwise the embedded server (started, or reused via its pidfile)."""
    url, embedded = redis_url_or_embedded(settings.redis_url, redis_dir(settings))
    # TCP keepalive notices a dead peer on a network; a Unix socket (the embedded server) has none.
    tcp = {} if url.startswith("unix:") else {"socket_keepalive": True}
    return Redis.from_url(url, health_check_interval=30, **tcp), embedded


@dataclass
class Services:
    """Settings plus one of each adapter."""

    settings: Settings
    redis: Redis
    embedded_redis: EmbeddedRedis | None = None
    rules: Rules = DEFAULT_RULES
    redact: Redactor = field(init=False)
    store: RunStore = field(init=False)
    queue: Queue = field(init=False)
    slack_client: WebClient = field(init=False)
    poster: SlackPoster = field(init=False)
    metrics: Metrics = field(init=False)

    def __post_init__(self) -> None:
        settings = self.settings
        self.redact = Redactor(settings.secret_values())
        self.metrics = Metrics(self.redis)
        self._github_auth: GitHubAuth | None = None
        self.store = RunStore(self.redis)
        self.queue = make_queue(self.redis)
        self._github: dict[str, GitHubRepo] = {}
        self.slack_client = WebClient(
            token=settings.slack_bot_token.get_secret_value(), base_url=settings.slack_api_url, timeout=15
        )
        self.poster = SlackPoster(
            self.slack_client, self.redact, on_error=lambda kind: self.metrics.api_error("slack", kind)
        )

    @property
    def github_auth(self) -> GitHubAuth:
        """GitHub credentials (GITHUB_TOKEN, or the App installation), shared by every repository."""
        if self._github_auth is None:
            settings = self.settings
            token = settings.github_token.get_secret_value() if settings.github_token is not None else None
            self._github_auth = GitHubAuth(
                token,
                app_id=settings.github_app_id,
                private_key=settings.github_app_key(),
                installation_id=settings.github_app_installation_id,
                base_url=settings.github_api_url,
            )
        return self._github_auth

    def git_token(self) -> str:
        """The token git pushes with: GITHUB_TOKEN, or a current installation token (fresh when the last expires)."""
        return self.github_auth.token()

    @functools.cached_property
    def roles(self) -> Roles:
        """Who may run and who may approve (user IDs and user groups)."""
        return Roles(self.settings, self.slack_client, self.redis)

    def repo_rules(self, repository: str) -> RepoRules:
        """The repository's own `.trackbot.toml` on the base branch (the procedure's defaults without one).

        Raises RepoRulesError (line and why) for an invalid file, GitHubError when it cannot be read.
        """
        github, base = self.github(repository), self.settings.base_branch
        # The root listing (a conditional, cached request) says whether the file exists at all, so a
        # repository without one costs no uncacheable 404 per command.
        if REPO_RULES_PATH not in (github.list_dir("", base) or []):
            return parse_repo_rules(None)
        found = github.read_text(REPO_RULES_PATH, base)
        return parse_repo_rules(None if found is None else found[0])

    def github(self, repository: str) -> GitHubRepo:
        """The GitHub adapter of one repository (one client per repository, reused)."""
        if repository not in self._github:
            settings = self.settings
            self._github[repository] = GitHubRepo(
                self.github_auth,
                repository,
                settings.github_api_url,
                retry=rate_limit_retry(settings.github_rate_limit_wait_s),
                write_interval_s=settings.github_write_interval_s,
                on_error=lambda kind: self.metrics.api_error("github", kind),
            )
        return self._github[repository]

    @classmethod
    def from_settings(cls, settings: Settings, redis: Redis | None = None) -> Services:
        """Build the services, connecting to (or starting) Redis unless a connection is given."""
        embedded = None
        if redis is None:
            redis, embedded = connect_redis(settings)
        return cls(settings=settings, redis=redis, embedded_redis=embedded)
