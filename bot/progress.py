"""A run's thread: the parent message, ONE progress message kept up to date, the final report.

A Slack failure here is logged and never fails the run.
"""

from __future__ import annotations

import logging
import time

from bot.adapters.slack import SlackError, SlackPoster
from bot.render import parent_text, progress_blocks, progress_text, report_text
from bot.runs import Run
from bot.store import RunStore

log = logging.getLogger(__name__)

MIN_NOTE_INTERVAL_S = 1.0


class RunThread:
    """Keeps a run's Slack thread in step with the run."""

    def __init__(self, poster: SlackPoster, store: RunStore) -> None:
        self.poster = poster
        self.store = store
        self._last_note_at = 0.0

    def ensure_parent(self, run: Run) -> None:
        """Post the parent message if the command handler could not."""
        if run.thread_ts is not None:
            return
        try:
            run.thread_ts = self.poster.post(run.channel, parent_text(run))
            self.store.save(run)
        except SlackError as error:
            log.warning("posting the parent message of %s: %s", run.id, error)

    def update(self, run: Run, note: str = "") -> None:
        """Show the run's steps in the progress message (posting it the first time)."""
        self.store.save(run)
        if run.thread_ts is None:
            return
        text = progress_text(run)
        blocks = progress_blocks(run, note)
        try:
            if run.progress_ts is None:
                run.progress_ts = self.poster.post(run.channel, text, blocks, thread_ts=run.thread_ts)
                self.store.save(run)
            else:
                self.poster.update(run.channel, run.progress_ts, text, blocks)
        except SlackError as error:
            log.warning("updating progress of %s: %s", run.id, error)

    def note(self, run: Run, line: str) -> None:
        """A live line (the agent's output), at most one update per second."""
        now = time.monotonic()
        if not line.strip() or now - self._last_note_at < MIN_NOTE_INTERVAL_S:
            return
        self._last_note_at = now
        self.update(run, note=line.strip())

    def report(self, run: Run) -> None:
        """Post the report (and the PR link) in the thread."""
        if run.thread_ts is None:
            return
        try:
            self.poster.post(run.channel, report_text(run), thread_ts=run.thread_ts)
        except SlackError as error:
            log.warning("posting the report of %s: %s", run.id, error)
