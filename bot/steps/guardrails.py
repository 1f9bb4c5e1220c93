"""Guardrails: no forbidden path, no knob change, and some change at all.

The forbidden paths are the repository's own (`.trackbot.toml`, which is itself forbidden). A run that
carries a granted guardrail exception lets exactly the granted paths through; anything else still STOPs.
"""

from __future__ import annotations

from bot.guardrails import check_changes, check_entries
from bot.pipeline import RunContext
from bot.runs import Outcome, StepResult
from bot.scope import ScopeJudgement, judge_scope
from bot.steps.held import offer_exception


def note_scope(ctx: RunContext) -> None:
    """Record which line of the doc allows each changed path, and those none does (advice, never a STOP)."""
    spec = ctx.spec
    judged = judge_scope(ctx.run.changed_files, spec) if spec is not None else ScopeJudgement()
    ctx.run.out_of_scope = judged.outside
    ctx.run.in_scope = judged.in_scope
    ctx.run.scope_excluded = judged.excluded


def guardrails(ctx: RunContext) -> StepResult:
    """STOP on a forbidden change or on no change; nothing is pushed either way."""
    run = ctx.run
    run.changed_files = ctx.clone.changes(ctx.base_sha)
    note_scope(ctx)
    if not run.changed_files:
        return StepResult(
            name="guardrails",
            outcome=Outcome.STOPPED,
            summary="the agent changed nothing, so there is nothing to commit",
        )
    smuggled = check_entries(ctx.clone.entries(ctx.base_sha), ctx.repo_rules.rules)
    if smuggled:
        # Never an exception: no doc can ask for these.
        return StepResult(
            name="guardrails",
            outcome=Outcome.STOPPED,
            summary="the change holds what trackbot never commits: " + ", ".join(f"`{v.path}`" for v in smuggled),
            details=[f"`{v.path}`: {v.reason}" for v in smuggled],
        )
    violations = check_changes(run.changed_files, ctx.repo_rules.rules)
    granted = []
    if run.exception_of:
        granted = [v for v in violations if v.path in run.exception_paths]
        violations = [v for v in violations if v.path not in run.exception_paths]
    if violations:
        names = ", ".join(f"`{v.path}`" for v in violations)
        stopped = StepResult(
            name="guardrails",
            outcome=Outcome.STOPPED,
            summary=f"the change touches forbidden paths: {names}",
            details=[f"`{v.path}`: {v.reason}" for v in violations],
        )
        if not run.exception_of:
            offer_exception(ctx, violations, stopped)
        return stopped
    summary = f"{len(run.changed_files)} changed file(s), none forbidden"
    if granted:
        by = f" by @{run.exception_granted_by}" if run.exception_granted_by else ""
        paths = ", ".join(f"`{p}`" for p in dict.fromkeys(v.path for v in granted))
        summary = f"{len(run.changed_files)} changed file(s); {paths} passed by the exception granted{by}"
    return StepResult(name="guardrails", outcome=Outcome.OK, summary=summary)
