"""The agent: the configured command in the work tree, the prompt on stdin, no secrets in its environment."""

from __future__ import annotations

from bot.adapters.agent import AgentCommandError, agent_environment, run_agent
from bot.pipeline import RunContext
from bot.prompt import build_prompt
from bot.runs import CommandRecord, Outcome, StepResult


def track_variables(ctx: RunContext) -> dict[str, str]:
    """The variables that tell the agent (and the gates) which track this is."""
    run = ctx.run
    return {
        "TRACK_NUM": str(run.track),
        "TRACK_SLUG": run.slug,
        "TRACK_DOC": run.doc,
        "PLAN_VERSION": run.plan_version or "",
    }


def safe_environment(ctx: RunContext) -> dict[str, str]:
    """The environment for anything that runs the repository's or the agent's code."""
    return agent_environment(track_variables(ctx), ctx.settings.agent_env_passthrough, ctx.settings.secret_values())


def agent(ctx: RunContext) -> StepResult:
    """Run the agent and fold whatever it did to git back into a plain work-tree change."""
    run = ctx.run
    prompt = build_prompt(run.track, run.slug, run.doc, ctx.doc_text, ctx.rules)
    try:
        result = run_agent(
            ctx.settings.agent_command,
            ctx.clone.path,
            prompt,
            safe_environment(ctx),
            ctx.settings.agent_timeout_s,
            on_line=lambda line: ctx.note(ctx.redact(line)),
        )
    except AgentCommandError as error:
        return StepResult(name="agent", outcome=Outcome.STOPPED, summary=str(error))
    record = CommandRecord(
        command=ctx.redact(result.command), exit_code=result.exit_code, duration_s=round(result.duration_s, 3)
    )
    run.agent_summary = ctx.redact(result.output_tail)
    notes = ctx.clone.restore_after_agent(run.branch, ctx.base_sha)
    if result.missing:
        return StepResult(
            name="agent",
            outcome=Outcome.STOPPED,
            commands=[record],
            summary=f"the agent command could not start ({ctx.redact(result.output_tail)}); "
            "install it or set TRACKBOT_AGENT_COMMAND",
        )
    if result.timed_out:
        return StepResult(
            name="agent",
            outcome=Outcome.STOPPED,
            commands=[record],
            details=notes,
            summary=f"the agent did not finish within {ctx.settings.agent_timeout_s}s and was stopped",
        )
    if result.exit_code != 0:
        return StepResult(
            name="agent",
            outcome=Outcome.STOPPED,
            commands=[record],
            details=notes,
            summary=f"the agent exited {result.exit_code}; its change was not used",
        )
    return StepResult(
        name="agent",
        outcome=Outcome.OK,
        commands=[record],
        details=notes,
        summary=f"exited 0 after {result.duration_s:.1f}s",
    )
