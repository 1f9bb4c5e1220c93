"""Settings: the only reader of the environment.

Every setting comes from an environment variable (or a `.env` file in the working directory).
When something is missing or malformed, `load_settings` raises `ConfigError` with ONE message
that names every bad setting and shows what it should look like.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any

from pydantic import AliasChoices, Field, SecretStr, ValidationError, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

REPO_RE = re.compile(r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$")
SLACK_USER_RE = re.compile(r"^[UW][A-Z0-9]{2,}$")
SLACK_GROUP_RE = re.compile(r"^S[A-Z0-9]{2,}$")
CHANNEL_RE = re.compile(r"^[CGD][A-Z0-9]{2,}$")

DEFAULT_AGENT_COMMAND = "codex exec --json --sandbox workspace-write -C {worktree} -"

# What each setting should look like, shown when it is missing or malformed.
SETTING_HINTS: dict[str, tuple[str, str]] = {
    "slack_bot_token": ("SLACK_BOT_TOKEN", "the bot token (xoxb-…)"),
    "slack_signing_secret": ("SLACK_SIGNING_SECRET", "the app's signing secret (Basic Information page)"),
    "slack_app_token": ("SLACK_APP_TOKEN", "optional app-level token (xapp-…), enables Socket Mode"),
    "slack_api_url": ("SLACK_API_URL", "the Slack Web API base URL ending in /, e.g. https://slack.com/api/"),
    "github_token": ("GITHUB_TOKEN", "a token with contents and pull requests write access"),
    "github_repository": ("GITHUB_REPOSITORY", "owner/name, e.g. acme/widgets"),
    "channels": (
        "TRACKBOT_CHANNELS",
        "comma-separated CHANNEL_ID=owner/name pairs, e.g. C0123ABCD=acme/widgets,C0456EFGH=acme/gadgets",
    ),
    "github_api_url": ("GITHUB_API_URL", "https://api.github.com, or https://HOST/api/v3 for Enterprise"),
    "github_webhook_secret": ("GITHUB_WEBHOOK_SECRET", "the secret set on the repository's webhook"),
    "git_url": (
        "TRACKBOT_GIT_URL",
        "where to clone and push; {repo} is replaced by owner/name; default https://github.com/{repo}.git",
    ),
    "maintainers": ("TRACKBOT_MAINTAINERS", "comma-separated Slack user IDs, e.g. U012AB3CD,U045EF6GH"),
    "runners": (
        "TRACKBOT_RUNNERS",
        "comma-separated Slack user IDs allowed to /track run (maintainers may too)",
    ),
    "redis_url": ("REDIS_URL", "redis://host:6379/0; unset starts an embedded server under the work dir"),
    "agent_command": ("TRACKBOT_AGENT_COMMAND", "the agent's command line; {worktree} is replaced"),
    "agent_timeout_s": ("TRACKBOT_AGENT_TIMEOUT", "seconds, a positive integer"),
    "gate_timeout_s": ("TRACKBOT_GATE_TIMEOUT", "seconds, a positive integer"),
    "work_dir": ("TRACKBOT_WORK_DIR", "a writable folder for clones and the embedded Redis"),
    "github_write_interval_s": (
        "TRACKBOT_GITHUB_WRITE_INTERVAL",
        "seconds between GitHub writes (GitHub asks for 1)",
    ),
    "agent_env_passthrough": ("TRACKBOT_AGENT_ENV", "comma-separated variable names the agent may see"),
    # -- roles (bot/roles.py) and the merge poller (bot/poller.py) --
    "maintainer_groups": (
        "TRACKBOT_MAINTAINER_GROUPS",
        "comma-separated Slack user group IDs whose members approve advances, e.g. S012AB3CD",
    ),
    "runner_groups": (
        "TRACKBOT_RUNNER_GROUPS",
        "comma-separated Slack user group IDs whose members may /track run, e.g. S045EF6GH",
    ),
    "two_person_rule": (
        "TRACKBOT_TWO_PERSON_RULE",
        "true or false: whoever queued a run may not approve its advance",
    ),
    "poll_interval_s": (
        "TRACKBOT_POLL_INTERVAL",
        "seconds between merge polls of open PRs, 0 = off (default 60 in Socket Mode, else 0)",
    ),
}


_HINTS_BY_ENV = {env: (env, hint) for env, hint in SETTING_HINTS.values()}


def _split_csv(value: Any) -> Any:
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


def _env(field: str) -> Any:
    return Field(validation_alias=AliasChoices(SETTING_HINTS[field][0], field))


class Settings(BaseSettings):
    """trackbot's configuration, read from the environment and `.env`."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore", populate_by_name=True)

    slack_bot_token: SecretStr = _env("slack_bot_token")
    slack_signing_secret: SecretStr = _env("slack_signing_secret")
    slack_app_token: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("SLACK_APP_TOKEN", "slack_app_token")
    )
    slack_api_url: str = Field(
        default="https://slack.com/api/", validation_alias=AliasChoices("SLACK_API_URL", "slack_api_url")
    )
    github_token: SecretStr = _env("github_token")
    # Declared before github_repository: its validator needs to know whether channels name repositories.
    channels: Annotated[dict[str, str], NoDecode] = Field(
        default_factory=dict, validation_alias=AliasChoices("TRACKBOT_CHANNELS", "channels")
    )
    github_repository: str | None = Field(
        default=None,
        validate_default=True,
        validation_alias=AliasChoices("GITHUB_REPOSITORY", "github_repository"),
    )
    github_api_url: str = Field(
        default="https://api.github.com", validation_alias=AliasChoices("GITHUB_API_URL", "github_api_url")
    )
    github_webhook_secret: SecretStr = _env("github_webhook_secret")
    git_url: str | None = Field(default=None, validation_alias=AliasChoices("TRACKBOT_GIT_URL", "git_url"))
    # -- roles (bot/roles.py) and the merge poller (bot/poller.py); the groups are declared before
    # maintainers because "at least one maintainer" is satisfied by maintainer groups too.
    maintainer_groups: Annotated[list[str], NoDecode] = Field(
        default_factory=list, validation_alias=AliasChoices("TRACKBOT_MAINTAINER_GROUPS", "maintainer_groups")
    )
    runner_groups: Annotated[list[str], NoDecode] = Field(
        default_factory=list, validation_alias=AliasChoices("TRACKBOT_RUNNER_GROUPS", "runner_groups")
    )
    two_person_rule: bool = Field(
        default=False, validation_alias=AliasChoices("TRACKBOT_TWO_PERSON_RULE", "two_person_rule")
    )
    poll_interval_s: float = Field(
        default=None,
        ge=0,
        validate_default=True,
        validation_alias=AliasChoices("TRACKBOT_POLL_INTERVAL", "poll_interval_s"),
    )

    @field_validator("maintainer_groups", "runner_groups", mode="before")
    @classmethod
    def _group_csv(cls, value: Any) -> Any:
        return _split_csv(value)

    @field_validator("maintainer_groups", "runner_groups")
    @classmethod
    def _group_ids(cls, value: list[str]) -> list[str]:
        bad = [v for v in value if not SLACK_GROUP_RE.match(v)]
        if bad:
            raise ValueError(f"not Slack user group IDs: {', '.join(bad)}")
        return value

    @field_validator("poll_interval_s", mode="before")
    @classmethod
    def _poll_default(cls, value: Any, info: ValidationInfo) -> Any:
        # Socket Mode usually means no public URL for GitHub's webhook: poll for merges instead.
        if value is None or value == "":
            return 60.0 if info.data.get("slack_app_token") is not None else 0.0
        return value

    maintainers: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        validate_default=True,
        validation_alias=AliasChoices("TRACKBOT_MAINTAINERS", "maintainers"),
    )
    runners: Annotated[list[str], NoDecode] = Field(
        default_factory=list, validation_alias=AliasChoices("TRACKBOT_RUNNERS", "runners")
    )
    redis_url: str | None = Field(default=None, validation_alias=AliasChoices("REDIS_URL", "redis_url"))
    agent_command: str = Field(
        default=DEFAULT_AGENT_COMMAND,
        validation_alias=AliasChoices("TRACKBOT_AGENT_COMMAND", "agent_command"),
    )
    agent_timeout_s: int = Field(
        default=3600, gt=0, validation_alias=AliasChoices("TRACKBOT_AGENT_TIMEOUT", "agent_timeout_s")
    )
    gate_timeout_s: int = Field(
        default=900, gt=0, validation_alias=AliasChoices("TRACKBOT_GATE_TIMEOUT", "gate_timeout_s")
    )
    agent_env_passthrough: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["OPENAI_API_KEY", "CODEX_HOME"],
        validation_alias=AliasChoices("TRACKBOT_AGENT_ENV", "agent_env_passthrough"),
    )
    work_dir: Path = Field(default=Path(".trackbot"), validation_alias=AliasChoices("TRACKBOT_WORK_DIR", "work_dir"))
    github_write_interval_s: float = Field(
        default=1.0,
        ge=0,
        validation_alias=AliasChoices("TRACKBOT_GITHUB_WRITE_INTERVAL", "github_write_interval_s"),
    )
    base_branch: str = Field(default="main", validation_alias=AliasChoices("TRACKBOT_BASE_BRANCH", "base_branch"))

    @field_validator("maintainers", "runners", "agent_env_passthrough", mode="before")
    @classmethod
    def _csv(cls, value: Any) -> Any:
        return _split_csv(value)

    @field_validator("maintainers", "runners")
    @classmethod
    def _slack_ids(cls, value: list[str]) -> list[str]:
        bad = [v for v in value if not SLACK_USER_RE.match(v)]
        if bad:
            raise ValueError(f"not Slack user IDs: {', '.join(bad)}")
        return value

    @field_validator("maintainers")
    @classmethod
    def _at_least_one_maintainer(cls, value: list[str], info: ValidationInfo) -> list[str]:
        # Maintainers OR maintainer groups suffice (a malformed groups setting is reported on its own).
        if not value and "maintainer_groups" in info.data and not info.data["maintainer_groups"]:
            raise ValueError(
                "at least one maintainer (or TRACKBOT_MAINTAINER_GROUPS) is needed to approve advances"
            )
        return value

    @field_validator("github_repository")
    @classmethod
    def _repo(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None and "channels" in info.data and not info.data["channels"]:
            raise ValueError("missing (or set TRACKBOT_CHANNELS to serve several repositories)")
        if value is not None and not REPO_RE.match(value):
            raise ValueError(f"{value!r} is not owner/name")
        return value

    @field_validator("channels", mode="before")
    @classmethod
    def _channel_map(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        pairs: dict[str, str] = {}
        for item in _split_csv(value):
            channel, sep, repo = item.partition("=")
            if not sep:
                raise ValueError(f"{item!r} is not CHANNEL_ID=owner/name")
            pairs[channel.strip()] = repo.strip()
        return pairs

    @field_validator("channels")
    @classmethod
    def _channel_ids(cls, value: dict[str, str]) -> dict[str, str]:
        bad = [f"{c}={r}" for c, r in value.items() if not CHANNEL_RE.match(c) or not REPO_RE.match(r)]
        if bad:
            raise ValueError(f"not CHANNEL_ID=owner/name: {', '.join(bad)}")
        return value

    @field_validator("slack_api_url")
    @classmethod
    def _trailing_slash(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"{value!r} is not an http(s) URL")
        return value if value.endswith("/") else value + "/"

    @field_validator("github_api_url")
    @classmethod
    def _http(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"{value!r} is not an http(s) URL")
        return value.rstrip("/")

    @field_validator("agent_command")
    @classmethod
    def _non_empty(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("empty")
        return value

    @property
    def github_web_url(self) -> str:
        """Where people browse the repositories (github.com, or the Enterprise host)."""
        api = self.github_api_url.rstrip("/")
        if api == "https://api.github.com":
            return "https://github.com"
        return api.removesuffix("/api/v3")

    @property
    def repositories(self) -> list[str]:
        """Every repository this deployment serves."""
        repos = list(dict.fromkeys(self.channels.values()))
        if self.github_repository and self.github_repository not in repos:
            repos.insert(0, self.github_repository)
        return repos

    def repository_for_channel(self, channel: str) -> str | None:
        """The repository a channel drives: its TRACKBOT_CHANNELS entry, else GITHUB_REPOSITORY
        when no channel map restricts it; None when the channel is not set up."""
        if channel in self.channels:
            return self.channels[channel]
        if self.channels:
            return None
        return self.github_repository

    def channels_of(self, repository: str) -> list[str]:
        """The channels configured for a repository (empty: any channel)."""
        return [c for c, r in self.channels.items() if r == repository]

    def clone_url(self, repository: str) -> str:
        """Where the worker clones `repository` from and pushes to."""
        if self.git_url:
            return self.git_url.replace("{repo}", repository)
        host = "github.com"
        if self.github_api_url.rstrip("/") != "https://api.github.com":
            host = self.github_api_url.split("://", 1)[1].split("/", 1)[0]
        return f"https://{host}/{repository}.git"

    def secret_values(self) -> list[str]:
        """Every configured secret, for the redactor."""
        secrets = [
            self.slack_bot_token,
            self.slack_signing_secret,
            self.github_token,
            self.github_webhook_secret,
        ]
        if self.slack_app_token is not None:
            secrets.append(self.slack_app_token)
        return [s.get_secret_value() for s in secrets if s.get_secret_value()]

    def may_run(self, user_id: str) -> bool:
        """Runners and maintainers may start runs; with no runners configured, anyone may."""
        return not self.runners or user_id in self.runners or user_id in self.maintainers

    def is_maintainer(self, user_id: str) -> bool:
        """Only maintainers approve advances."""
        return user_id in self.maintainers


class ConfigError(Exception):
    """Settings are missing or malformed; the message names every one."""


def describe_validation_error(error: ValidationError) -> str:
    """Turn pydantic's error into one readable message: each bad setting and its expected form."""
    lines = ["trackbot is not configured correctly:"]
    seen: set[str] = set()
    for item in error.errors():
        field = str(item["loc"][0]) if item["loc"] else "?"
        if field in seen:
            continue
        seen.add(field)
        env_name, hint = SETTING_HINTS.get(field) or _HINTS_BY_ENV.get(field, (field, "see README"))
        problem = "missing" if item["type"] == "missing" else str(item["msg"]).removeprefix("Value error, ")
        lines.append(f"  - {env_name}: {problem}. Expected: {hint}.")
    lines.append("Set them in the environment or in a .env file, then start again.")
    return "\n".join(lines)


def load_settings(**overrides: Any) -> Settings:
    """Read settings from the environment; raise ConfigError naming every bad setting."""
    try:
        return Settings(**overrides)
    except ValidationError as error:
        raise ConfigError(describe_validation_error(error)) from None
