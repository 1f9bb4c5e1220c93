"""`trackbot doctor` and `trackbot status`, run as an operator runs them, against the local stack."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from pydantic import SecretStr

import bot.local.slack_api
from bot.doctor import REQUIRED_SLACK_SCOPES, run_doctor
from bot.local.console import LocalStack, settings_environment
from bot.metrics import worker_beats

MakeStack = Callable[..., LocalStack]


def env_of(stack: LocalStack, **changes: str) -> dict[str, str]:
    """The stack's settings as a process environment (nothing inherited from ours), with changes."""
    assert stack.services is not None
    base = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "GITHUB_", "TRACKBOT_"))}
    return {**base, **settings_environment(stack.services.settings), **changes}


def wait_for_worker(stack: LocalStack, timeout: float = 30) -> None:
    """Until the stack's worker process has registered with RQ (it starts in the background)."""
    assert stack.services is not None
    deadline = time.monotonic() + timeout
    while not worker_beats(stack.services.redis, stack.services.queue):
        assert time.monotonic() < deadline, "the worker did not register"
        time.sleep(0.05)


def trackbot(cwd: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bot.cli", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )


def lines_of(output: str) -> dict[str, str]:
    """`ok   name: detail` / `FAIL name: detail — fix` lines by check name."""
    found = {}
    for line in output.splitlines():
        status, _, rest = line.partition(" ")
        name, sep, _detail = rest.strip().partition(": ")
        if status in ("ok", "FAIL") and sep:
            found[name] = line
    return found


def test_doctor_passes_every_check_against_the_local_stack(make_stack: MakeStack, tmp_path: Path) -> None:
    stack = make_stack()
    assert stack.services is not None
    repo = stack.services.settings.github_repository
    wait_for_worker(stack)
    done = trackbot(tmp_path, env_of(stack), "doctor")
    assert done.returncode == 0, done.stdout + done.stderr
    checks = lines_of(done.stdout)
    assert list(checks) == [
        "settings",
        "redis",
        "workers",
        "slack",
        "slack scopes",
        f"github {repo}",
        f"github {repo} push",
        "agent",
        "sandbox",
    ], done.stdout
    assert all(line.startswith("ok ") for line in checks.values()), done.stdout
    assert "appendonly yes, maxmemory-policy noeviction" in checks["redis"]
    assert "1 alive" in checks["workers"]
    assert "signed in as trackbot" in checks["slack"]
    assert f"{', '.join(REQUIRED_SLACK_SCOPES)} granted" in checks["slack scopes"]
    assert "NEXT_TRACK = 1" in checks[f"github {repo}"]
    assert "may push and open pull requests" in checks[f"github {repo} push"]
    assert sys.executable in checks["agent"]
    assert done.stdout.rstrip().endswith("all 9 checks passed")


def test_doctor_fails_with_what_to_do_for_a_bad_token_no_agent_and_no_redis(
    make_stack: MakeStack, tmp_path: Path
) -> None:
    stack = make_stack()
    assert stack.services is not None
    repo = stack.services.settings.github_repository
    bad_token = "ghp_revoked" + "z" * 30
    env = env_of(
        stack,
        GITHUB_TOKEN=bad_token,
        TRACKBOT_AGENT_COMMAND="no-such-agent-binary --json {worktree}",
        REDIS_URL="redis://127.0.0.1:9/0",  # nothing listens on the discard port
    )
    done = trackbot(tmp_path, env, "doctor")
    assert done.returncode == 1, done.stdout + done.stderr
    checks = lines_of(done.stdout)
    assert checks["settings"].startswith("ok ")
    assert checks["redis"].startswith("FAIL redis: redis://127.0.0.1:9/0 does not answer")
    assert checks["redis"].endswith("— check REDIS_URL and that Redis runs")
    assert checks["workers"].startswith("FAIL workers: cannot tell")
    assert checks["slack"].startswith("ok ")
    assert checks[f"github {repo}"].startswith(f"FAIL github {repo}: calling GitHub to read the repository: 401")
    assert checks[f"github {repo}"].endswith("— GitHub refused the credentials: check GITHUB_TOKEN")
    assert checks["agent"] == (
        "FAIL agent: no-such-agent-binary is not an executable on PATH — install it where "
        "`trackbot worker` runs, or set TRACKBOT_AGENT_COMMAND"
    )
    assert bad_token not in done.stdout + done.stderr
    assert done.stdout.rstrip().endswith("4 of 8 checks failed")


def test_doctor_names_missing_slack_scopes_and_a_token_that_may_not_push(
    make_stack: MakeStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    stack = make_stack()
    assert stack.services is not None and stack.github is not None
    repo = stack.services.settings.github_repository
    monkeypatch.setattr(bot.local.slack_api, "SCOPES", "commands,users:read")  # the twin runs in this process
    stack.github.repo_permissions = {"admin": False, "push": False, "pull": True}
    out = io.StringIO()
    assert run_doctor(out, {"slack", "github"}, settings=stack.services.settings) == 1
    checks = lines_of(out.getvalue())
    assert checks["slack"].startswith("ok ")
    assert checks["slack scopes"] == (
        "FAIL slack scopes: missing chat:write (granted: commands, users:read) — add them under "
        "OAuth & Permissions > Bot Token Scopes, then reinstall the app"
    )
    assert checks[f"github {repo}"].startswith("ok ")  # it may read the knob...
    assert checks[f"github {repo} push"].startswith(f"FAIL github {repo} push: the token may read but not push")
    assert "settings" not in checks and "agent" not in checks  # only what was asked


def test_doctor_reports_a_missing_knob(make_stack: MakeStack, tmp_path: Path) -> None:
    stack = make_stack()
    assert stack.services is not None
    settings = stack.services.settings.model_copy(update={"base_branch": "no-such-branch"})
    out = io.StringIO()
    assert run_doctor(out, {"github"}, settings=settings) == 1
    repo = settings.github_repository
    assert f"FAIL github {repo}: " in out.getvalue()


def test_doctor_reports_bad_settings_as_one_failed_check(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # no .env
    for name in list(os.environ):
        if name.startswith(("SLACK_", "GITHUB_", "TRACKBOT_", "REDIS_URL")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("GITHUB_REPOSITORY", "widgets")
    out = io.StringIO()
    assert run_doctor(out) == 1
    text = out.getvalue()
    assert text.startswith("FAIL settings: trackbot is not configured correctly:")
    assert "SLACK_BOT_TOKEN: missing" in text and "GITHUB_REPOSITORY: 'widgets' is not owner/name" in text
    assert "GITHUB_TOKEN: missing (or configure a GitHub App instead" in text
    assert "fix the settings named above" in text


def test_doctor_only_runs_the_named_checks(make_stack: MakeStack, tmp_path: Path) -> None:
    stack = make_stack()
    done = trackbot(tmp_path, env_of(stack), "doctor", "--only", "redis")
    assert done.returncode == 0, done.stdout + done.stderr
    assert list(lines_of(done.stdout)) == ["redis"]
    done = trackbot(tmp_path, env_of(stack), "doctor", "--only", "redis,nonsense")
    assert done.returncode == 2 and "unknown check(s): nonsense" in done.stdout


def test_doctor_masks_the_redis_password(make_stack: MakeStack, tmp_path: Path) -> None:
    stack = make_stack()
    done = trackbot(
        tmp_path, env_of(stack, REDIS_URL="redis://:pa55-w0rd-secret@127.0.0.1:9/0"), "doctor", "--only", "redis"
    )
    assert done.returncode == 1
    assert "pa55-w0rd-secret" not in done.stdout and "redis://:***@127.0.0.1:9/0" in done.stdout


# == trackbot status ===========================================================================


def test_status_prints_what_slash_track_status_says(make_stack: MakeStack, tmp_path: Path) -> None:
    stack = make_stack()
    assert stack.services is not None
    repo = str(stack.services.settings.github_repository)
    done = trackbot(tmp_path, env_of(stack), "status", "--repo", repo)
    assert done.returncode == 0, done.stdout + done.stderr
    first, second, third = done.stdout.splitlines()[:3]
    assert first == f"{repo} — plan `v1`, NEXT_TRACK = 1"  # no mrkdwn stars
    assert second.startswith("Track 1: hello-endpoint — doc ")
    assert "docs/plan/v1/tracks/track-01-hello-endpoint.md" in second and "<" not in second
    assert third.startswith("State: idle")

    done = trackbot(tmp_path, env_of(stack), "status", "--repo", "acme/elsewhere")
    assert done.returncode == 2 and f"name a configured repository with --repo: {repo}" in done.stderr


def test_status_says_why_it_cannot_read_the_plan(make_stack: MakeStack, tmp_path: Path) -> None:
    stack = make_stack()
    done = trackbot(tmp_path, env_of(stack, GITHUB_TOKEN="ghp_revoked" + "q" * 30), "status")
    assert done.returncode == 1
    assert "I could not read the plan" in done.stdout and "401" in done.stdout


def test_settings_secret_is_not_printed_by_the_doctor(make_stack: MakeStack) -> None:
    stack = make_stack()
    assert stack.services is not None
    webhook = "whsec-" + "w" * 30
    settings = stack.services.settings.model_copy(
        update={"github_webhook_secret": SecretStr(webhook), "agent_command": f"{webhook} --go"}
    )
    out = io.StringIO()
    run_doctor(out, {"agent"}, settings=settings)
    assert webhook not in out.getvalue() and "[redacted]" in out.getvalue()
