"""Preflight: the cached clone, a fetch, a fresh track branch from origin/main, the knob and doc re-checked,
the repository's own rules (`.trackbot.toml`) and the track doc read as data."""

from __future__ import annotations

from bot.adapters.git import WorkTreeFiles
from bot.knob import KnobError, parse_knob
from bot.pipeline import RunContext
from bot.plan import DocNotFound, resolve_plan_doc
from bot.repo_rules import REPO_RULES_PATH, RepoRulesError, parse_repo_rules
from bot.runs import Outcome, StepResult
from bot.trackdoc import parse_track_doc


def stop(summary: str) -> StepResult:
    """A preflight STOP."""
    return StepResult(name="preflight", outcome=Outcome.STOPPED, summary=summary)


def preflight(ctx: RunContext) -> StepResult:
    """Reset the clone to a fresh branch and make sure the knob still names this run's track.

    Everything is read from the fresh checkout of origin/main, before the agent runs: the agent's
    copy of `.trackbot.toml` is never trusted (and changing it is forbidden).
    """
    run = ctx.run
    base = ctx.settings.base_branch
    ctx.base_sha = ctx.clone.prepare(run.branch)
    ctx.remote_branch_sha = ctx.clone.remote_branch_sha(run.branch)
    files = WorkTreeFiles(ctx.clone.path)
    rules_text = files.read_text(REPO_RULES_PATH)
    try:
        ctx.repo_rules = parse_repo_rules(rules_text).for_plan(run.plan)
    except RepoRulesError as error:
        return stop(ctx.redact(str(error)))
    rules = ctx.repo_rules.rules
    text = files.read_text(rules.knob_path)
    if text is None:
        return stop(f"`{rules.knob_path}` is missing on {base}")
    try:
        knob = parse_knob(text, rules.knob_path, rules.knob_field)
    except KnobError as error:
        return stop(str(error))
    if knob.next_track != run.track:
        return stop(f"NEXT_TRACK now names track {knob.next_track}, not {run.track}; run `/track run` again")
    doc = resolve_plan_doc(knob, run.track, files, rules.doc_template)
    if isinstance(doc, DocNotFound):
        return stop(doc.message)
    run.doc, run.slug, run.plan_version = doc.path, doc.slug, knob.plan_version
    branch = rules.branch(run.track, run.slug)
    if branch != run.branch:
        # The branch is named when the run is queued; a repository whose own template names another one
        # would get a PR on a branch its rules do not know.
        return stop(
            f"this repository's {REPO_RULES_PATH} names the branch `{branch}`, but the run was queued for "
            f"`{run.branch}`; nothing was run. The bot must name branches from {REPO_RULES_PATH} "
            "when it queues a run (ask an operator)"
        )
    ctx.doc_text = files.read_text(doc.path) or ""
    ctx.spec = parse_track_doc(ctx.doc_text)
    summary = f"`{run.branch}` from origin/{base} at {ctx.base_sha[:8]}"
    if run.exception_of:
        held = exception_base(ctx)
        if isinstance(held, StepResult):
            return held
        summary = f"`{run.branch}` from the held change's base {ctx.base_sha[:8]} (guardrail exception)"
    source = f"rules from {REPO_RULES_PATH}" if rules_text is not None else "the default rules"
    return StepResult(name="preflight", outcome=Outcome.OK, summary=f"{summary}; {source}")


def exception_base(ctx: RunContext) -> StepResult | None:
    """A granted exception applies its held change where it was made: put the branch at that base."""
    run = ctx.run
    base = run.held_base
    if not base:
        return stop(f"run {run.exception_of}'s held change has no base commit; run `/track run` again")
    found = ctx.clone.git("rev-parse", "--verify", "--quiet", f"{base}^{{commit}}", check=False).strip()
    if not found:
        return stop(f"the held change's base {base[:8]} is no longer in the repository; run `/track run` again")
    ctx.clone.git("checkout", "--quiet", "-f", "-B", run.branch, found, doing="git checkout (held base)")
    ctx.clone.git("clean", "-ffdxq", doing="git clean")
    ctx.base_sha = found
    return None
