"""A guardrail STOP's change, kept for a maintainer's exception, and applied again when it is granted.

When every forbidden path a change touches is one the track doc explicitly allows (for example the
doc says `docs/api/openapi.yaml` may change, the procedure forbids `docs/api/`), the STOP keeps the
change as a binary patch against its base commit. A maintainer may then grant an exception
(bot.exception): a new run applies exactly that patch instead of running the agent, and the
guardrail lets exactly those paths through.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from bot.adapters.git import GitError
from bot.guardrails import Violation, forbidding_entry
from bot.pipeline import RunContext
from bot.render import conflict_line
from bot.repo_rules import REPO_RULES_PATH
from bot.runs import GuardrailConflict, Outcome, StepResult
from bot.scope import naming_line
from bot.store import RunStore

MAX_HELD_PATCH_BYTES = 16 * 1024 * 1024
# Plumbing-stable diff output: no pager, colour, external diff or textconv, the usual a/ b/ prefixes.
DIFF_OPTIONS = ("--no-color", "--no-ext-diff", "--no-textconv", "--src-prefix=a/", "--dst-prefix=b/")


def run_store(ctx: RunContext) -> RunStore:
    """The store the worker gave the run's context (a guardrail STOP keeps its change there)."""
    if ctx.store is None:
        raise RuntimeError("this run's context has no store to keep its change in")
    return ctx.store


def diff_bytes(ctx: RunContext, *args: str) -> bytes:
    """`git diff <args>` of the clone, byte for byte (git writes it to a file: no decoding, no tail)."""
    with tempfile.TemporaryDirectory(prefix="trackbot-diff-") as scratch:
        target = Path(scratch) / "change.diff"
        ctx.clone.git("diff", *DIFF_OPTIONS, f"--output={target}", *args, doing="git diff")
        return target.read_bytes() if target.exists() else b""


def exception_conflicts(ctx: RunContext, violations: list[Violation]) -> list[GuardrailConflict] | None:
    """The doc-allowed forbidden paths, when they are ALL of the violations; else None.

    The doc allows a forbidden path when one of its lines names it: a path under the forbidden
    entry, or words naming its kind of file ("OpenAPI spec for the cancel endpoint"), in the scope
    section or in a required gate that asks for the change (bot.scope.naming_line). The knob and
    `.trackbot.toml` never qualify: they change only by a maintainer's hand on main.
    """
    spec = ctx.spec
    if spec is None or not violations:
        return None
    rules = ctx.repo_rules.rules
    conflicts: list[GuardrailConflict] = []
    for violation in violations:
        if violation.path in (rules.knob_path, REPO_RULES_PATH):
            return None
        forbidden = forbidding_entry(violation.path, rules)
        named = naming_line(violation.path, spec, forbidden) if forbidden is not None else None
        if named is None or forbidden is None:
            return None
        if all(c.path != violation.path for c in conflicts):
            conflicts.append(
                GuardrailConflict(
                    path=violation.path,
                    allowed=named.how.strip("`"),
                    forbidden=forbidden,
                    doc_line=named.line,
                    doc_words=named.text,
                    by_words=not named.how.startswith("`"),
                )
            )
    return conflicts


def offer_exception(ctx: RunContext, violations: list[Violation], stopped: StepResult) -> None:
    """Keep the change of a STOP a maintainer could grant, and say so in the STOP's details."""
    conflicts = exception_conflicts(ctx, violations)
    if conflicts is None:
        return
    run = ctx.run
    for conflict in conflicts:
        stopped.details.append(conflict_line(conflict))
    if run.dry_run:
        stopped.details.append("a dry run keeps nothing: `/track run` offers a maintainer the exception")
        return
    try:
        patch = diff_bytes(ctx, "--cached", "--binary", "--full-index", ctx.base_sha)
        if len(patch) > MAX_HELD_PATCH_BYTES:
            stopped.details.append(
                f"the change is {len(patch) // 1024} KiB, too large to keep for an exception; "
                "change the doc or the procedure, then `/track run` again"
            )
            return
        run_store(ctx).hold_change(run.id, ctx.base_sha, patch)
    except Exception as error:  # keeping it is a favour: a failure must not turn the STOP into a fault
        stopped.details.append(f"the change could not be kept for an exception: {ctx.redact(str(error))}")
        return
    run.exception_paths = [c.path for c in conflicts]
    run.exception_conflicts = conflicts
    run.held_base = ctx.base_sha
    stopped.details.append("the change is kept: a maintainer may grant a guardrail exception for exactly these paths")


def apply_held_change(ctx: RunContext) -> StepResult:
    """Instead of the agent: apply the STOPPED run's held change onto the branch at its base."""
    run = ctx.run
    assert run.exception_of is not None
    held = run_store(ctx).held_change(run.exception_of)
    if held is None:
        return StepResult(
            name="agent",
            outcome=Outcome.STOPPED,
            summary=f"the change held from run {run.exception_of} is gone (it expired); run `/track run` again",
        )
    base, patch = held
    if base != ctx.base_sha:
        return StepResult(
            name="agent",
            outcome=Outcome.STOPPED,
            summary=f"the held change was made on {base[:8]}, not on {ctx.base_sha[:8]}; run `/track run` again",
        )
    with tempfile.TemporaryDirectory(prefix="trackbot-held-") as scratch:
        target = Path(scratch) / "held.patch"
        target.write_bytes(patch)
        try:
            ctx.clone.git("apply", "--index", "--binary", "--whitespace=nowarn", str(target), doing="git apply")
        except GitError as error:
            return StepResult(
                name="agent",
                outcome=Outcome.STOPPED,
                summary=f"the held change no longer applies ({ctx.redact(str(error))}); run `/track run` again",
            )
    granted = f" by @{run.exception_granted_by}" if run.exception_granted_by else ""
    paths = ", ".join(f"`{p}`" for p in run.exception_paths)
    run.agent_summary = (
        f"No agent ran: trackbot applied the change held from run {run.exception_of} "
        f"(a guardrail exception granted{granted} for {paths})."
    )
    return StepResult(
        name="agent",
        outcome=Outcome.OK,
        summary=f"applied the change held from run {run.exception_of} ({len(patch)} bytes); no agent ran",
    )
