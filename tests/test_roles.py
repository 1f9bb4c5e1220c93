"""Roles: maintainers and runners by Slack user ID and by Slack user group, and the two-person rule.

Group members come from the Slack twin's real `usergroups.users.list` over HTTP, cached in the real Redis.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest
from pydantic import SecretStr
from redis import Redis
from slack_sdk import WebClient

from bot.config import ConfigError, Settings, load_settings
from bot.local.slack_api import SlackTwin
from bot.roles import Roles

TOKEN = "xoxb-roles-test"
ALICE, BOB, CAROL, DAVE = "U0ALICE", "U0BOB", "U0CAROL", "U0DAVE"
LEADS, DEVS = "S0LEADS", "S0DEVS"


@pytest.fixture
def twin() -> Iterator[SlackTwin]:
    with SlackTwin(TOKEN, {ALICE: "alice", BOB: "bob", CAROL: "carol", DAVE: "dave"}) as t:
        t.usergroups = {LEADS: [CAROL], DEVS: [DAVE]}
        yield t


def settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "slack_bot_token": SecretStr(TOKEN),
        "slack_signing_secret": SecretStr("s"),
        "github_token": SecretStr("g"),
        "github_repository": "acme/widgets",
        "github_webhook_secret": SecretStr("w"),
        "maintainers": [ALICE],
        **overrides,
    }
    return Settings(**values)


def roles(twin: SlackTwin, redis: Redis, **overrides: Any) -> Roles:
    client = WebClient(token=TOKEN, base_url=twin.api_url, retry_handlers=[])
    return Roles(settings(**overrides), client, redis)


def group_calls(twin: SlackTwin) -> list[str]:
    return [params["usergroup"] for method, params in twin.calls if method == "usergroups.users.list"]


def test_maintainers_and_runners_by_id_and_by_group(twin: SlackTwin, redis: Redis) -> None:
    r = roles(twin, redis, maintainer_groups=[LEADS], runners=[BOB], runner_groups=[DEVS])
    assert r.is_maintainer(ALICE) and r.is_maintainer(CAROL)
    assert not r.is_maintainer(BOB) and not r.is_maintainer(DAVE)
    assert r.may_run(ALICE) and r.may_run(BOB) and r.may_run(CAROL) and r.may_run(DAVE)
    assert not r.may_run("U0MALLORY")
    assert r.who_may_approve() == f"<@{ALICE}>, <!subteam^{LEADS}>"
    assert r.who_may_run() == f"<@{BOB}>, <@{ALICE}>, <!subteam^{DEVS}>, <!subteam^{LEADS}>"


def test_no_runners_and_no_runner_groups_means_anyone_may_run(twin: SlackTwin, redis: Redis) -> None:
    r = roles(twin, redis)
    assert r.may_run("U0ANYONE") and r.who_may_run() == "anyone"
    assert group_calls(twin) == []  # nothing to ask Slack
    only_groups = roles(twin, redis, runner_groups=[DEVS])
    assert only_groups.may_run(DAVE) and only_groups.may_run(ALICE)  # a member; a maintainer
    assert not only_groups.may_run(BOB)


def test_group_members_are_cached_and_refreshed_after_the_ttl(twin: SlackTwin, redis: Redis) -> None:
    r = roles(twin, redis, maintainer_groups=[LEADS])
    assert r.is_maintainer(CAROL)
    assert r.is_maintainer(CAROL) and not r.is_maintainer(BOB)
    assert group_calls(twin) == [LEADS]  # one Slack call for three checks

    twin.usergroups[LEADS] = [BOB]  # Carol leaves the group, Bob joins
    fresh = Roles(r.settings, r.client, redis, ttl_s=0)  # as if five minutes passed
    assert fresh.is_maintainer(BOB) and not fresh.is_maintainer(CAROL)
    assert len(group_calls(twin)) == 3


def test_slack_failure_falls_back_to_the_last_members(
    twin: SlackTwin, redis: Redis, caplog: pytest.LogCaptureFixture
) -> None:
    r = roles(twin, redis, maintainer_groups=[LEADS])
    assert r.is_maintainer(CAROL)
    stale = Roles(r.settings, r.client, redis, ttl_s=0)
    twin.fail_next("usergroups.users.list", status=200, error="missing_scope")
    with caplog.at_level(logging.WARNING, logger="bot.roles"):
        assert stale.is_maintainer(CAROL)  # the last known members
    assert "missing_scope" in caplog.text and "last known members" in caplog.text
    calls = len(group_calls(twin))
    assert stale.is_maintainer(CAROL)  # backing off: Slack is not asked again right away
    assert len(group_calls(twin)) == calls


def test_slack_failure_with_nothing_cached_counts_ids_only(
    twin: SlackTwin, redis: Redis, caplog: pytest.LogCaptureFixture
) -> None:
    r = roles(twin, redis, maintainer_groups=[LEADS])
    twin.fail_next("usergroups.users.list", status=500, error="internal_error")
    with caplog.at_level(logging.ERROR, logger="bot.roles"):
        assert not r.is_maintainer(CAROL)
        assert r.is_maintainer(ALICE)  # listed IDs still count
    assert "nothing is cached" in caplog.text and "usergroups:read" in caplog.text

    unknown = roles(twin, redis, maintainer_groups=["S0GONE"])
    assert not unknown.is_maintainer(CAROL)  # no_such_subteam: an empty group, not a crash


def test_check_approver_refuses_non_maintainers_naming_who_may(twin: SlackTwin, redis: Redis) -> None:
    r = roles(twin, redis, maintainer_groups=[LEADS])
    assert r.check_approver(BOB, ALICE) == (
        f":no_entry: Only a maintainer can approve advancing NEXT_TRACK: <@{ALICE}>, <!subteam^{LEADS}>."
    )
    assert r.check_approver(ALICE, ALICE) is None  # the two-person rule is off by default
    assert r.check_approver(CAROL, BOB) is None


def test_two_person_rule_refuses_the_requester_and_names_who_else(twin: SlackTwin, redis: Redis) -> None:
    r = roles(twin, redis, maintainers=[ALICE, BOB], maintainer_groups=[LEADS], two_person_rule=True)
    refusal = r.check_approver(ALICE, ALICE)
    assert refusal is not None and refusal.startswith(":no_entry: Two-person rule: you queued this run")
    assert refusal.endswith(f"<@{BOB}>, <!subteam^{LEADS}>.") and f"<@{ALICE}>" not in refusal
    assert r.check_approver(BOB, ALICE) is None and r.check_approver(CAROL, ALICE) is None
    assert r.check_approver(ALICE, None) is None  # no requester known: nothing to compare

    # Carol is the only member of the only group: nobody else may approve her run.
    alone = roles(twin, redis, maintainers=[], maintainer_groups=[LEADS], two_person_rule=True)
    refusal = alone.check_approver(CAROL, CAROL)
    assert refusal is not None and "no other maintainer is configured" in refusal


def test_settings_accept_maintainer_groups_instead_of_maintainers(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    monkeypatch.chdir(tmp_path)
    for name, value in {
        "SLACK_BOT_TOKEN": "xoxb-1",
        "SLACK_SIGNING_SECRET": "s",
        "GITHUB_TOKEN": "g",
        "GITHUB_REPOSITORY": "acme/widgets",
        "GITHUB_WEBHOOK_SECRET": "w",
    }.items():
        monkeypatch.setenv(name, value)
    for name in ("TRACKBOT_MAINTAINERS", "TRACKBOT_RUNNERS", "SLACK_APP_TOKEN", "TRACKBOT_POLL_INTERVAL"):
        monkeypatch.delenv(name, raising=False)

    with pytest.raises(ConfigError, match=r"TRACKBOT_MAINTAINERS: at least one maintainer \(or TRACKBOT_MAINTAINER"):
        load_settings()
    monkeypatch.setenv("TRACKBOT_MAINTAINER_GROUPS", "S0LEADS, S0OPS")
    monkeypatch.setenv("TRACKBOT_RUNNER_GROUPS", "S0DEVS")
    monkeypatch.setenv("TRACKBOT_TWO_PERSON_RULE", "true")
    loaded = load_settings()
    assert loaded.maintainers == [] and loaded.maintainer_groups == ["S0LEADS", "S0OPS"]
    assert loaded.runner_groups == ["S0DEVS"] and loaded.two_person_rule is True
    assert loaded.poll_interval_s == 0  # HTTP mode: GitHub's webhook reaches us

    monkeypatch.setenv("TRACKBOT_RUNNER_GROUPS", "devs")
    with pytest.raises(ConfigError, match="TRACKBOT_RUNNER_GROUPS: not Slack user group IDs: devs"):
        load_settings()
    monkeypatch.delenv("TRACKBOT_RUNNER_GROUPS")
    monkeypatch.setenv("SLACK_APP_TOKEN", "xapp-1")
    assert load_settings().poll_interval_s == 60  # Socket Mode: poll for merges by default
    monkeypatch.setenv("TRACKBOT_POLL_INTERVAL", "0")
    assert load_settings().poll_interval_s == 0


def test_a_worker_process_gets_the_same_roles_and_poll_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    from bot.local.console import settings_environment

    monkeypatch.chdir(tmp_path)
    given = settings(
        maintainers=[], maintainer_groups=[LEADS], runner_groups=[DEVS], two_person_rule=True, poll_interval_s=15
    )
    for name, value in settings_environment(given).items():
        monkeypatch.setenv(name, value)
    loaded = load_settings()
    assert (loaded.maintainers, loaded.maintainer_groups, loaded.runner_groups) == ([], [LEADS], [DEVS])
    assert loaded.two_person_rule is True and loaded.poll_interval_s == 15
