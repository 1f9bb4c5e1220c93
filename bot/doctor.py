"""`trackbot doctor` and `/readyz`: is every setting right, and does every service answer?

`trackbot doctor` prints one line per check, `ok` or `FAIL` with what to do, and exits non-zero
when any fails:

- settings: every setting (the same message as at start),
- redis: REDIS_URL answers PING; persistence (appendonly) and `maxmemory-policy noeviction`,
- workers: at least one `trackbot worker` keeps a heartbeat on the queue,
- slack: SLACK_BOT_TOKEN passes `auth.test`, and the token has the scopes the app needs,
- github: the credentials (a token, or the App installation and its permissions) can read the
  knob of each configured repository, and may push and open PRs there,
- agent: the first word of TRACKBOT_AGENT_COMMAND is an executable on PATH.

`Readiness` (the web app's `/readyz`) runs the Slack and GitHub checks once (a success is kept;
a failure is tried again after a while) and pings Redis on every call.
"""

from __future__ import annotations

import functools
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from redis import Redis, RedisError
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError, SlackClientError

from bot.adapters.agent import AgentCommandError, agent_argv
from bot.adapters.github import GitHubAuth, GitHubError, GitHubRepo
from bot.adapters.redis_server import masked_url
from bot.adapters.sandbox import probe as sandbox_probe
from bot.config import ConfigError, Settings, load_settings
from bot.knob import KnobError, parse_knob
from bot.metrics import worker_beats
from bot.redact import Redactor
from bot.rules import DEFAULT_RULES

# The bot token scopes the Slack app's manifest asks for (README: Setup).
REQUIRED_SLACK_SCOPES: tuple[str, ...] = ("commands", "chat:write")
# What a GitHub App installation must grant (README: GitHub permissions). Write includes read.
REQUIRED_APP_PERMISSIONS: dict[str, str] = {"contents": "write", "pull_requests": "write", "metadata": "read"}
CHECKS = ("settings", "redis", "workers", "slack", "github", "agent", "sandbox")
TIMEOUT_S = 10


@dataclass(frozen=True)
class Check:
    """One line of the doctor's answer."""

    name: str
    ok: bool
    detail: str
    fix: str = ""

    def line(self) -> str:
        """`ok   name: detail` or `FAIL name: detail — fix`."""
        text = f"{'ok' if self.ok else 'FAIL':<4} {self.name}: {self.detail}"
        return text if self.ok or not self.fix else f"{text} — {self.fix}"


# -- the checks ---------------------------------------------------------------------------------


def check_redis(settings: Settings) -> tuple[Check, Redis | None]:
    """REDIS_URL answers PING; AOF on and no eviction, when the server lets us read its config."""
    if not settings.redis_url:
        where = settings.work_dir / "redis"
        return (
            Check(
                "redis",
                True,
                f"REDIS_URL is not set: web and worker start an embedded server under {where} "
                "(one machine only; set REDIS_URL to share Redis between machines)",
            ),
            None,
        )
    url = masked_url(settings.redis_url)
    client = Redis.from_url(settings.redis_url, socket_connect_timeout=3, socket_timeout=3)
    try:
        client.ping()
    except RedisError as error:
        client.close()
        return Check("redis", False, f"{url} does not answer: {error}", "check REDIS_URL and that Redis runs"), None
    try:
        config = {**client.config_get("appendonly"), **client.config_get("maxmemory-policy")}
    except RedisError:
        return Check("redis", True, f"{url} answers PING (CONFIG is not allowed here: persistence not checked)"), client
    config = {_text(k): _text(v) for k, v in config.items()}
    appendonly, policy = config.get("appendonly", "?"), config.get("maxmemory-policy", "?")
    if policy != "noeviction":
        return (
            Check(
                "redis",
                False,
                f"{url} has maxmemory-policy {policy}: Redis may evict queued runs and locks",
                "set maxmemory-policy noeviction",
            ),
            client,
        )
    if appendonly != "yes":
        return (
            Check(
                "redis",
                False,
                f"{url} has appendonly {appendonly}: a restart loses queued runs and locks",
                "set appendonly yes (and appendfsync everysec)",
            ),
            client,
        )
    return Check("redis", True, f"{url} answers PING (appendonly yes, maxmemory-policy noeviction)"), client


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def check_workers(redis: Redis | None) -> Check:
    """At least one worker keeps a heartbeat on trackbot's queue."""
    from bot.jobqueue import QUEUE_NAME, make_queue

    if redis is None:
        return Check("workers", False, "cannot tell: Redis is not reachable from here", "fix redis first")
    try:
        beats = worker_beats(redis, make_queue(redis))
    except RedisError as error:
        return Check("workers", False, f"cannot list workers: {error}", "fix redis first")
    if not beats:
        return Check(
            "workers",
            False,
            f"no worker is registered on the {QUEUE_NAME} queue",
            "start `trackbot worker`; runs wait in the queue until one does",
        )
    shown = ", ".join(
        f"{b.hostname or b.name} pid {b.pid} {b.state} (heartbeat {b.age_s:.0f}s ago)"
        if b.age_s is not None
        else f"{b.hostname or b.name} pid {b.pid} {b.state}"
        for b in beats
    )
    return Check("workers", True, f"{len(beats)} alive: {shown}")


def check_slack(client: WebClient) -> list[Check]:
    """`auth.test` accepts the bot token, and the token has REQUIRED_SLACK_SCOPES."""
    try:
        response = client.auth_test()
    except SlackApiError as error:
        code = str(error.response.get("error", "error"))
        return [
            Check(
                "slack",
                False,
                f"auth.test refused SLACK_BOT_TOKEN ({code})",
                "copy the Bot User OAuth Token (xoxb-…) from the app's OAuth & Permissions page",
            )
        ]
    except (SlackClientError, OSError) as error:
        return [Check("slack", False, f"cannot reach Slack: {error}", "check SLACK_API_URL and the network")]
    who = f"signed in as {response.get('user')} ({response.get('user_id')}) in {response.get('team')}"
    headers = {k.lower(): v for k, v in (response.headers or {}).items()}
    raw = headers.get("x-oauth-scopes")
    if isinstance(raw, list):
        raw = ",".join(raw)
    checks = [Check("slack", True, who)]
    if raw is None:
        checks.append(
            Check("slack scopes", False, "Slack did not report the token's scopes", "use a bot token (xoxb-…)")
        )
        return checks
    granted = {s.strip() for s in str(raw).split(",") if s.strip()}
    missing = [s for s in REQUIRED_SLACK_SCOPES if s not in granted]
    if missing:
        checks.append(
            Check(
                "slack scopes",
                False,
                f"missing {', '.join(missing)} (granted: {', '.join(sorted(granted)) or 'none'})",
                "add them under OAuth & Permissions > Bot Token Scopes, then reinstall the app",
            )
        )
    else:
        checks.append(Check("slack scopes", True, f"{', '.join(REQUIRED_SLACK_SCOPES)} granted"))
    return checks


def _github_fix(error: GitHubError, settings: Settings) -> str:
    credentials = (
        "GITHUB_APP_ID, the private key and GITHUB_APP_INSTALLATION_ID" if settings.uses_github_app else "GITHUB_TOKEN"
    )
    if error.status == 401:
        return f"GitHub refused the credentials: check {credentials}"
    if error.status in (403, 404):
        return (
            "install the App on this repository (or give it access to it)"
            if settings.uses_github_app
            else "give the token access to this repository"
        )
    if error.status is None:
        return "check GITHUB_API_URL and the network"
    return "try again; if it persists, check GitHub's status"


def check_github_app(auth: GitHubAuth, settings: Settings) -> Check:
    """The App's JWT is accepted and its installation grants REQUIRED_APP_PERMISSIONS."""
    try:
        granted = auth.installation_permissions()
    except GitHubError as error:
        return Check("github app", False, str(error), _github_fix(error, settings))
    rank = {"read": 1, "write": 2, "admin": 3}
    short = [
        f"{name}: {need}"
        for name, need in REQUIRED_APP_PERMISSIONS.items()
        if rank.get(granted.get(name, ""), 0) < rank[need]
    ]
    if short:
        return Check(
            "github app",
            False,
            f"installation {settings.github_app_installation_id} lacks {', '.join(short)}",
            "grant them in the App's Permissions & events page, then accept the new permissions on the installation",
        )
    shown = ", ".join(f"{k}: {granted[k]}" for k in REQUIRED_APP_PERMISSIONS)
    return Check("github app", True, f"installation {settings.github_app_installation_id} grants {shown}")


def check_github_repo(github: GitHubRepo, settings: Settings) -> list[Check]:
    """The credentials read the repository's knob, and may push and open PRs."""
    repo = github.repository
    knob_path, base = DEFAULT_RULES.knob_path, settings.base_branch
    try:
        access = github.access()
        found = github.read_text(knob_path, base)
    except GitHubError as error:
        return [Check(f"github {repo}", False, str(error), _github_fix(error, settings))]
    if found is None:
        knob = Check(
            f"github {repo}",
            False,
            f"{knob_path} does not exist on {base}",
            "add the knob (see README), or fix GITHUB_REPOSITORY / TRACKBOT_CHANNELS",
        )
    else:
        try:
            parsed = parse_knob(found[0], knob_path)
            knob = Check(f"github {repo}", True, f"reads {knob_path} on {base}: NEXT_TRACK = {parsed.next_track}")
        except KnobError as error:
            knob = Check(f"github {repo}", False, f"{knob_path} on {base} is malformed: {error}", "fix the knob")
    if settings.uses_github_app:
        # An installation token's access is the installation's (checked under "github app").
        push = Check(f"github {repo} push", True, "the App installation can see it; its permissions apply")
    elif access.permissions is None:
        push = Check(
            f"github {repo} push",
            False,
            "GitHub did not say whether the token may push",
            "use a token with contents and pull requests write access",
        )
    elif not access.permissions.get("push"):
        push = Check(
            f"github {repo} push",
            False,
            "the token may read but not push",
            "give the token contents: write and pull requests: write on this repository",
        )
    else:
        push = Check(f"github {repo} push", True, "the token may push and open pull requests")
    return [knob, push]


def check_agent(settings: Settings) -> Check:
    """The agent's executable (the first word of TRACKBOT_AGENT_COMMAND) is on PATH."""
    try:
        program = agent_argv(settings.agent_command, Path("."))[0]
    except AgentCommandError as error:
        return Check("agent", False, str(error), "fix TRACKBOT_AGENT_COMMAND")
    if "/" in program and not Path(program).is_absolute():
        return Check("agent", True, f"{program} is relative to the work tree: not checked here")
    found = shutil.which(program)
    if found is None:
        return Check(
            "agent",
            False,
            f"{program} is not an executable on PATH",
            "install it where `trackbot worker` runs, or set TRACKBOT_AGENT_COMMAND",
        )
    return Check("agent", True, f"{program} is {found}")


def check_sandbox(settings: Settings) -> Check:
    """A sandbox can be made here for the agent and the gates (or the operator turned it off)."""
    if settings.sandbox == "off":
        return Check(
            "sandbox",
            True,
            "OFF (TRACKBOT_SANDBOX=off): the agent and the gates run UNCONFINED, with this worker's files, "
            "secrets and network; every report says so",
        )
    reason = sandbox_probe()
    if reason is not None:
        return Check("sandbox", False, reason, "until then every run STOPs before the agent")
    egress = ", ".join(settings.agent_egress) or "none"
    return Check("sandbox", True, f"bubblewrap confines the agent and the gates; the agent may reach: {egress}")


# -- trackbot doctor ----------------------------------------------------------------------------


def run_doctor(out: TextIO, only: set[str] | None = None, settings: Settings | None = None) -> int:
    """Run the checks (all, or those named in `only`), print one line each; 0 when every one passed."""
    wanted = set(CHECKS) if not only else set(only)
    unknown = wanted - set(CHECKS)
    if unknown:
        print(f"unknown check(s): {', '.join(sorted(unknown))}; choose from {', '.join(CHECKS)}", file=out)
        return 2
    checks: list[Check] = []
    redact = Redactor()

    def report(found: list[Check]) -> None:
        for check in found:
            checks.append(check)
            print(redact(check.line()), file=out, flush=True)

    if settings is None:
        try:
            settings = load_settings()
        except ConfigError as error:
            report([Check("settings", False, str(error).replace("\n", "\n     "), "fix the settings named above")])
            return 1
    redact = Redactor(settings.secret_values())
    if "settings" in wanted:
        repos = ", ".join(settings.repositories)
        mode = "a GitHub App installation" if settings.uses_github_app else "GITHUB_TOKEN"
        report([Check("settings", True, f"every setting is well-formed; repositories: {repos}; GitHub via {mode}")])
    redis: Redis | None = None
    if wanted & {"redis", "workers"}:
        redis_check, redis = check_redis(settings)
        if "redis" in wanted:
            report([redis_check])
        if "workers" in wanted:
            if redis is None and not settings.redis_url:
                report([Check("workers", True, "not checked: REDIS_URL is not set (embedded Redis)")])
            else:
                report([check_workers(redis)])
    if "slack" in wanted:
        client = WebClient(
            token=settings.slack_bot_token.get_secret_value(), base_url=settings.slack_api_url, timeout=TIMEOUT_S
        )
        report(check_slack(client))
    if "github" in wanted:
        report(_github_checks(settings))
    if "agent" in wanted:
        report([check_agent(settings)])
    if "sandbox" in wanted:
        report([check_sandbox(settings)])
    if redis is not None:
        redis.close()
    failed = [c for c in checks if not c.ok]
    if failed:
        print(f"{len(failed)} of {len(checks)} checks failed", file=out)
        return 1
    print(f"all {len(checks)} checks passed", file=out)
    return 0


def _github_checks(settings: Settings) -> list[Check]:
    token = settings.github_token.get_secret_value() if settings.github_token is not None else None
    try:
        auth = GitHubAuth(
            token,
            app_id=settings.github_app_id,
            private_key=settings.github_app_key(),
            installation_id=settings.github_app_installation_id,
            base_url=settings.github_api_url,
            timeout=TIMEOUT_S,
        )
    except (ValueError, OSError) as error:
        return [Check("github", False, f"cannot use the GitHub credentials: {error}", "check the GitHub settings")]
    checks: list[Check] = []
    if auth.kind == "app":
        app = check_github_app(auth, settings)
        checks.append(app)
        if not app.ok:
            return checks
    for repository in settings.repositories:
        github = GitHubRepo(auth, repository, settings.github_api_url, timeout=TIMEOUT_S, write_interval_s=None)
        checks += check_github_repo(github, settings)
    return checks


# -- /readyz ------------------------------------------------------------------------------------


class Readiness:
    """What `/readyz` answers: Redis now, and Slack and GitHub as found once (see the module docstring)."""

    RETRY_FAILED_S = 30.0

    def __init__(
        self,
        redis: Redis,
        slack: WebClient,
        github: Callable[[str], GitHubRepo],
        settings: Settings,
        redact: Callable[[str], str],
    ) -> None:
        self.redis = redis
        self.slack = slack
        self.github = github
        self.settings = settings
        self.redact = redact
        self._lock = threading.Lock()
        self._found: dict[str, tuple[list[Check], float]] = {}

    def _once(self, key: str, probe: Callable[[], list[Check]]) -> list[Check]:
        with self._lock:
            cached = self._found.get(key)
            if cached is not None:
                checks, at = cached
                if all(c.ok for c in checks) or time.monotonic() - at < self.RETRY_FAILED_S:
                    return checks
            checks = probe()
            self._found[key] = (checks, time.monotonic())
            return checks

    def check(self) -> tuple[bool, str]:
        """Whether the app is ready, and a plain-text line per check."""
        checks: list[Check] = []
        try:
            self.redis.ping()
            checks.append(Check("redis", True, "answers PING"))
        except RedisError as error:
            checks.append(Check("redis", False, f"does not answer: {error}", "check REDIS_URL and that Redis runs"))
        # Ready means the token is valid; missing scopes are the doctor's business.
        checks += self._once("slack", lambda: [c for c in check_slack(self.slack) if c.name == "slack"])
        for repository in self.settings.repositories:
            checks += self._once(f"github {repository}", functools.partial(self._github_check, repository))
        ready = all(c.ok for c in checks)
        text = "\n".join(self.redact(c.line()) for c in checks)
        return ready, ("ready\n" if ready else "not ready\n") + text

    def _github_check(self, repository: str) -> list[Check]:
        try:
            access = self.github(repository).access()
        except GitHubError as error:
            return [Check(f"github {repository}", False, str(error), _github_fix(error, self.settings))]
        return [Check(f"github {repository}", True, f"credentials read {access.full_name}")]
