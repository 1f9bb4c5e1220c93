"""GitHub App authentication: settings, installation tokens (minted with a signed JWT, refreshed when
they expire), a whole run as an App, pushes with the installation token.

The GitHub twin plays GitHub: it checks the App's JWT (RS256) against the App's public key before it
issues an installation token, then accepts that token until it expires. The key pair is made here.
"""

from __future__ import annotations

import base64
import io
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import agent_script
from github import Auth, Github, GithubException
from pydantic import SecretStr
from stacks import AppKey, Stack

from bot.adapters.git import TrackClone
from bot.adapters.github import GitHubAuth, GitHubError, GitHubRepo
from bot.config import ConfigError, Settings, load_settings
from bot.doctor import run_doctor
from bot.local.github_api import GitHubTwin
from bot.local.sample import create_sample_repo
from bot.redact import Redactor
from bot.runs import RunState

KNOB = "configs/NEXT_TRACK.json"


@pytest.fixture(scope="module")
def app_key() -> AppKey:
    return AppKey.generate()


@pytest.fixture
def twin(tmp_path: Path, app_key: AppKey) -> Iterator[GitHubTwin]:
    github = GitHubTwin(create_sample_repo(tmp_path / "upstream.git"), "acme/widgets", token="ghp_" + "t" * 36)
    github.start()
    github.enable_app(app_key.app_id, app_key.public_pem, app_key.installation_id, token_ttl_s=23)
    yield github
    github.stop()


def app_auth(twin: GitHubTwin, key: AppKey, private_pem: str | None = None) -> GitHubAuth:
    return GitHubAuth(
        app_id=key.app_id,
        private_key=private_pem or key.private_pem,
        installation_id=key.installation_id,
        base_url=twin.api_url,
    )


# == installation tokens ======================================================================


def test_the_app_reads_and_writes_with_installation_tokens_that_refresh_themselves(
    twin: GitHubTwin, app_key: AppKey
) -> None:
    github = GitHubRepo(app_auth(twin, app_key), "acme/widgets", twin.api_url, write_interval_s=None)
    found = github.read_text(KNOB)
    assert found is not None and '"next_track": 1' in found[0]
    [first] = twin.installation_tokens
    assert first.startswith("ghs_")
    # Tokens here last 23 s; PyGithub takes a new one 20 s before the old one expires.
    time.sleep(3.2)
    assert github.list_dir("docs/plan/v1/tracks") is not None
    assert len(twin.installation_tokens) == 2 and twin.installation_tokens[0] == first
    access = github.access()
    assert access.full_name == "acme/widgets"


def test_a_jwt_signed_with_another_key_gets_no_token(twin: GitHubTwin, app_key: AppKey) -> None:
    stranger = AppKey.generate(app_id=app_key.app_id, installation_id=app_key.installation_id)
    github = GitHubRepo(app_auth(twin, app_key, stranger.private_pem), "acme/widgets", twin.api_url)
    with pytest.raises(GitHubError) as raised:
        github.read_text(KNOB)
    assert raised.value.status == 401 and "JSON web token could not be decoded" in str(raised.value)
    assert twin.installation_tokens == []


def test_an_installation_token_may_not_read_user(twin: GitHubTwin, app_key: AppKey) -> None:
    # As on GitHub: why /readyz and the doctor check the repository, not GET /user, for an App.
    auth = Auth.AppAuth(app_key.app_id, app_key.private_pem).get_installation_auth(app_key.installation_id)
    with pytest.raises(GithubException) as raised:
        Github(auth=auth, base_url=twin.api_url, retry=None).get_user().login  # noqa: B018
    assert raised.value.status == 403


def test_git_pushes_with_a_current_installation_token(twin: GitHubTwin, app_key: AppKey, tmp_path: Path) -> None:
    auth = app_auth(twin, app_key)
    url = "https://github.example/acme/widgets.git"
    clone = TrackClone(tmp_path / "clone", url, token=auth.token)
    clone.path.mkdir(parents=True)

    def header_token() -> str:
        # The token reaches git only through GIT_CONFIG_* variables: `git config` shows what git would send.
        value = clone.git("config", "--get", "http.https://github.example/.extraheader").strip()
        scheme, _, encoded = value.removeprefix("Authorization: ").partition(" ")
        assert scheme == "Basic"
        user, _, token = base64.b64decode(encoded).decode().partition(":")
        assert user == "x-access-token"
        return token

    first = header_token()
    assert first in twin.installation_tokens
    assert header_token() == first  # still valid: not minted again
    time.sleep(3.2)
    second = header_token()
    assert second != first and second == twin.installation_tokens[-1]
    assert list((tmp_path / "clone").rglob("*")) == [clone.path]  # nothing was written anywhere


# == a whole run as a GitHub App ==============================================================


AGENT = """\
import pathlib
pathlib.Path("app").mkdir(exist_ok=True)
pathlib.Path("app/hello.txt").write_text("hello from track 1\\n")
print("wrote app/hello.txt")
"""


def test_a_run_as_a_github_app(tmp_path: Path, redis_url: str, app_key: AppKey) -> None:
    stack = Stack(
        tmp_path,
        redis_url,
        agent_script(tmp_path, AGENT),
        channels={"C0TRACKS": "acme/widgets"},
        app=app_key,
    )
    try:
        stack.start()
        assert stack.services is not None
        answer = stack.command("C0TRACKS", "status")
        assert "NEXT_TRACK = *1*" in answer, answer
        assert stack.command("C0TRACKS", "run").startswith("Queued ")
        stack.wait_idle()
        run = stack.services.store.latest("acme/widgets")
        assert run is not None and run.state is RunState.PR_OPEN, run and (run.state, run.error)
        [pr] = stack.host.pulls()
        assert pr.title == "Track 1: hello-endpoint" and pr.head_ref == "track-1-hello-endpoint"
        # Web and worker each minted installation tokens; nobody had a GITHUB_TOKEN.
        assert len(stack.host.installation_tokens) >= 2
        assert "GITHUB_TOKEN" not in stack.services.settings.model_dump(exclude_none=True)

        out = io.StringIO()
        assert run_doctor(out, {"github"}, settings=stack.services.settings) == 0, out.getvalue()
        lines = out.getvalue().splitlines()
        assert lines[0] == (
            "ok   github app: installation 777 grants contents: write, pull_requests: write, metadata: read"
        )
        assert lines[2] == "ok   github acme/widgets push: the App installation can see it; its permissions apply"
    finally:
        stack.stop()


def test_doctor_names_what_an_installation_lacks(twin: GitHubTwin, app_key: AppKey, tmp_path: Path) -> None:
    twin.enable_app(app_key.app_id, app_key.public_pem, app_key.installation_id, permissions={"contents": "read"})
    settings = load_app_settings(twin, app_key, tmp_path)
    out = io.StringIO()
    assert run_doctor(out, {"github"}, settings=settings) == 1
    assert out.getvalue().splitlines()[0] == (
        "FAIL github app: installation 777 lacks contents: write, pull_requests: write, metadata: read — grant them "
        "in the App's Permissions & events page, then accept the new permissions on the installation"
    )


def load_app_settings(twin: GitHubTwin, key: AppKey, tmp_path: Path) -> Settings:
    return Settings(
        slack_bot_token=SecretStr("xoxb-unused"),
        slack_signing_secret=SecretStr("signing"),
        github_repository="acme/widgets",
        github_api_url=twin.api_url,
        github_webhook_secret=SecretStr("hook-secret"),
        maintainers=["U0ALICE"],
        work_dir=tmp_path,
        github_app_id=key.app_id,
        github_app_private_key=SecretStr(key.private_pem),
        github_app_installation_id=key.installation_id,
    )


# == settings =================================================================================

BASE = {
    "SLACK_BOT_TOKEN": "xoxb-1-abc",
    "SLACK_SIGNING_SECRET": "s3cr3t-signing",
    "GITHUB_REPOSITORY": "acme/widgets",
    "GITHUB_WEBHOOK_SECRET": "hook-secret",
    "TRACKBOT_MAINTAINERS": "U012AB3CD",
}


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    monkeypatch.chdir(tmp_path)  # no stray .env
    for name in list(os.environ):
        if name.startswith(("SLACK_", "GITHUB_", "TRACKBOT_")) or name == "REDIS_URL":
            monkeypatch.delenv(name)
    for name, value in BASE.items():
        monkeypatch.setenv(name, value)
    return monkeypatch


def config_error(env: pytest.MonkeyPatch) -> str:
    with pytest.raises(ConfigError) as raised:
        load_settings()
    return str(raised.value)


def test_an_app_replaces_the_token(env: pytest.MonkeyPatch, app_key: AppKey, tmp_path: Path) -> None:
    env.setenv("GITHUB_APP_ID", app_key.app_id)
    env.setenv("GITHUB_APP_INSTALLATION_ID", str(app_key.installation_id))
    # One line in a .env file, with literal \n between the PEM's lines.
    env.setenv("GITHUB_APP_PRIVATE_KEY", app_key.private_pem.strip().replace("\n", "\\n"))
    settings = load_settings()
    assert settings.uses_github_app and settings.github_token is None
    assert settings.github_app_key() == app_key.private_pem
    assert settings.github_app_installation_id == app_key.installation_id
    # The key is a secret like the others: the redactor removes it by value.
    redact = Redactor(settings.secret_values())
    assert app_key.private_pem not in redact(f"oops: {app_key.private_pem}")

    path = tmp_path / "app.pem"
    path.write_text(app_key.private_pem)
    env.delenv("GITHUB_APP_PRIVATE_KEY")
    env.setenv("GITHUB_APP_PRIVATE_KEY_PATH", str(path))
    assert load_settings().github_app_key() == app_key.private_pem


def test_exactly_one_of_token_and_app(env: pytest.MonkeyPatch, app_key: AppKey, tmp_path: Path) -> None:
    assert "GITHUB_TOKEN: missing (or configure a GitHub App instead: GITHUB_APP_ID" in config_error(env)

    env.setenv("GITHUB_TOKEN", "ghp_" + "a" * 36)
    env.setenv("GITHUB_APP_ID", "12345")
    message = config_error(env)
    assert "GITHUB_TOKEN: set together with the GitHub App" in message and "configure exactly one" in message

    env.delenv("GITHUB_TOKEN")
    message = config_error(env)
    assert "GITHUB_APP_PRIVATE_KEY: missing: a GitHub App needs all of GITHUB_APP_ID" in message
    assert "Expected: the App's private key" in message  # the hint

    env.setenv("GITHUB_APP_PRIVATE_KEY_PATH", str(tmp_path / "nowhere.pem"))
    env.setenv("GITHUB_APP_INSTALLATION_ID", "soon")
    env.setenv("TRACKBOT_MAINTAINERS", "alice")
    message = config_error(env)
    assert "GITHUB_APP_PRIVATE_KEY_PATH: cannot read" in message
    assert "GITHUB_APP_INSTALLATION_ID" in message and "TRACKBOT_MAINTAINERS: not Slack user IDs" in message

    env.setenv("GITHUB_APP_PRIVATE_KEY", "not a key")
    env.setenv("GITHUB_APP_INSTALLATION_ID", "777")
    env.setenv("TRACKBOT_MAINTAINERS", "U012AB3CD")
    (tmp_path / "ok.pem").write_text(app_key.private_pem)
    env.setenv("GITHUB_APP_PRIVATE_KEY_PATH", str(tmp_path / "ok.pem"))
    assert "GITHUB_APP_PRIVATE_KEY: not a PEM private key" in config_error(env)


def test_cli_reports_app_settings_errors_without_traceback(env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    environ = {**os.environ, "GITHUB_APP_ID": "12345"}
    done = subprocess.run(
        [sys.executable, "-m", "bot.cli", "worker"], env=environ, cwd=tmp_path, capture_output=True, text=True
    )
    assert done.returncode == 2
    assert "GITHUB_APP_PRIVATE_KEY: missing" in done.stderr and "Traceback" not in done.stderr
