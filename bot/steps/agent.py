"""The agent: the configured command in the work tree, the prompt on stdin, no secrets in its environment.

When the command runs the Codex CLI, its JSONL events become the live progress notes, its last
message becomes the agent's summary, and it gets a CODEX_HOME of its own for the run. A run that
carries a granted guardrail exception runs no agent: it applies the held change (bot.steps.held).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from bot.adapters.agent import AGENT_TAIL_LINES, AgentCommandError, agent_argv, agent_environment
from bot.adapters.codex import CodexEvents, is_codex, run_codex_home
from bot.adapters.process import ProcessResult
from bot.pipeline import RunContext
from bot.prompt import build_prompt
from bot.runs import CommandRecord, Outcome, StepResult
from bot.steps.held import apply_held_change
from bot.steps.sandbox import run_untrusted, sandbox_problem

AGENT_COMMANDS_SHOWN = 20


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


@contextlib.contextmanager
def agent_home(codex: bool) -> Iterator[Path | None]:
    """The run's own CODEX_HOME when the agent is Codex (removed afterwards), else None."""
    if not codex:
        yield None
        return
    with run_codex_home() as home:
        yield home


def agent(ctx: RunContext) -> StepResult:
    """Run the agent and fold whatever it did to git back into a plain work-tree change."""
    run = ctx.run
    if run.exception_of:
        return apply_held_change(ctx)
    settings = ctx.settings
    prompt = build_prompt(run.track, run.slug, run.doc, ctx.doc_text, ctx.repo_rules.rules, ctx.spec)
    try:
        codex = is_codex(agent_argv(settings.agent_command, ctx.clone.path))
    except AgentCommandError as error:
        return StepResult(name="agent", outcome=Outcome.STOPPED, summary=str(error))
    events = CodexEvents(worktree=str(ctx.clone.path)) if codex else None

    def on_line(line: str) -> None:
        if events is None:
            ctx.note(ctx.redact(line))
            return
        note = events.feed(line)
        if note:
            ctx.note(ctx.redact(note))

    problem = sandbox_problem(ctx)
    if problem is not None:
        return StepResult(name="agent", outcome=Outcome.STOPPED, summary=problem)
    env = safe_environment(ctx)
    idle_s = settings.agent_idle_timeout_s or None
    with agent_home(codex) as home:
        writable = []
        if home is not None:
            env["CODEX_HOME"] = str(home)
            writable.append(home)
        result, egress = run_untrusted(
            ctx,
            agent_argv(settings.agent_command, ctx.clone.path),
            env,
            settings.agent_timeout_s,
            egress=settings.agent_egress,
            stdin_text=prompt,
            on_line=on_line,
            tail_lines=AGENT_TAIL_LINES,
            idle_timeout_s=idle_s,
            writable=writable,
        )
    record = CommandRecord(
        command=ctx.redact(result.command), exit_code=result.exit_code, duration_s=round(result.duration_s, 3)
    )
    summary_text = events.final_message if events is not None and events.final_message else result.output_tail
    run.agent_summary = ctx.redact(summary_text)
    notes = ctx.clone.restore_after_agent(run.branch, ctx.base_sha)
    if egress is not None and egress.refused:
        notes.append("the sandbox refused the agent's connections to " + ", ".join(f"`{t}`" for t in egress.refused))
    if events is not None:
        shown = events.commands[-AGENT_COMMANDS_SHOWN:]
        notes += [
            f"the agent ran `{ctx.redact(command)}` → " + ("did not finish" if code is None else f"exit {code}")
            for command, code in shown
        ]
    stopped = agent_stop_reason(result, events, settings.agent_timeout_s, idle_s)
    if stopped is not None:
        return StepResult(
            name="agent",
            outcome=Outcome.STOPPED,
            commands=[record],
            details=[] if result.missing else notes,
            summary=ctx.redact(stopped),
        )
    # Exit 0 proves nothing: the guardrails look at the change itself (none at all is a STOP).
    return StepResult(
        name="agent",
        outcome=Outcome.OK,
        commands=[record],
        details=notes,
        summary=f"exited 0 after {result.duration_s:.1f}s",
    )


def agent_stop_reason(
    result: ProcessResult, events: CodexEvents | None, timeout_s: int, idle_s: int | None
) -> str | None:
    """Why the agent's change cannot be used (it did not start, stalled, overran or failed), or None."""
    if result.missing:
        return f"the agent command could not start ({result.output_tail}); install it or set TRACKBOT_AGENT_COMMAND"
    if result.idle:
        return (
            f"the agent was idle for {idle_s} s (no output) and was stopped; "
            "its change was not used (TRACKBOT_AGENT_IDLE_TIMEOUT sets the limit)"
        )
    if result.timed_out:
        return f"the agent did not finish within {timeout_s}s and was stopped"
    if result.exit_code != 0:
        why = f": {events.error}" if events is not None and events.error else ""
        return f"the agent exited {result.exit_code}{why}; its change was not used"
    return None
