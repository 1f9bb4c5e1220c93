"""Format: gofmt on the changed Go files only, then the change is frozen for the commit."""

from __future__ import annotations

import shutil

from bot.adapters.process import run_process
from bot.pipeline import RunContext
from bot.runs import CommandRecord, Outcome, StepResult
from bot.steps.agent import safe_environment


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
        result = run_process(["gofmt", "-w", "--", *files], ctx.clone.path, safe_environment(ctx), 300)
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
    # The commit holds exactly this tree: whatever the gates do afterwards cannot leak into it.
    ctx.tree_sha = ctx.clone.snapshot()
    ctx.run.changed_files = ctx.clone.changes(ctx.base_sha)
    return StepResult(name="format", outcome=outcome, summary=summary, commands=commands)
