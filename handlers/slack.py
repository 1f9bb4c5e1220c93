"""Bolt listeners: parse the request, ack at once, call `bot`, answer. Never a stack trace in Slack."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from slack_bolt import Ack, App, Respond
from slack_sdk import WebClient

from bot.advance import Advancer
from bot.commands import Commands, Reply
from bot.services import Services

log = logging.getLogger(__name__)


def _answer(respond: Respond, reply: Reply) -> None:
    respond(
        text=reply.text,
        blocks=reply.blocks,
        response_type="ephemeral" if reply.ephemeral else "in_channel",
        replace_original=False,
    )


def _safely(services: Services, respond: Respond, doing: str, action: Callable[[], Reply]) -> None:
    """Run `action`, answering with its Reply; a fault becomes a short apology, the details go to the log."""
    try:
        reply = action()
    except Exception as error:
        log.exception("%s failed", doing)
        reply = Reply(
            f":boom: Something went wrong while {doing}: {services.redact(str(error))[:300]}. "
            "Try again; if it keeps happening, ask an operator to check trackbot's logs."
        )
    try:
        _answer(respond, reply)
    except Exception:
        log.exception("answering after %s", doing)


def build_slack_app(services: Services, client: WebClient | None = None) -> App:
    """The Bolt app: `/track` and the approve/dismiss buttons."""
    settings = services.settings
    app = App(
        client=client or services.slack_client,
        signing_secret=settings.slack_signing_secret.get_secret_value(),
        # Listeners ack first, then do the work on Bolt's thread pool.
        process_before_response=False,
    )
    commands = Commands(services)
    advancer = Advancer(services)

    @app.command("/track")
    def track(ack: Ack, command: dict[str, Any], respond: Respond) -> None:
        ack()
        text = (command.get("text") or "").strip()
        _safely(
            services,
            respond,
            f"handling `/track {text}`",
            lambda: commands.dispatch(text, command["user_id"], command["channel_id"]),
        )

    @app.action("approve_advance")
    def approve(ack: Ack, body: dict[str, Any], action: dict[str, Any], respond: Respond) -> None:
        ack()
        _safely(
            services,
            respond,
            "approving the advance",
            lambda: advancer.approve(str(action.get("value", "")), body["user"]["id"]),
        )

    @app.action("dismiss_advance")
    def dismiss(ack: Ack, body: dict[str, Any], action: dict[str, Any], respond: Respond) -> None:
        ack()
        _safely(
            services,
            respond,
            "dismissing the advance",
            lambda: advancer.dismiss(str(action.get("value", "")), body["user"]["id"]),
        )

    @app.error
    def on_error(error: Exception) -> None:
        log.error("Bolt listener error: %s", services.redact(str(error)))

    return app
