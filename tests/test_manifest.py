"""The Slack app manifests: HTTP mode and Socket Mode ask for the same command and every scope trackbot needs."""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from bot.local import slack_api
from bot.roles import ROLE_SLACK_SCOPES

ROOT = Path(__file__).resolve().parent.parent
EVENTS_URL = "https://YOUR-HOST/slack/events"


def load(name: str) -> dict[str, Any]:
    data = yaml.safe_load((ROOT / name).read_text())
    assert isinstance(data, dict)
    return data


def needed_scopes() -> set[str]:
    """What the doctor checks for (when it exists) and what roles need."""
    scopes = {"commands", "chat:write", "users:read", *ROLE_SLACK_SCOPES}
    try:
        doctor = importlib.import_module("bot.doctor")
    except ImportError:
        return scopes
    return scopes | set(getattr(doctor, "REQUIRED_SLACK_SCOPES", ()))


def urls(node: Any) -> Iterator[str]:
    """Every `url` / `request_url` value in a manifest."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("url", "request_url", "redirect_urls"):
                yield str(value)
            else:
                yield from urls(value)
    elif isinstance(node, list):
        for item in node:
            yield from urls(item)


@pytest.mark.parametrize("name", ["manifest.yml", "manifest.socket.yml"])
def test_manifest_asks_for_the_command_buttons_and_every_scope(name: str) -> None:
    manifest = load(name)
    scopes = manifest["oauth_config"]["scopes"]["bot"]
    assert len(scopes) == len(set(scopes))
    assert needed_scopes() <= set(scopes), f"{name} lacks {needed_scopes() - set(scopes)}"
    assert "usergroups:read" in scopes  # TRACKBOT_*_GROUPS

    (command,) = manifest["features"]["slash_commands"]
    assert command["command"] == "/track" and command["description"]
    assert manifest["features"]["bot_user"]["display_name"] == "trackbot"
    assert manifest["settings"]["interactivity"]["is_enabled"] is True  # Approve / Dismiss
    assert manifest["display_information"]["name"] == "trackbot"


def test_http_manifest_points_slack_at_slack_events() -> None:
    manifest = load("manifest.yml")
    assert manifest["settings"]["socket_mode_enabled"] is False
    assert manifest["features"]["slash_commands"][0]["url"] == EVENTS_URL
    assert manifest["settings"]["interactivity"]["request_url"] == EVENTS_URL
    assert sorted(urls(manifest)) == [EVENTS_URL, EVENTS_URL]


def test_socket_manifest_has_socket_mode_and_no_request_urls() -> None:
    socket, http = load("manifest.socket.yml"), load("manifest.yml")
    assert socket["settings"]["socket_mode_enabled"] is True
    assert list(urls(socket)) == []
    assert socket["oauth_config"] == http["oauth_config"]  # the same app, only the transport differs
    http_command = {k: v for k, v in http["features"]["slash_commands"][0].items() if k != "url"}
    assert socket["features"]["slash_commands"][0] == http_command


def test_the_slack_twin_grants_what_the_manifest_asks_for() -> None:
    assert set(slack_api.SCOPES.split(",")) == set(load("manifest.yml")["oauth_config"]["scopes"]["bot"])
