"""Publish: the one commit, the push, the PR (updated, not duplicated, on a re-run)."""

from __future__ import annotations

from bot.pipeline import RunContext
from bot.render import report_markdown
from bot.runs import Outcome, StepResult


def commit(ctx: RunContext) -> StepResult:
    """Exactly one commit `chore(track{N}): {slug}` holding the frozen change."""
    run = ctx.run
    message = ctx.repo_rules.rules.commit_message(run.track, run.slug)
    run.commit_sha = ctx.clone.commit(ctx.tree_sha, ctx.base_sha, message, run.branch)
    if run.dry_run:  # only a dry run's report shows the change as a diffstat
        run.diff_stat = ctx.clone.diff_stat(ctx.base_sha, run.commit_sha)
    return StepResult(name="commit", outcome=Outcome.OK, summary=f"`{message}` ({run.commit_sha[:8]})")


def push(ctx: RunContext) -> StepResult:
    """Push the branch, but only while this run still holds the repository's lock."""
    run = ctx.run
    if run.dry_run:
        return StepResult(name="push", outcome=Outcome.SKIPPED, summary="dry run: nothing pushed")
    if not ctx.holds_lock():
        return StepResult(
            name="push",
            outcome=Outcome.ERROR,
            summary="this run no longer holds the repository's lock; nothing was pushed",
        )
    assert run.commit_sha is not None
    ctx.clone.push(run.branch, run.commit_sha, ctx.remote_branch_sha)
    return StepResult(name="push", outcome=Outcome.OK, summary=f"pushed `{run.branch}`")


def pull_request(ctx: RunContext) -> StepResult:
    """Open the PR `Track {N}: {slug}` (a draft when a gate failed), or update the branch's open one
    (its title, body and draft state)."""
    run = ctx.run
    if run.dry_run:
        return StepResult(name="pull_request", outcome=Outcome.SKIPPED, summary="dry run: no PR")
    run.draft = bool(run.failed_gates())
    title = ctx.repo_rules.rules.pr_title(run.track, run.slug)
    body = ctx.redact(report_markdown(run, ctx.repo_rules.rules))
    base = ctx.settings.base_branch
    existing = ctx.github.find_open_pull(run.branch, base)
    if existing is not None:
        pr = ctx.github.update_pull(existing.number, title, body, run.draft)
        verb, draft = "updated", " (a draft)" if run.draft else ""
        if existing.draft != run.draft:  # a re-run whose gates now pass (or now fail)
            draft = ", a draft again" if run.draft else ", now ready for review"
    else:
        pr = ctx.github.open_pull(run.branch, base, title, body, run.draft)
        verb, draft = "opened", " as a draft" if run.draft else ""
    run.pr_number, run.pr_url = pr.number, pr.url
    return StepResult(name="pull_request", outcome=Outcome.OK, summary=f"{verb} PR #{pr.number}{draft}: {pr.url}")
