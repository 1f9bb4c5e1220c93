"""Publish: the one commit, the push, the PR (updated, not duplicated, on a re-run)."""

from __future__ import annotations

from bot.adapters.github import GitHubError, PullRef
from bot.pipeline import RunContext
from bot.render import report_markdown
from bot.runs import Outcome, StepResult

# GitHub refuses a PR body or a comment longer than this (422 "body is too long").
MAX_BODY_CHARS = 65536
# Room kept in each part for the line that says where the rest of the report is.
_NOTE_ROOM = 300
# GitHub's words when a repository's plan has no draft PRs (a 422).
DRAFTS_REFUSED = "draft pull requests are not supported"
FAILING_TITLE = "[gates failing] "


def split_report(text: str, limit: int = MAX_BODY_CHARS - _NOTE_ROOM) -> list[str]:
    """The report in parts of at most `limit` characters, cut between lines (a longer line is cut
    too), in order; one part when it fits."""
    parts: list[str] = []
    current = ""
    for line in text.splitlines(keepends=True):
        while len(line) > limit:
            if current:
                parts.append(current)
                current = ""
            parts.append(line[:limit])
            line = line[limit:]
        if len(current) + len(line) > limit:
            parts.append(current)
            current = ""
        current += line
    if current or not parts:
        parts.append(current)
    return parts


def _body_and_rest(report: str) -> tuple[str, list[str]]:
    """The PR body within GitHub's limit, and the report's further parts (posted as PR comments)."""
    parts = split_report(report)
    if len(parts) == 1:
        return parts[0], []
    total = len(parts)
    note = (
        f"\n\n---\n*The report is {len(report):,} characters, over GitHub's {MAX_BODY_CHARS:,} for a PR body: "
        f"it goes on in {total - 1} comment(s) below.*"
    )
    rest = [f"*Report, part {n} of {total}*\n\n{part}" for n, part in enumerate(parts[1:], start=2)]
    return parts[0] + note, rest


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
    run.draft_refused, run.report_comments = False, 0
    title = ctx.repo_rules.rules.pr_title(run.track, run.slug)
    base = ctx.settings.base_branch
    existing = ctx.github.find_open_pull(run.branch, base)
    try:
        try:
            pr, verb, draft, rest = _publish(ctx, existing, title)
        except GitHubError as error:
            if not (run.draft and DRAFTS_REFUSED in str(error).lower()):
                raise
            # No drafts on this repository's plan: a normal PR, marked as failing its gates in title and body.
            run.draft, run.draft_refused = False, True
            pr, verb, draft, rest = _publish(ctx, existing, FAILING_TITLE + title)
            draft = " marked as failing its gates (GitHub refused a draft: not supported here)"
    except Exception:
        if existing is None:  # no PR was opened: the report must not call one a draft
            run.draft = run.draft_refused = False
        raise
    run.pr_number, run.pr_url = pr.number, pr.url
    for part in rest:
        ctx.github.comment(pr.number, part)
    run.report_comments = len(rest)
    more = f"; the report goes on in {len(rest)} PR comment(s)" if rest else ""
    return StepResult(name="pull_request", outcome=Outcome.OK, summary=f"{verb} PR #{pr.number}{draft}: {pr.url}{more}")


def _publish(ctx: RunContext, existing: PullRef | None, title: str) -> tuple[PullRef, str, str, list[str]]:
    """Open the PR or update the open one; the PR, what was done, its draft words and the report's further parts."""
    run = ctx.run
    body, rest = _body_and_rest(ctx.redact(report_markdown(run, ctx.repo_rules.rules)))
    if existing is not None:
        pr = ctx.github.update_pull(existing.number, title, body, run.draft)
        draft = " (a draft)" if run.draft else ""
        if existing.draft != run.draft:  # a re-run whose gates now pass (or now fail)
            draft = ", a draft again" if run.draft else ", now ready for review"
        return pr, "updated", draft, rest
    pr = ctx.github.open_pull(run.branch, ctx.settings.base_branch, title, body, run.draft)
    return pr, "opened", " as a draft" if run.draft else "", rest
