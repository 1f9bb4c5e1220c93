"""The run as named steps: one Step signature, run in order, stop at the first STOP or error."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from bot.adapters.git import TrackClone
from bot.adapters.github import GitHubRepo
from bot.config import Settings
from bot.redact import Redactor
from bot.repo_rules import DEFAULT_REPO_RULES, RepoRules
from bot.rules import Rules
from bot.runs import Outcome, Run, RunState, StepResult
from bot.store import RunStore
from bot.trackdoc import TrackSpec


@dataclass
class RunContext:
    """Everything the steps share during one run."""

    run: Run
    settings: Settings
    rules: Rules
    clone: TrackClone
    github: GitHubRepo
    redact: Redactor
    holds_lock: Callable[[], bool]
    note: Callable[[str], None] = lambda _text: None  # a live line for the progress message
    base_sha: str = ""
    remote_branch_sha: str | None = None
    doc_text: str = ""
    tree_sha: str = ""
    extra: dict[str, object] = field(default_factory=dict)
    # The repository's own rules (`.trackbot.toml` on origin/main, read by preflight): every step after
    # preflight uses `repo_rules.rules`, not the deployment-wide `rules`.
    repo_rules: RepoRules = DEFAULT_REPO_RULES
    spec: TrackSpec | None = None  # the track doc as data (preflight)
    store: RunStore | None = None  # where a guardrail STOP keeps its change (the worker always gives one)


Step = Callable[[RunContext], StepResult]


@dataclass(frozen=True)
class Halt:
    """Why a run must stop before its next step: it was cancelled, or its job lost the run's lease."""

    state: RunState  # CANCELLED or ABANDONED
    reason: str
    by: str | None = None  # who cancelled


def run_steps(
    ctx: RunContext,
    steps: list[tuple[str, Step]],
    on_change: Callable[[Run], None],
    should_halt: Callable[[], Halt | None] = lambda: None,
) -> Run:
    """Run each step in order, recording its result; stop after one that halts.

    An exception escaping a step is a fault: it becomes an `error` result naming the step.
    `should_halt` is asked before every step, and after a step that failed (a cancelled agent
    exits non-zero: that is the cancel, not a STOP).
    """
    run = ctx.run
    run.state = RunState.RUNNING
    run.started_at = time.time()
    for name, step in steps:
        halt = should_halt()
        if halt is not None:
            _halted(run, halt, name)
            break
        run.current_step = name
        on_change(run)
        started = time.monotonic()
        try:
            result = step(ctx)
        except Exception as error:
            result = StepResult(
                name=name, outcome=Outcome.ERROR, summary=ctx.redact(str(error)) or type(error).__name__
            )
        result.name = name
        result.duration_s = round(time.monotonic() - started, 3)
        result.commands = [*result.commands, *ctx.clone.take_records()]
        run.steps.append(result)
        if result.outcome.halts and (halt := should_halt()) is not None:
            _halted(run, halt, name)
            break
        if result.outcome is Outcome.STOPPED:
            run.state = RunState.STOPPED
            run.stop_reason = result.summary
            break
        if result.outcome is Outcome.ERROR:
            run.state = RunState.FAILED
            run.error = f"{name}: {result.summary}"
            break
    else:
        if run.dry_run:
            run.state = RunState.DRY_RUN
        else:
            run.state = RunState.PR_OPEN if run.pr_number is not None else RunState.FAILED
        if run.pr_number is None and run.error is None and not run.dry_run:
            run.error = "the run ended without a PR"
    run.current_step = None
    run.finished_at = time.time()
    on_change(run)
    return run


def _halted(run: Run, halt: Halt, step: str) -> None:
    run.state = halt.state
    run.interrupted_step = step
    if halt.state is RunState.CANCELLED:
        run.cancelled_by = halt.by
    else:
        run.error = halt.reason
