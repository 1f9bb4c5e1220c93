"""The GitHub webhook: verify the signature, ignore repeated deliveries, hand merges to `bot.advance`."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from dataclasses import dataclass

from bot.advance import Advancer
from bot.services import Services

log = logging.getLogger(__name__)

MAX_BODY = 25 * 1024 * 1024  # GitHub caps payloads at 25 MB


@dataclass
class WebhookAnswer:
    """An HTTP status and a short plain-text body."""

    status: int
    body: str


def valid_signature(secret: str, body: bytes, header: str | None) -> bool:
    """Whether `X-Hub-Signature-256` is the HMAC-SHA256 of the body with the webhook secret."""
    if not header or not header.startswith("sha256="):
        return False
    expected = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, header)


class GitHubWebhook:
    """Handles one webhook delivery."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self.advancer = Advancer(services)

    def handle(self, headers: dict[str, str], body: bytes) -> WebhookAnswer:
        """Verify, dedupe, and act on a `pull_request` event; headers are matched case-insensitively."""
        h = {k.lower(): v for k, v in headers.items()}
        secret = self.services.settings.github_webhook_secret.get_secret_value()
        if not valid_signature(secret, body, h.get("x-hub-signature-256")):
            return WebhookAnswer(401, "invalid or missing X-Hub-Signature-256")
        event = h.get("x-github-event", "")
        if event == "ping":
            return WebhookAnswer(200, "pong")
        if event != "pull_request":
            return WebhookAnswer(202, f"ignored event {event!r}")
        delivery = h.get("x-github-delivery", "")
        if not delivery:
            return WebhookAnswer(400, "missing X-GitHub-Delivery")
        try:
            payload = json.loads(body)
        except ValueError:
            return WebhookAnswer(400, "body is not JSON")
        store = self.services.store
        if not store.once("delivery", delivery):
            return WebhookAnswer(200, "duplicate delivery ignored")
        pr = payload.get("pull_request") or {}
        named = (payload.get("repository") or {}).get("full_name")
        repo = self.services.settings.configured_repository(named) if isinstance(named, str) else None
        if repo is None:
            return WebhookAnswer(202, f"not a configured repository ({named})")
        if payload.get("action") != "closed" or not pr.get("merged"):
            return WebhookAnswer(202, "not a merge")
        try:
            run = self.advancer.prompt_for_merge(
                str(repo),
                str((pr.get("head") or {}).get("ref", "")),
                int(pr.get("number", 0)),
                (pr.get("merged_by") or payload.get("sender") or {}).get("login"),
            )
        except Exception as error:
            # Let GitHub's redelivery try again.
            store.forget("delivery", delivery)
            log.exception("handling merge of PR #%s", pr.get("number"))
            return WebhookAnswer(500, f"could not handle the merge: {self.services.redact(str(error))[:200]}")
        return WebhookAnswer(200, "prompted" if run else "no run for this branch")
