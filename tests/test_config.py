"""Settings: every bad setting named in one message, with what it should look like."""

from __future__ import annotations

import pytest

from bot.config import ConfigError, load_settings

GOOD = {
    "SLACK_BOT_TOKEN": "xoxb-1-abc",
    "SLACK_SIGNING_SECRET": "s3cr3t-signing",
    "GITHUB_TOKEN": "ghp_" + "a" * 36,
    "GITHUB_REPOSITORY": "acme/widgets",
    "GITHUB_WEBHOOK_SECRET": "hook-secret",
    "TRACKBOT_MAINTAINERS": "U012AB3CD, U045EF6GH",
}


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path) -> pytest.MonkeyPatch:  # type: ignore[no-untyped-def]
    monkeypatch.chdir(tmp_path)  # no stray .env
    for name in [
        *GOOD,
        "REDIS_URL",
        "TRACKBOT_CHANNELS",
        "TRACKBOT_GIT_URL",
        "TRACKBOT_RUNNERS",
        "SLACK_APP_TOKEN",
        "GITHUB_API_URL",
        "TRACKBOT_AGENT_TIMEOUT",
    ]:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_good_environment_gives_settings(env: pytest.MonkeyPatch) -> None:
    for name, value in GOOD.items():
        env.setenv(name, value)
    settings = load_settings()
    assert settings.github_repository == "acme/widgets"
    assert settings.maintainers == ["U012AB3CD", "U045EF6GH"]
    assert settings.clone_url("acme/widgets") == "https://github.com/acme/widgets.git"
    assert settings.runners == []  # no runners configured: anyone may run (bot.roles)


def test_every_bad_setting_is_named_in_one_message(env: pytest.MonkeyPatch) -> None:
    env.setenv("GITHUB_REPOSITORY", "widgets")
    env.setenv("TRACKBOT_MAINTAINERS", "alice")
    env.setenv("TRACKBOT_AGENT_TIMEOUT", "soon")
    with pytest.raises(ConfigError) as raised:
        load_settings()
    message = str(raised.value)
    for expected in (
        "SLACK_BOT_TOKEN: missing",
        "SLACK_SIGNING_SECRET: missing",
        "GITHUB_TOKEN: missing",
        "GITHUB_WEBHOOK_SECRET: missing",
        "GITHUB_REPOSITORY: 'widgets' is not owner/name",
        "owner/name, e.g. acme/widgets",
        "TRACKBOT_MAINTAINERS: not Slack user IDs: alice",
        "TRACKBOT_AGENT_TIMEOUT",
    ):
        assert expected in message
    assert "Traceback" not in message


def test_settings_never_print_secret_values(env: pytest.MonkeyPatch) -> None:
    for name, value in GOOD.items():
        env.setenv(name, value)
    settings = load_settings()
    shown = repr(settings) + str(settings)
    assert GOOD["GITHUB_TOKEN"] not in shown and GOOD["SLACK_BOT_TOKEN"] not in shown


def test_enterprise_api_url_gives_enterprise_clone_url(env: pytest.MonkeyPatch) -> None:
    for name, value in GOOD.items():
        env.setenv(name, value)
    env.setenv("GITHUB_API_URL", "https://ghe.example.com/api/v3/")
    settings = load_settings()
    assert settings.github_api_url == "https://ghe.example.com/api/v3"
    assert settings.clone_url("acme/widgets") == "https://ghe.example.com/acme/widgets.git"


def test_cli_reports_config_errors_without_traceback(
    env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from bot.cli import main

    assert main(["worker"]) == 2
    err = capsys.readouterr().err
    assert "trackbot is not configured correctly" in err and "SLACK_BOT_TOKEN" in err
    assert "Traceback" not in err


def test_channels_map_each_channel_to_its_repository(env: pytest.MonkeyPatch) -> None:
    for name, value in GOOD.items():
        env.setenv(name, value)
    env.delenv("GITHUB_REPOSITORY")
    env.setenv("TRACKBOT_CHANNELS", "C0WIDGETS=acme/widgets, C0GADGETS=acme/gadgets")
    env.setenv("TRACKBOT_GIT_URL", "/srv/git/{repo}.git")
    settings = load_settings()
    assert settings.repositories == ["acme/widgets", "acme/gadgets"]
    assert settings.repository_for_channel("C0GADGETS") == "acme/gadgets"
    assert settings.repository_for_channel("C0ELSEWHERE") is None  # runs only where configured
    assert settings.clone_url("acme/gadgets") == "/srv/git/acme/gadgets.git"


def test_a_repository_is_required_one_way_or_the_other(env: pytest.MonkeyPatch) -> None:
    for name, value in GOOD.items():
        env.setenv(name, value)
    env.delenv("GITHUB_REPOSITORY")
    with pytest.raises(ConfigError, match=r"GITHUB_REPOSITORY: missing \(or set TRACKBOT_CHANNELS"):
        load_settings()
    env.setenv("TRACKBOT_CHANNELS", "general=acme/widgets")
    with pytest.raises(ConfigError, match="TRACKBOT_CHANNELS: not CHANNEL_ID=owner/name: general=acme/widgets"):
        load_settings()


def test_the_queue_key_defaults_to_one_derived_from_the_signing_secret(env: pytest.MonkeyPatch) -> None:
    """Every process of a deployment signs and checks queued work with the same key, set or not."""
    for name, value in GOOD.items():
        env.setenv(name, value)
    env.delenv("TRACKBOT_QUEUE_KEY", raising=False)
    derived = load_settings().queue_key
    assert derived == load_settings().queue_key and len(derived) == 32
    assert load_settings().slack_signing_secret.get_secret_value().encode() not in derived
    env.setenv("SLACK_SIGNING_SECRET", "another-secret")
    assert load_settings().queue_key != derived
    env.setenv("TRACKBOT_QUEUE_KEY", "an-operator-chosen-key")
    settings = load_settings()
    assert settings.queue_key == b"an-operator-chosen-key"
    assert "an-operator-chosen-key" in settings.secret_values()  # the redactor hides it


def test_the_redis_password_is_a_secret_the_redactor_hides(env: pytest.MonkeyPatch) -> None:
    for name, value in GOOD.items():
        env.setenv(name, value)
    env.setenv("REDIS_URL", "unix:///var/trackbot/redis/valkey.sock?db=0&password=s3cr3tpw")
    assert "s3cr3tpw" in load_settings().secret_values()
    env.setenv("REDIS_URL", "rediss://:an%2Fother@redis.example:6380/0")
    assert "an/other" in load_settings().secret_values()
