"""Preflight: the cached clone, a fetch, a fresh track branch from origin/main, the knob and doc re-checked."""

from __future__ import annotations

from bot.adapters.git import WorkTreeFiles
from bot.knob import KnobError, parse_knob
from bot.pipeline import RunContext
from bot.plan import DocNotFound, resolve_track_doc
from bot.runs import Outcome, StepResult


def preflight(ctx: RunContext) -> StepResult:
    """Reset the clone to a fresh branch and make sure the knob still names this run's track."""
    run = ctx.run
    ctx.base_sha = ctx.clone.prepare(run.branch)
    ctx.remote_branch_sha = ctx.clone.remote_branch_sha(run.branch)
    files = WorkTreeFiles(ctx.clone.path)
    text = files.read_text(ctx.rules.knob_path)
    if text is None:
        return StepResult(
            name="preflight",
            outcome=Outcome.STOPPED,
            summary=f"`{ctx.rules.knob_path}` is missing on {ctx.settings.base_branch}",
        )
    try:
        knob = parse_knob(text, ctx.rules.knob_path)
    except KnobError as error:
        return StepResult(name="preflight", outcome=Outcome.STOPPED, summary=str(error))
    if knob.next_track != run.track:
        return StepResult(
            name="preflight",
            outcome=Outcome.STOPPED,
            summary=f"NEXT_TRACK now names track {knob.next_track}, not {run.track}; run `/track run` again",
        )
    doc = resolve_track_doc(knob, run.track, files)
    if isinstance(doc, DocNotFound):
        return StepResult(name="preflight", outcome=Outcome.STOPPED, summary=doc.message)
    run.doc, run.slug, run.plan_version = doc.path, doc.slug, knob.plan_version
    ctx.doc_text = files.read_text(doc.path) or ""
    return StepResult(
        name="preflight",
        outcome=Outcome.OK,
        summary=f"`{run.branch}` from origin/{ctx.settings.base_branch} at {ctx.base_sha[:8]}",
    )
