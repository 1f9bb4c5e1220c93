"""Guardrails: no forbidden path, no knob change, and some change at all."""

from __future__ import annotations

from bot.guardrails import check_changes
from bot.pipeline import RunContext
from bot.runs import Outcome, StepResult


def guardrails(ctx: RunContext) -> StepResult:
    """STOP on a forbidden change or on no change; nothing is pushed either way."""
    run = ctx.run
    run.changed_files = ctx.clone.changes(ctx.base_sha)
    if not run.changed_files:
        return StepResult(
            name="guardrails",
            outcome=Outcome.STOPPED,
            summary="the agent changed nothing, so there is nothing to commit",
        )
    violations = check_changes(run.changed_files, ctx.rules)
    if violations:
        names = ", ".join(f"`{v.path}`" for v in violations)
        return StepResult(
            name="guardrails",
            outcome=Outcome.STOPPED,
            summary=f"the change touches forbidden paths: {names}",
            details=[f"`{v.path}`: {v.reason}" for v in violations],
        )
    return StepResult(
        name="guardrails",
        outcome=Outcome.OK,
        summary=f"{len(run.changed_files)} changed file(s), none forbidden",
    )
