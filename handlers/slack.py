"""Bolt listeners: parse the request, ack at once, call `bot`, answer. Never a stack trace in Slack."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from slack_bolt import Ack, App, Respond
from slack_sdk import WebClient
from slack_sdk.http_retry.builtin_handlers import (
    ConnectionErrorRetryHandler,
    RateLimitErrorRetryHandler,
    ServerErrorRetryHandler,
)
from slack_sdk.webhook import WebhookClient

from bot import audit
from bot.advance import Advancer
from bot.commands import Commands, Reply
from bot.exception import ExceptionRefused, grant_exception
from bot.render import parent_text
from bot.services import Services
from handlers.slack_dedupe import dedupe_retries
from handlers.slack_work import SlackWorkQueue, hand_lazy_work_to_workers

log = logging.getLogger(__name__)


# An answer goes to the command's response_url once; Slack may refuse it for a moment (a 5xx, a 429
# with Retry-After, a dropped connection): try again rather than leave the user without one.
_ANSWER_RETRIES = [
    ConnectionErrorRetryHandler(max_retry_count=2),
    RateLimitErrorRetryHandler(max_retry_count=2),
    ServerErrorRetryHandler(max_retry_count=2),
]


class AnswerNotDelivered(Exception):
    """Slack did not take the answer at the command's response_url."""


def _answer(respond: Respond, reply: Reply) -> None:
    if respond.response_url is None:
        raise AnswerNotDelivered("the request has no response_url")
    client = WebhookClient(
        url=respond.response_url, proxy=respond.proxy, ssl=respond.ssl, retry_handlers=_ANSWER_RETRIES
    )
    response = client.send(
        text=reply.text,
        blocks=reply.blocks,
        response_type="ephemeral" if reply.ephemeral else "in_channel",
        replace_original=False,
    )
    if response.status_code != 200:
        raise AnswerNotDelivered(f"Slack answered {response.status_code}: {response.body[:200]}")


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
    except AnswerNotDelivered as error:
        log.warning("the answer after %s was not delivered: %s", doing, services.redact(str(error)))
    except Exception:
        log.exception("answering after %s", doing)


def build_slack_app(services: Services, client: WebClient | None = None, *, answering_queued_work: bool = False) -> App:
    """The Bolt app: `/track` and the buttons (approve/dismiss the advance, retry, guardrail exception).

    Every listener is an immediate ack plus lazy work: Bolt answers Slack as soon as the ack runs,
    and the work (GitHub, Redis, Slack calls) is handed to the workers (handlers/slack_work.py), so
    neither a slow GitHub nor a burst of commands delays an ack (measured in bench/ack_latency.py).

    `answering_queued_work`: the app a worker replays queued work with. Its requests were verified
    by the web app that queued them (an entry may be older than the 5 minutes a signature is good
    for), and it starts without calling Slack (auth.test runs with the first request).
    """
    settings = services.settings
    app = App(
        client=client or services.slack_client,
        signing_secret=settings.slack_signing_secret.get_secret_value(),
        process_before_response=True,
        request_verification_enabled=not answering_queued_work,
        token_verification_enabled=not answering_queued_work,
    )
    if not answering_queued_work:
        app.use(dedupe_retries(services.redis))
        hand_lazy_work_to_workers(app, SlackWorkQueue(services.redis, services.settings.queue_key))
    commands = Commands(services)
    advancer = Advancer(services)

    def ack_now(ack: Ack) -> None:
        ack()

    def track(command: dict[str, Any], respond: Respond) -> None:
        text = (command.get("text") or "").strip()
        _safely(
            services,
            respond,
            f"handling `/track {text}`",
            lambda: commands.dispatch(text, command["user_id"], command["channel_id"]),
        )

    def button(doing: str, handle: Callable[[str, str], Reply]) -> Callable[..., None]:
        def work(body: dict[str, Any], action: dict[str, Any], respond: Respond) -> None:
            _safely(services, respond, doing, lambda: handle(str(action.get("value", "")), body["user"]["id"]))

        return work

    app.command("/track")(ack=ack_now, lazy=[track])
    app.action("approve_advance")(ack=ack_now, lazy=[button("approving the advance", advancer.approve)])
    app.action("dismiss_advance")(ack=ack_now, lazy=[button("dismissing the advance", advancer.dismiss)])
    app.action("retry_run")(
        ack=ack_now, lazy=[button("retrying the run", lambda run_id, user: retry_from_button(services, run_id, user))]
    )
    app.action("approve_exception")(
        ack=ack_now,
        lazy=[button("granting the exception", lambda run_id, user: grant_from_button(services, run_id, user))],
    )

    @app.error
    def on_error(error: Exception) -> None:
        log.error("Bolt listener error: %s", services.redact(str(error)))

    return app


def retry_from_button(services: Services, run_id: str, user: str) -> Reply:
    """The Retry button of a failed, stopped, cancelled or abandoned run."""
    run = services.store.get(run_id)
    if run is None:
        return Reply("That run is no longer known; use `/track status`.")
    return Commands(services).retry(run.repo, user, run_id)


def grant_from_button(services: Services, run_id: str, user: str) -> Reply:
    """A maintainer grants the guardrail exception a STOP's report offers; nobody else can."""
    run = services.store.get(run_id)
    why = services.roles.check_approver(user, run.requested_by if run else None)
    if why is not None:
        audit.record(services.redis, "refused", user, run.repo if run else "", "exception", run_id, why)
        return Reply(why.replace("approve advancing NEXT_TRACK", "grant a guardrail exception"))
    try:
        granted = grant_exception(services, run_id, user)
    except ExceptionRefused as error:
        return Reply(f":no_entry: {error}")
    audit.record(
        services.redis,
        "exception_granted",
        user,
        granted.repo,
        ", ".join(granted.exception_paths),
        granted.id,
        f"exception for run {run_id}",
    )
    return Reply(f"Exception granted: {parent_text(granted)}; the PR names the exception at its top.", ephemeral=False)
