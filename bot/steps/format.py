"""Format: gofmt on the changed Go files only, then the change is frozen for the commit and its added
lines are checked against the repository's invariants (warnings in the report, never a STOP)."""

from __future__ import annotations

import re
import shutil

from bot.invariants import check_invariants
from bot.pipeline import RunContext
from bot.runs import CommandRecord, InvariantWarning, Outcome, StepResult
from bot.steps.agent import safe_environment
from bot.steps.guardrails import note_scope
from bot.steps.held import diff_bytes
from bot.steps.sandbox import run_untrusted

INVARIANT_TEXT_LIMIT = 200


def changed_go_files(ctx: RunContext) -> list[str]:
    """Go files the change adds or modifies."""
    return [c.path for c in ctx.run.changed_files if c.status != "D" and c.path.endswith(".go")]


def format_go(ctx: RunContext) -> StepResult:
    """gofmt -w the changed Go files (when gofmt is installed), then snapshot the change."""
    files = changed_go_files(ctx)
    commands: list[CommandRecord] = []
    if not files:
        outcome, summary = Outcome.SKIPPED, "no Go files changed"
    elif shutil.which("gofmt") is None:
        outcome, summary = (
            Outcome.SKIPPED,
            f"gofmt is not installed: {len(files)} Go file(s) left unformatted",
        )
    else:
        # gofmt is trusted, the files are not (a symlink could point it outside the tree): sandboxed too.
        result, _ = run_untrusted(ctx, ["gofmt", "-w", "--", *files], safe_environment(ctx), 300)
        commands.append(
            CommandRecord(
                command=result.command,
                exit_code=result.exit_code,
                duration_s=round(result.duration_s, 3),
                output_tail=ctx.redact(result.output_tail),
            )
        )
        if not result.ok:
            outcome, summary = (
                Outcome.FAILED,
                f"gofmt exited {result.exit_code}: {ctx.redact(result.output_tail)}",
            )
        else:
            outcome, summary = Outcome.OK, f"gofmt -w on {len(files)} file(s)"
    # The commit holds exactly this tree: whatever the gates do afterwards cannot leak into it. Unless
    # gofmt rewrote files, it is the tree the guardrails just staged and judged: nothing ran since, so
    # staging and listing it again (two scans of every file) would find the same.
    rewrote = bool(commands)
    ctx.tree_sha = ctx.clone.snapshot(stage=rewrote)
    if rewrote:
        judged = {path for change in ctx.run.changed_files for path in change.paths()}
        ctx.run.changed_files = ctx.clone.changes(ctx.base_sha)
        note_scope(ctx)
        moved = sorted({path for change in ctx.run.changed_files for path in change.paths()} - judged)
        if moved:
            # The guardrails judged one tree; only that tree may be committed.
            return StepResult(
                name="format",
                outcome=Outcome.STOPPED,
                summary="the change gained paths after the guardrails judged it: "
                + ", ".join(f"`{p}`" for p in moved),
                commands=commands,
            )
    details = check_added_lines(ctx)
    return StepResult(name="format", outcome=outcome, summary=summary, commands=commands, details=details)


def check_added_lines(ctx: RunContext) -> list[str]:
    """The repository's invariants on the lines the frozen change adds; hits go on the run."""
    invariants = ctx.repo_rules.invariants
    if not invariants:
        return []
    diff = diff_bytes(ctx, "--cached", "--text", "--unified=0", "-M", ctx.base_sha).decode("utf-8", errors="replace")
    try:
        hits = check_invariants(diff, invariants)
    except re.error as error:
        return [f"the invariants could not be checked: {error}"]
    ctx.run.invariant_hits = [
        InvariantWarning(
            invariant=hit.invariant,
            path=hit.path,
            line=hit.line,
            text=ctx.redact(hit.text.strip())[:INVARIANT_TEXT_LIMIT],
            message=hit.message,
        )
        for hit in hits
    ]
    return [f"`{hit.path}` line {hit.line}: {hit.invariant}" for hit in hits]
