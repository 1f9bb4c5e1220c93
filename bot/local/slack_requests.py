"""Real signed requests as Slack sends them to an app's Request URL (slash commands, button clicks).

Used by the local demo and the tests to drive the bot through its real HTTP entry point, signature
verification included.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from typing import Any

__all__ = [
    "block_actions_body",
    "post_signed",
    "signed_headers",
    "slack_signature",
    "slash_command_body",
]

TEAM_ID = "T0LOCAL"
TEAM_DOMAIN = "trackbot-local"
API_APP_ID = "A0TRACKBOT"
BOT_USER_ID = "U0TRACKBOT"
BOT_ID = "B0TRACKBOT"
# The deprecated verification token Slack still includes in payloads; bolt ignores it.
VERIFICATION_TOKEN = "local-verification-token"


def _trigger_id() -> str:
    # Same shape as Slack's: "<digits>.<digits>.<hex>".
    return f"{int(time.time())}.{secrets.randbelow(10**12)}.{secrets.token_hex(16)}"


def slack_signature(signing_secret: str, timestamp: str, body: str) -> str:
    """Slack's request signature: ``"v0=" + hex(HMAC-SHA256(secret, "v0:{timestamp}:{body}"))``."""
    base = f"v0:{timestamp}:{body}".encode()
    return "v0=" + hmac.new(signing_secret.encode(), base, hashlib.sha256).hexdigest()


def signed_headers(signing_secret: str, body: str, timestamp: int | None = None) -> dict[str, str]:
    """Headers Slack sends with ``body``: form content type, request timestamp and signature.

    ``timestamp`` defaults to now; pass an old one to exercise replay protection.
    """
    ts = str(int(time.time()) if timestamp is None else timestamp)
    return {
        "Content-Type": "application/x-www-form-urlencoded",
        "X-Slack-Request-Timestamp": ts,
        "X-Slack-Signature": slack_signature(signing_secret, ts, body),
    }


def slash_command_body(
    command: str,
    text: str,
    user_id: str,
    user_name: str,
    channel_id: str,
    channel_name: str,
    response_url: str,
    team_id: str = TEAM_ID,
    trigger_id: str | None = None,
) -> str:
    """The urlencoded form body Slack POSTs for a slash command, fields in Slack's order."""
    fields = [
        ("token", VERIFICATION_TOKEN),
        ("team_id", team_id),
        ("team_domain", TEAM_DOMAIN),
        ("channel_id", channel_id),
        ("channel_name", channel_name),
        ("user_id", user_id),
        ("user_name", user_name),
        ("command", command),
        ("text", text),
        ("api_app_id", API_APP_ID),
        ("is_enterprise_install", "false"),
        ("response_url", response_url),
        ("trigger_id", trigger_id or _trigger_id()),
    ]
    return urllib.parse.urlencode(fields)


def block_actions_body(
    action_id: str,
    value: str,
    block_id: str,
    user_id: str,
    user_name: str,
    channel_id: str,
    message: Mapping[str, Any],
    response_url: str,
    channel_name: str | None = None,
    button_text: str | None = None,
    team_id: str = TEAM_ID,
    trigger_id: str | None = None,
) -> str:
    """``payload=<urlencoded JSON>``: the block_actions interaction Slack POSTs when a button is clicked.

    ``message`` is the message holding the button: a dict with ts, text, blocks and optionally
    thread_ts (``dataclasses.asdict(slack_message)`` fits). ``button_text`` defaults to the label of
    the matching button in the message's blocks.
    """
    ts = str(message["ts"])
    thread_ts = message.get("thread_ts")
    blocks = list(message.get("blocks") or [])
    if button_text is None:
        button_text = _button_label(blocks, action_id) or action_id

    container: dict[str, Any] = {
        "type": "message",
        "message_ts": ts,
        "channel_id": channel_id,
        "is_ephemeral": False,
    }
    message_json: dict[str, Any] = {
        "type": "message",
        "subtype": "bot_message",
        "user": BOT_USER_ID,
        "bot_id": BOT_ID,
        "ts": ts,
        "text": str(message.get("text") or ""),
        "blocks": blocks,
    }
    if thread_ts:
        container["thread_ts"] = str(thread_ts)
        message_json["thread_ts"] = str(thread_ts)

    payload: dict[str, Any] = {
        "type": "block_actions",
        "user": {"id": user_id, "username": user_name, "name": user_name, "team_id": team_id},
        "api_app_id": API_APP_ID,
        "token": VERIFICATION_TOKEN,
        "container": container,
        "trigger_id": trigger_id or _trigger_id(),
        "team": {"id": team_id, "domain": TEAM_DOMAIN},
        "enterprise": None,
        "is_enterprise_install": False,
        "channel": {"id": channel_id, "name": channel_name or channel_id},
        "message": message_json,
        "state": {"values": {}},
        "response_url": response_url,
        "actions": [
            {
                "action_id": action_id,
                "block_id": block_id,
                "text": {"type": "plain_text", "text": button_text, "emoji": True},
                "value": value,
                "type": "button",
                "action_ts": f"{time.time():.6f}",
            }
        ],
    }
    return urllib.parse.urlencode({"payload": json.dumps(payload, separators=(",", ":"))})


def _button_label(node: Any, action_id: str) -> str | None:
    if isinstance(node, dict):
        if node.get("type") == "button" and node.get("action_id") == action_id:
            label = node.get("text")
            return str(label.get("text", "")) if isinstance(label, dict) else None
        for key in ("elements", "accessory"):
            if key in node:
                found = _button_label(node[key], action_id)
                if found is not None:
                    return found
    elif isinstance(node, list):
        for item in node:
            found = _button_label(item, action_id)
            if found is not None:
                return found
    return None


def post_signed(
    url: str,
    body: str,
    signing_secret: str,
    timestamp: int | None = None,
    extra_headers: dict[str, str] | None = None,
    timeout: float = 10,
) -> tuple[int, dict[str, str], bytes]:
    """POST ``body`` signed like Slack does; return ``(status, headers, body)`` without raising on 4xx/5xx.

    ``extra_headers`` override the signed ones (e.g. a forged ``X-Slack-Signature``).
    """
    headers = signed_headers(signing_secret, body, timestamp)
    headers.update(extra_headers or {})
    request = urllib.request.Request(url, data=body.encode(), headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, dict(response.headers.items()), response.read()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, dict(exc.headers.items()), exc.read()
