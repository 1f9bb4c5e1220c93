"""A run's thread: the parent message, ONE progress message kept up to date, the final report.

Every message goes through the outbox (bot/outbox.py): a Slack failure here is kept and delivered
later, and never fails the run.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from bot.outbox import Outbox
from bot.render import (
    STEP_TITLES,
    Blocks,
    buttons,
    mention,
    parent_text,
    progress_blocks,
    progress_text,
    report_blocks,
    report_text,
    section,
    track_title,
)
from bot.runs import Outcome, Run, RunState

log = logging.getLogger(__name__)

MIN_NOTE_INTERVAL_S = 1.0
MIN_UPDATE_INTERVAL_S = 1.0  # Slack's chat.update allows about one per second per message


class RunThread:
    """Keeps a run's Slack thread in step with the run."""

    def __init__(self, outbox: Outbox, save: Callable[[Run], object]) -> None:
        self.outbox = outbox
        self.save = save  # persists the run (the job's lease-guarded save)
        self._last_note_at = 0.0
        # Coalescing: at most one chat.update per MIN_UPDATE_INTERVAL_S; what waits is the newest state.
        self._lock = threading.Lock()
        self._last_update_at = -MIN_UPDATE_INTERVAL_S
        self._pending: tuple[Run, str, Blocks] | None = None
        self._timer: threading.Timer | None = None

    def ensure_parent(self, run: Run) -> None:
        """Post the parent message if the command handler could not."""
        if run.thread_ts is not None:
            return
        run.thread_ts = self.outbox.show(run, "parent", parent_text(run), in_thread=False)
        self.save(run)

    def update(self, run: Run, note: str = "") -> None:
        """Show the run's steps in the progress message (posting it the first time).

        Updates closer together than MIN_UPDATE_INTERVAL_S are coalesced: the newest state is sent
        when the interval has passed (or before the report), never an older one after it.
        """
        self.save(run)
        with self._lock:
            self._pending = (run, progress_text(run), progress_blocks(run, note))
            wait = self._last_update_at + MIN_UPDATE_INTERVAL_S - time.monotonic()
            if run.progress_ts is not None and wait > 0:
                if self._timer is None:
                    self._timer = threading.Timer(wait, self.flush_progress)
                    self._timer.daemon = True
                    self._timer.start()
                return
        self.flush_progress()

    def flush_progress(self) -> None:
        """Send the newest waiting progress state now."""
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            pending, self._pending = self._pending, None
            if pending is None:
                return
            run, text, blocks = pending
            ts = self.outbox.show(run, "progress", text, blocks, ts=run.progress_ts)
            self._last_update_at = time.monotonic()
        if ts is not None and run.progress_ts is None:
            run.progress_ts = ts
            self.save(run)

    def note(self, run: Run, line: str) -> None:
        """A live line (the agent's output), at most one update per second."""
        now = time.monotonic()
        if not line.strip() or now - self._last_note_at < MIN_NOTE_INTERVAL_S:
            return
        self._last_note_at = now
        self.update(run, note=line.strip())

    def report(self, run: Run) -> None:
        """Post the report (and the PR link) in the thread, or why the run was interrupted."""
        self.flush_progress()  # the final progress state goes before the report
        if run.state is RunState.CANCELLED:
            self.outbox.show(run, "cancelled", cancelled_text(run))
        elif run.state is RunState.ABANDONED:
            text, blocks = abandoned_message(run)
            self.outbox.show(run, "abandoned", text, blocks)
        else:
            self.outbox.show(run, "report", report_text(run), report_blocks(run))


def show_final_progress(outbox: Outbox, run: Run) -> None:
    """Bring the run's progress message (if it was ever posted) to the run's final state."""
    known = outbox.delivered(run.id).get("progress") or run.progress_ts
    if known is not None or "progress" in outbox.pending(run.id):
        outbox.show(run, "progress", progress_text(run), progress_blocks(run), ts=known)


# -- runs that did not end by themselves ---------------------------------------------------------


def step_title(step: str | None) -> str:
    """`*agent* (Agent: implementing the track doc)`, or words for no step."""
    if step is None:
        return "before its first step"
    title = STEP_TITLES.get(step)
    return f"*{step}*" + (f" ({title})" if title else "")


def reached_github(run: Run, open_pr: str | None = None) -> str:
    """What of the run is on GitHub, from its steps: nothing, the branch, or the PR.

    `open_pr` is what GitHub itself says about the branch's PR when the run died mid-publish.
    """
    push = next((s for s in run.steps if s.name == "push"), None)
    pushed = push is not None and push.outcome is Outcome.OK
    if run.pr_url:
        return f"Branch `{run.branch}` is pushed and PR #{run.pr_number} is open: {run.pr_url}"
    if open_pr:
        return f"Branch `{run.branch}` is pushed and {open_pr}."
    step = run.interrupted_step
    if pushed and step == "pull_request":
        return f"Branch `{run.branch}` is pushed; it stopped while opening the PR, and no PR was found."
    if pushed:
        return f"Branch `{run.branch}` is pushed; no PR was opened."
    if step == "push" and push is None:  # died in the middle of `git push`
        return f"It stopped while pushing: branch `{run.branch}` may or may not be on GitHub."
    return "Nothing reached GitHub."


def cancelled_text(run: Run) -> str:
    """The thread's message when a run is cancelled."""
    who = mention(run.cancelled_by) if run.cancelled_by else "someone"
    where = (
        "before it started"
        if not run.steps and run.interrupted_step in (None, "preflight")
        else (f"at step {step_title(run.interrupted_step)}")
    )
    return (
        f":no_entry_sign: *{track_title(run)}* was cancelled by {who} {where}. {reached_github(run)} "
        "`/track run` starts it again."
    )


def abandoned_message(run: Run, open_pr: str | None = None) -> tuple[str, Blocks]:
    """The thread's message when a run's worker died: where it stopped, what is on GitHub, a Retry button."""
    text = (
        f":skull: *{track_title(run)}* was abandoned: its worker stopped answering during step "
        f"{step_title(run.interrupted_step)}. {reached_github(run, open_pr)} "
        "It will not run again by itself; press Retry to run the track again."
    )
    return text, [section(text), buttons(("retry_run", "Retry", run.id, "primary"))]
