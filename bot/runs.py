"""A run of one track: its state, the result of each step, and what it produced.

Typed data only; the store persists it as JSON and the renderer turns it into words.
"""

from __future__ import annotations

import time
import uuid
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, Field

# What a report says when the operator turned the sandbox off.
UNCONFINED_WARNING = (
    "the agent and the gates ran UNCONFINED (TRACKBOT_SANDBOX=off): they could read this worker's "
    "files and secrets and reach its network"
)

class RunState(StrEnum):
    """Where a run is in its life; `/track status` shows these."""

    QUEUED = "queued"
    RUNNING = "running"
    STOPPED = "stopped"  # an expected STOP: guardrail, no doc, no change
    FAILED = "failed"  # a fault: a command or service broke
    PR_OPEN = "pr_open"
    MERGED = "merged"  # merged, awaiting a maintainer's approval to advance
    ADVANCING = "advancing"  # approved; main is protected, so the advance waits for its own PR to merge
    ADVANCED = "advanced"
    DISMISSED = "dismissed"  # merged, a maintainer chose not to advance from this prompt
    CANCELLED = "cancelled"  # someone ran /track cancel
    ABANDONED = "abandoned"  # its worker died mid-run; never re-run by itself
    DRY_RUN = "dry_run"  # /track run --dry-run finished: everything but the push and the PR

    @property
    def active(self) -> bool:
        """Queued or running: holds the repository's lock."""
        return self in (RunState.QUEUED, RunState.RUNNING)


class Outcome(StrEnum):
    """A step's result. `failed` and `stopped` are expected failures shown to the user; `error` is a fault."""

    OK = "ok"
    FAILED = "failed"  # expected failure that does not halt the run (a red gate: the PR becomes a draft)
    STOPPED = "stopped"  # expected failure that halts the run (guardrail STOP)
    ERROR = "error"  # a fault (git broke, GitHub refused): halts the run
    SKIPPED = "skipped"

    @property
    def halts(self) -> bool:
        """Whether the pipeline stops after a step with this outcome."""
        return self in (Outcome.STOPPED, Outcome.ERROR)


class CommandRecord(BaseModel):
    """One command a step ran: what, its exit code (None: it did not finish or did not run), how long."""

    command: str
    exit_code: int | None
    duration_s: float
    output_tail: str = ""
    note: str = ""


class GateStatus(StrEnum):
    """A gate either passed, failed, or was not run (never silently passed)."""

    PASSED = "passed"
    FAILED = "failed"
    NOT_RUN = "not run"


class GateResult(BaseModel):
    """A gate of the procedure (go test, a new script) and what happened to it."""

    name: str
    command: str
    status: GateStatus
    exit_code: int | None = None
    duration_s: float = 0.0
    reason: str = ""
    output_tail: str = ""
    cwd: str = ""  # the folder it ran in, relative to the repository root ("" = the root)


class DocGateCheck(BaseModel):
    """A gate the track doc requires, and whether trackbot ran it or a person must check it."""

    text: str  # the doc's bullet
    kind: str  # go-test, compose, script or manual (bot.trackdoc.GATE_KINDS)
    gates: list[str] = Field(default_factory=list)  # names of the gates trackbot ran for it
    status: str = ""  # passed / failed / not run, from those gates; "" when trackbot ran nothing for it
    note: str = ""  # why a person must check it


class InvariantWarning(BaseModel):
    """An added line that breaks one of the repository's invariants."""

    invariant: str
    path: str
    line: int
    text: str
    message: str


class GuardrailConflict(BaseModel):
    """A changed path the track doc allows but the procedure forbids."""

    path: str
    allowed: str  # the doc's pattern that allows it, or the kind of file its words name
    forbidden: str  # the procedure's forbidden entry
    doc_line: int = 0  # the doc's line that names it (0: not known, an older record)
    doc_words: str = ""  # that line, as the doc words it
    by_words: bool = False  # the line names the path by its kind of file, not by a pattern


class ScopeMatch(BaseModel):
    """A changed path and the line of the track doc that allows (or excludes) it."""

    path: str
    line: int  # 1-based line of the doc
    text: str  # the doc's words on that line
    how: str  # what on the line names the path: "`pattern`" or a kind of file ("tests")
    section: str = "allowed"  # "allowed" (the scope section) or "gates" (a gate that asks for the change)


class StepResult(BaseModel):
    """What one named step did."""

    name: str
    outcome: Outcome
    summary: str
    commands: list[CommandRecord] = Field(default_factory=list)
    details: list[str] = Field(default_factory=list)
    duration_s: float = 0.0


class ChangedFile(BaseModel):
    """A path the agent changed, with git's status letter (A, M, D, R, T)."""

    status: str
    path: str
    old_path: str | None = None

    def paths(self) -> list[str]:
        """Every path this change touches (a rename touches two)."""
        return [self.path] if self.old_path is None else [self.old_path, self.path]


def new_run_id() -> str:
    """A run id RQ accepts as a job id (letters, digits, `-`, `_`)."""
    return f"run-{time.strftime('%Y%m%d%H%M%S')}-{uuid.uuid4().hex[:8]}"


class Run(BaseModel):
    """A run of one track of one repository, from `/track run` to the advance of the knob."""

    id: str = Field(default_factory=new_run_id)
    repo: str
    track: int
    noun: str = "Track"  # what one item of its plan is called ("Phase")
    plan: str = "tracks"  # the plan kind (bot.rules.Rules.plan): `tracks`, `phases`, or the repository's own
    slug: str
    doc: str
    plan_version: str | None = None
    branch: str
    requested_by: str
    channel: str
    thread_ts: str | None = None
    progress_ts: str | None = None
    state: RunState = RunState.QUEUED
    current_step: str | None = None
    steps: list[StepResult] = Field(default_factory=list)
    changed_files: list[ChangedFile] = Field(default_factory=list)
    gates: list[GateResult] = Field(default_factory=list)
    commit_sha: str | None = None
    pr_number: int | None = None
    pr_url: str | None = None
    draft: bool = False
    report_comments: int = 0  # the report was over GitHub's PR body limit: it goes on in this many PR comments
    draft_refused: bool = False  # GitHub refused a draft: the PR is a normal one marked as failing its gates
    agent_summary: str = ""
    unconfined: bool = False  # the agent or a gate ran without the sandbox (TRACKBOT_SANDBOX=off)
    stop_reason: str | None = None
    cancelled_by: str | None = None
    retry_of: str | None = None  # the run this one retries
    dry_run: bool = False
    diff_stat: str = ""
    error: str | None = None
    created_at: float = Field(default_factory=time.time)
    started_at: float | None = None
    finished_at: float | None = None
    prompt_ts: str | None = None
    merged_by: str | None = None
    advanced_by: str | None = None
    advanced_to: int | None = None
    # The advance as its own one-line PR (a branch rule refused the direct write, or advance.mode says so).
    advance_pr_number: int | None = None
    advance_pr_url: str | None = None
    advance_branch: str | None = None
    advance_approved_by: str | None = None
    # What the procedure found beyond pass/fail (bot.trackdoc, bot.invariants): advice in the report.
    out_of_scope: list[str] = Field(default_factory=list)  # changed paths the doc's scope does not cover
    in_scope: list[ScopeMatch] = Field(default_factory=list)  # changed paths, each with the doc's line allowing it
    scope_excluded: list[ScopeMatch] = Field(default_factory=list)  # paths a "do not change" line excludes
    doc_gates: list[DocGateCheck] = Field(default_factory=list)
    invariant_hits: list[InvariantWarning] = Field(default_factory=list)
    # A guardrail exception: a STOPPED run whose only forbidden paths the doc explicitly allows keeps
    # its change (bot.store hold_change) until a maintainer grants it (bot.exception) or it expires.
    exception_paths: list[str] = Field(default_factory=list)
    exception_conflicts: list[GuardrailConflict] = Field(default_factory=list)
    held_base: str | None = None  # the base commit of the held change
    exception_of: str | None = None  # on the granted run: the STOPPED run whose change it applies
    exception_granted_by: str | None = None  # the maintainer who granted it
    exception_run: str | None = None  # on the STOPPED run: the run its exception was granted to
    # Where a run executes, for the reaper (bot/reaper.py) and cancel (bot/cancel.py).
    worker_host: str | None = None  # hostname of the worker whose job process ran it
    worker_pid: int | None = None  # the job process (RQ's work horse)
    agent_pgid: int | None = None  # the agent's process group (the agent runs in its own session)
    process_group: int | None = None  # the process group of the command running now: agent, gate or git
    interrupted_step: str | None = None  # the step a cancel or a dead worker cut short (or did not let start)

    def follow_up(self, requested_by: str, **fields: Any) -> Run:
        """A new queued run of the same track, branch and thread (a retry, a granted exception)."""
        return Run(
            repo=self.repo,
            track=self.track,
            slug=self.slug,
            doc=self.doc,
            plan_version=self.plan_version,
            plan=self.plan,
            noun=self.noun,
            branch=self.branch,
            requested_by=requested_by,
            channel=self.channel,
            thread_ts=self.thread_ts,
            **fields,
        )

    def last_step(self) -> StepResult | None:
        """The most recent step result, if any."""
        return self.steps[-1] if self.steps else None

    def failed_gates(self) -> list[GateResult]:
        """Gates that ran and failed."""
        return [g for g in self.gates if g.status is GateStatus.FAILED]
