"""Settings: the only reader of the environment.

Every setting comes from an environment variable (or a `.env` file in the working directory).
When something is missing or malformed, `load_settings` raises `ConfigError` with ONE message
that names every bad setting and shows what it should look like.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import re
import urllib.parse
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AliasChoices, Field, SecretStr, ValidationError, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

REPO_RE = re.compile(r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$")
SLACK_USER_RE = re.compile(r"^[UW][A-Z0-9]{2,}$")
SLACK_GROUP_RE = re.compile(r"^S[A-Z0-9]{2,}$")
CHANNEL_RE = re.compile(r"^[CGD][A-Z0-9]{2,}$")

DEFAULT_AGENT_COMMAND = "codex exec --json --sandbox workspace-write --skip-git-repo-check -C {worktree} -"
# What Codex needs to reach: the API (an API key) or ChatGPT's backend (a login).
DEFAULT_AGENT_EGRESS = ("api.openai.com:443", "chatgpt.com:443", "auth.openai.com:443")
QUEUE_KEY_LABEL = b"trackbot queue key v1"  # derives the default TRACKBOT_QUEUE_KEY

# What each setting should look like, shown when it is missing or malformed.
SETTING_HINTS: dict[str, tuple[str, str]] = {
    "slack_bot_token": ("SLACK_BOT_TOKEN", "the bot token (xoxb-…)"),
    "slack_signing_secret": ("SLACK_SIGNING_SECRET", "the app's signing secret (Basic Information page)"),
    "slack_app_token": ("SLACK_APP_TOKEN", "optional app-level token (xapp-…), enables Socket Mode"),
    "slack_api_url": ("SLACK_API_URL", "the Slack Web API base URL ending in /, e.g. https://slack.com/api/"),
    "github_token": (
        "GITHUB_TOKEN",
        "a token with contents and pull requests write access (or the GITHUB_APP_* settings instead)",
    ),
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
    "agent_idle_timeout_s": (
        "TRACKBOT_AGENT_IDLE_TIMEOUT",
        "seconds the agent may print nothing before it is stopped, a whole number (0 = no limit)",
    ),
    "gate_timeout_s": ("TRACKBOT_GATE_TIMEOUT", "seconds, a positive integer"),
    "work_dir": ("TRACKBOT_WORK_DIR", "a writable folder for clones and the embedded Redis"),
    "github_write_interval_s": (
        "TRACKBOT_GITHUB_WRITE_INTERVAL",
        "seconds between GitHub writes (GitHub asks for 1)",
    ),
    "agent_env_passthrough": ("TRACKBOT_AGENT_ENV", "comma-separated variable names the agent may see"),
    "sandbox": (
        "TRACKBOT_SANDBOX",
        "bwrap (the default: the agent and the gates run in a bubblewrap sandbox) or off (unconfined)",
    ),
    "agent_egress": (
        "TRACKBOT_AGENT_EGRESS",
        "comma-separated host:port the agent may reach, e.g. api.openai.com:443 (empty: no network)",
    ),
    "sandbox_read_only": (
        "TRACKBOT_SANDBOX_READ_ONLY",
        "comma-separated absolute paths the sandbox also shows read-only (an interpreter, the agent's install)",
    ),
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
    # -- GitHub App authentication and operations (bot/adapters/github.py, bot/logs.py) --
    "github_app_id": ("GITHUB_APP_ID", "the GitHub App's ID (App settings, About), e.g. 123456"),
    "github_app_private_key": (
        "GITHUB_APP_PRIVATE_KEY",
        "the App's private key, the PEM text (-----BEGIN RSA PRIVATE KEY-----...), or use GITHUB_APP_PRIVATE_KEY_PATH",
    ),
    "github_app_private_key_path": ("GITHUB_APP_PRIVATE_KEY_PATH", "a readable file holding the App's PEM private key"),
    "github_app_installation_id": (
        "GITHUB_APP_INSTALLATION_ID",
        "the installation's ID (the number at the end of its settings URL), e.g. 7654321",
    ),
    "log_format": ("TRACKBOT_LOG_FORMAT", "json (one object per line, the default) or text"),
    # -- surviving faults: leases, the reaper, RQ's own liveness, retries (bot/jobs.py, bot/reaper.py) --
    "heartbeat_interval_s": (
        "TRACKBOT_HEARTBEAT_INTERVAL",
        "seconds between a running job's lease renewals (default 10), at most half of TRACKBOT_LEASE_TTL",
    ),
    "lease_ttl_s": (
        "TRACKBOT_LEASE_TTL",
        "seconds a running job's lease and the repository lock live without a heartbeat (default 45)",
    ),
    "reaper_interval_s": ("TRACKBOT_REAPER_INTERVAL", "seconds between a worker's checks for dead runs (default 15)"),
    "cancel_grace_s": (
        "TRACKBOT_CANCEL_GRACE",
        "seconds a cancelled or orphaned agent gets between SIGTERM and SIGKILL (default 10)",
    ),
    "worker_ttl_s": ("TRACKBOT_WORKER_TTL", "RQ's worker_ttl in seconds, at least 20 (default 60)"),
    "job_monitoring_interval_s": (
        "TRACKBOT_JOB_MONITORING_INTERVAL",
        "RQ's job_monitoring_interval in seconds (default 10)",
    ),
    "rq_maintenance_interval_s": (
        "TRACKBOT_RQ_MAINTENANCE_INTERVAL",
        "seconds between RQ's registry clean-ups, which fail abandoned jobs (default 60)",
    ),
    "github_attempts": (
        "TRACKBOT_GITHUB_ATTEMPTS",
        "tries of a GitHub call that fails with a 5xx or no answer while publishing (default 4)",
    ),
    "github_rate_limit_wait_s": (
        "TRACKBOT_GITHUB_RATE_LIMIT_WAIT",
        "the longest one GitHub rate limit (primary or secondary) is waited out, in seconds (default 120)",
    ),
    "github_retry_backoff_s": (
        "TRACKBOT_GITHUB_RETRY_BACKOFF",
        "seconds before the first GitHub retry, doubled for each next one (default 2)",
    ),
    # -- Slack work answered by the workers (handlers/slack_work.py) --
    "slack_work_threads": (
        "TRACKBOT_SLACK_WORK_THREADS",
        "threads per worker that answer Slack commands and clicks (default 4; 0 = the web process answers)",
    ),
    "slack_work_claim_idle_s": (
        "TRACKBOT_SLACK_WORK_CLAIM_IDLE",
        "seconds before another worker takes over a Slack command a dead worker had taken (default 120)",
    ),
    "queue_key_setting": (
        "TRACKBOT_QUEUE_KEY",
        "a long random secret shared by the web app and the workers (default: derived from SLACK_SIGNING_SECRET)",
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
    # Optional: a GitHub App (the GITHUB_APP_* block at the end) may be configured instead.
    github_token: SecretStr | None = Field(default=None, validation_alias=AliasChoices("GITHUB_TOKEN", "github_token"))
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
    agent_idle_timeout_s: int = Field(
        default=600, ge=0, validation_alias=AliasChoices("TRACKBOT_AGENT_IDLE_TIMEOUT", "agent_idle_timeout_s")
    )
    agent_env_passthrough: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["OPENAI_API_KEY", "CODEX_HOME"],
        validation_alias=AliasChoices("TRACKBOT_AGENT_ENV", "agent_env_passthrough"),
    )
    # -- the sandbox (bot/adapters/sandbox.py, bot/steps/confined.py) --------------------------------
    sandbox: Literal["bwrap", "off"] = Field(
        default="bwrap", validation_alias=AliasChoices("TRACKBOT_SANDBOX", "sandbox")
    )
    agent_egress: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: list(DEFAULT_AGENT_EGRESS),
        validation_alias=AliasChoices("TRACKBOT_AGENT_EGRESS", "agent_egress"),
    )
    sandbox_read_only: Annotated[list[Path], NoDecode] = Field(
        default_factory=list,
        validation_alias=AliasChoices("TRACKBOT_SANDBOX_READ_ONLY", "sandbox_read_only"),
    )
    work_dir: Path = Field(default=Path(".trackbot"), validation_alias=AliasChoices("TRACKBOT_WORK_DIR", "work_dir"))
    github_write_interval_s: float = Field(
        default=1.0,
        ge=0,
        validation_alias=AliasChoices("TRACKBOT_GITHUB_WRITE_INTERVAL", "github_write_interval_s"),
    )
    base_branch: str = Field(default="main", validation_alias=AliasChoices("TRACKBOT_BASE_BRANCH", "base_branch"))

    # -- surviving faults (bot/jobs.py, bot/reaper.py, bot/cli.py: cmd_worker) ----------------------
    # trackbot's reaper notices a dead run within lease_ttl_s + reaper_interval_s (1 minute by
    # default); RQ itself within job_monitoring_interval_s + 60 + rq_maintenance_interval_s (about 2).
    heartbeat_interval_s: float = Field(
        default=10.0, gt=0, validation_alias=AliasChoices("TRACKBOT_HEARTBEAT_INTERVAL", "heartbeat_interval_s")
    )
    lease_ttl_s: float = Field(default=45.0, gt=0, validation_alias=AliasChoices("TRACKBOT_LEASE_TTL", "lease_ttl_s"))
    reaper_interval_s: float = Field(
        default=15.0, gt=0, validation_alias=AliasChoices("TRACKBOT_REAPER_INTERVAL", "reaper_interval_s")
    )
    cancel_grace_s: float = Field(
        default=10.0, ge=0, validation_alias=AliasChoices("TRACKBOT_CANCEL_GRACE", "cancel_grace_s")
    )
    worker_ttl_s: int = Field(default=60, ge=20, validation_alias=AliasChoices("TRACKBOT_WORKER_TTL", "worker_ttl_s"))
    job_monitoring_interval_s: int = Field(
        default=10,
        gt=0,
        validation_alias=AliasChoices("TRACKBOT_JOB_MONITORING_INTERVAL", "job_monitoring_interval_s"),
    )
    rq_maintenance_interval_s: int = Field(
        default=60,
        gt=0,
        validation_alias=AliasChoices("TRACKBOT_RQ_MAINTENANCE_INTERVAL", "rq_maintenance_interval_s"),
    )
    github_attempts: int = Field(
        default=4, ge=1, validation_alias=AliasChoices("TRACKBOT_GITHUB_ATTEMPTS", "github_attempts")
    )
    github_rate_limit_wait_s: float = Field(
        default=120.0,
        ge=0,
        validation_alias=AliasChoices("TRACKBOT_GITHUB_RATE_LIMIT_WAIT", "github_rate_limit_wait_s"),
    )
    github_retry_backoff_s: float = Field(
        default=2.0, ge=0, validation_alias=AliasChoices("TRACKBOT_GITHUB_RETRY_BACKOFF", "github_retry_backoff_s")
    )
    slack_work_threads: int = Field(
        default=4, ge=0, le=64, validation_alias=AliasChoices("TRACKBOT_SLACK_WORK_THREADS", "slack_work_threads")
    )
    slack_work_claim_idle_s: float = Field(
        default=120.0,
        gt=0,
        validation_alias=AliasChoices("TRACKBOT_SLACK_WORK_CLAIM_IDLE", "slack_work_claim_idle_s"),
    )

    # The key that signs queued jobs and Slack work (bot/jobqueue.py, handlers/slack_work.py).
    queue_key_setting: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("TRACKBOT_QUEUE_KEY", "queue_key_setting")
    )

    @property
    def queue_key(self) -> bytes:
        """TRACKBOT_QUEUE_KEY, or a key derived from SLACK_SIGNING_SECRET (an HMAC of a fixed label), so every
        process of a deployment shares it with nothing new to configure."""
        if self.queue_key_setting is not None and self.queue_key_setting.get_secret_value():
            return self.queue_key_setting.get_secret_value().encode()
        secret = self.slack_signing_secret.get_secret_value().encode()
        return hmac.new(secret, QUEUE_KEY_LABEL, hashlib.sha256).digest()

    @field_validator("lease_ttl_s")
    @classmethod
    def _lease_outlives_heartbeats(cls, value: float, info: ValidationInfo) -> float:
        beat = info.data.get("heartbeat_interval_s")
        if beat is not None and value < 2 * beat:
            raise ValueError(f"{value:g}s is less than twice TRACKBOT_HEARTBEAT_INTERVAL ({beat:g}s)")
        return value

    # -- GitHub App authentication and operations (bot/adapters/github.py, bot/logs.py) ------------
    # Declared last: the installation ID's validator checks that exactly one of GITHUB_TOKEN and the
    # App is configured, so it needs every other GitHub setting validated first.
    github_app_id: str | None = Field(default=None, validation_alias=AliasChoices("GITHUB_APP_ID", "github_app_id"))
    github_app_private_key: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("GITHUB_APP_PRIVATE_KEY", "github_app_private_key")
    )
    github_app_private_key_path: Path | None = Field(
        default=None, validation_alias=AliasChoices("GITHUB_APP_PRIVATE_KEY_PATH", "github_app_private_key_path")
    )
    github_app_installation_id: int | None = Field(
        default=None,
        gt=0,
        validate_default=True,
        validation_alias=AliasChoices("GITHUB_APP_INSTALLATION_ID", "github_app_installation_id"),
    )
    log_format: Literal["json", "text"] | None = Field(
        default=None, validation_alias=AliasChoices("TRACKBOT_LOG_FORMAT", "log_format")
    )

    @field_validator(
        "github_token",
        "github_repository",  # GITHUB_REPOSITORY= (blank) with TRACKBOT_CHANNELS: unset
        "github_app_id",
        "github_app_private_key",
        "github_app_private_key_path",
        "github_app_installation_id",
        "log_format",
        mode="before",
    )
    @classmethod
    def _blank_is_unset(cls, value: Any) -> Any:
        if isinstance(value, str) and not value.strip():
            return None
        return value.strip() if isinstance(value, str) and not value.startswith("-----") else value

    @field_validator("github_app_private_key")
    @classmethod
    def _pem_text(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return None
        # A .env file often holds the PEM on one line with literal \n between its lines.
        text = value.get_secret_value().replace("\\n", "\n").strip()
        if "-----BEGIN" not in text or "PRIVATE KEY-----" not in text:
            raise ValueError("not a PEM private key (it should start with -----BEGIN ... PRIVATE KEY-----)")
        return SecretStr(text + "\n")

    @field_validator("github_app_private_key_path")
    @classmethod
    def _pem_file(cls, value: Path | None) -> Path | None:
        if value is None:
            return None
        try:
            text = value.read_text()
        except OSError as error:
            raise ValueError(f"cannot read {value}: {error.strerror or error}") from None
        if "PRIVATE KEY-----" not in text:
            raise ValueError(f"{value} does not hold a PEM private key")
        return value

    @field_validator("github_app_installation_id")
    @classmethod
    def _github_credentials(cls, value: int | None, info: ValidationInfo) -> int | None:
        data = info.data
        involved = ("github_token", "github_app_id", "github_app_private_key", "github_app_private_key_path")
        if any(name not in data for name in involved):
            return value  # one of them is malformed: that error is reported on its own
        token = data["github_token"] is not None
        key, key_path = data["github_app_private_key"] is not None, data["github_app_private_key_path"] is not None
        app_parts = {
            "github_app_id": data["github_app_id"] is not None,
            "github_app_private_key": key or key_path,
            "github_app_installation_id": value is not None,
        }
        app_named = ", ".join(SETTING_HINTS[name][0] for name in app_parts)
        if token and any(app_parts.values()):
            raise _setting_error(
                "github_token", f"set together with the GitHub App ({app_named}): configure exactly one of the two"
            )
        if token:
            return value
        if not token and not any(app_parts.values()):
            raise _setting_error(
                "github_token",
                "missing (or configure a GitHub App instead: GITHUB_APP_ID, GITHUB_APP_PRIVATE_KEY or "
                "GITHUB_APP_PRIVATE_KEY_PATH, and GITHUB_APP_INSTALLATION_ID; exactly one of the two)",
            )
        missing = [name for name, present in app_parts.items() if not present]
        if missing:
            raise _setting_error(missing[0], f"missing: a GitHub App needs all of {app_named} (or use GITHUB_TOKEN)")
        if key and key_path:
            raise _setting_error("github_app_private_key_path", "set together with GITHUB_APP_PRIVATE_KEY: use one")
        return value

    @property
    def uses_github_app(self) -> bool:
        """Whether GitHub is reached as a GitHub App installation (else with GITHUB_TOKEN)."""
        return self.github_app_installation_id is not None

    def github_app_key(self) -> str | None:
        """The App's PEM private key (from GITHUB_APP_PRIVATE_KEY or the file at its _PATH), if configured."""
        if self.github_app_private_key is not None:
            return self.github_app_private_key.get_secret_value()
        if self.github_app_private_key_path is not None:
            return self.github_app_private_key_path.read_text()
        return None

    @field_validator("maintainers", "runners", "agent_env_passthrough", "agent_egress", mode="before")
    @classmethod
    def _csv(cls, value: Any) -> Any:
        return _split_csv(value)

    @field_validator("agent_egress")
    @classmethod
    def _egress_entries(cls, value: list[str]) -> list[str]:
        from bot.adapters.egress import Destination

        for entry in value:
            Destination.parse(entry)  # a ValueError names the entry
        return value

    @field_validator("sandbox_read_only", mode="before")
    @classmethod
    def _paths(cls, value: Any) -> Any:
        paths = _split_csv(value)
        for path in paths if isinstance(paths, list) else []:
            if not str(path).startswith("/"):
                raise ValueError(f"{path!r} is not an absolute path")
        return paths

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
            raise ValueError("at least one maintainer (or TRACKBOT_MAINTAINER_GROUPS) is needed to approve advances")
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

    def configured_repository(self, name: str) -> str | None:
        """`name` as this deployment spells it: GitHub's repository names are case-insensitive, so a
        webhook for Acme/Widgets belongs to acme/widgets. None when it is not served here."""
        wanted = name.lower()
        return next((repo for repo in self.repositories if repo.lower() == wanted), None)

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
            *([self.github_token] if self.github_token is not None else []),
            self.github_webhook_secret,
            *([self.queue_key_setting] if self.queue_key_setting is not None else []),
        ]
        if self.slack_app_token is not None:
            secrets.append(self.slack_app_token)
        values = [s.get_secret_value() for s in secrets if s.get_secret_value()]
        values += _url_passwords(self.redis_url)
        with contextlib.suppress(OSError):
            key = self.github_app_key()
            if key:
                values += [key, key.strip()]
        return values


def _url_passwords(url: str | None) -> list[str]:
    """The password in a Redis URL (its user part, or `?password=` as the embedded server's has it)."""
    if not url:
        return []
    parts = urllib.parse.urlsplit(url)
    found = [parts.password] if parts.password else []
    found += [v for k, v in urllib.parse.parse_qsl(parts.query) if k == "password" and v]
    return [urllib.parse.unquote(p) for p in found]


def _setting_error(field: str, problem: str) -> PydanticCustomError:
    """An error about `field` raised by another field's validator (a check across several settings)."""
    return PydanticCustomError("setting", "{problem}", {"problem": problem, "setting": field})


class ConfigError(Exception):
    """Settings are missing or malformed; the message names every one."""


def describe_validation_error(error: ValidationError) -> str:
    """Turn pydantic's error into one readable message: each bad setting and its expected form."""
    lines = ["trackbot is not configured correctly:"]
    seen: set[str] = set()
    for item in error.errors():
        # A check across settings names the setting it blames in its context (see _setting_error).
        field = str((item.get("ctx") or {}).get("setting") or (item["loc"][0] if item["loc"] else "?"))
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
