"""The merge prompt without a public URL: poll GitHub for merges of trackbot's open PRs.

In Socket Mode there is often no public address for GitHub's webhook. `poll_merges` asks GitHub
about every run whose PR is open, with conditional requests: the ETag of each PR's last answer
is kept in Redis and sent as `If-None-Match`, so an unchanged PR costs a 304 and no rate limit.
A merged PR gets the same prompt the webhook gives, through `Advancer.prompt_for_merge`, whose
once-marker makes webhook and poller prompt once between them.

`PollerLoop` calls it every TRACKBOT_POLL_INTERVAL seconds on a background thread (started by
`trackbot worker`); with several workers, a Redis lock lets one of them poll per interval.
"""

from __future__ import annotations

import logging
import os
import threading

from bot import audit
from bot.adapters.github import GitHubError
from bot.advance import Advancer
from bot.runs import RunState
from bot.services import Services

log = logging.getLogger(__name__)

ETAG_TTL_S = 30 * 24 * 3600
RUNS_PER_REPO = 20  # the newest runs of each repository looked at; an open PR is always among them


def _etag_key(repo: str, number: int) -> str:
    return f"trackbot:poll:etag:{repo}:{number}"


def poll_merges(services: Services, runs_per_repo: int = RUNS_PER_REPO) -> list[tuple[str, int]]:
    """Ask GitHub (conditionally) about every open PR of a run; prompt for each merge. Returns `(repo, pr)` prompted.

    Runs whose PR is open are asked about with `If-None-Match`; a merged run whose prompt was never
    posted is asked about again until it is. A GitHub failure for one PR is logged and the others
    are still checked.
    """
    prompted: list[tuple[str, int]] = []
    redis = services.redis
    for repo in services.settings.repositories:
        for run in services.store.runs(repo, runs_per_repo):
            # An advance waiting for its own PR is followed like a track's PR.
            advancing = run.state is RunState.ADVANCING and run.advance_pr_number is not None
            if run.pr_number is None:
                continue
            # A merged run whose prompt never got posted (Slack failed, for the webhook or for us) is asked
            # about again, unconditionally: nobody else will retry it (GitHub does not redeliver by itself).
            unprompted = run.state is RunState.MERGED and run.prompt_ts is None
            if run.state is not RunState.PR_OPEN and not unprompted and not advancing:
                continue
            number = run.advance_pr_number if advancing and run.advance_pr_number else run.pr_number
            key = _etag_key(repo, number)
            raw = None if unprompted else redis.get(key)
            etag = raw.decode() if isinstance(raw, bytes) else raw
            try:
                pull, new_etag = services.github(repo).pull_if_changed(number, etag)
            except GitHubError as error:
                log.warning("polling PR #%s of %s: %s", number, repo, services.redact(str(error)))
                continue
            if pull is not None and pull.merged:
                try:
                    prompt = Advancer(services).prompt_for_merge(
                        repo, pull.head or run.advance_branch or run.branch, number, pull.merged_by
                    )
                except Exception as error:
                    redis.delete(key)  # see the merge again next time
                    log.warning("prompting for merged PR #%s of %s: %s", number, repo, services.redact(str(error)))
                    continue
                if prompt is not None:
                    prompted.append((repo, number))
                    audit.record(
                        redis,
                        "merge_prompted",
                        pull.merged_by or "?",
                        repo,
                        "prompted",
                        run_id=prompt.id,
                        detail=f"PR #{number} merge found by polling",
                    )
            if new_etag:
                redis.set(key, new_etag, ex=ETAG_TTL_S)
    return prompted


class PollerLoop:
    """Calls `poll_merges` every `interval_s` seconds on a daemon thread until `stop()`.

    `interval_s` defaults to the TRACKBOT_POLL_INTERVAL setting; 0 means off (`start()` returns False).
    Every round takes a Redis lock for the interval, so several worker processes poll once between them.
    A failing round is logged and the loop goes on.
    """

    LOCK_KEY = "trackbot:poll:lock"

    def __init__(self, services: Services, interval_s: float | None = None) -> None:
        self.services = services
        self.interval_s = services.settings.poll_interval_s if interval_s is None else interval_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.rounds = 0  # rounds this process actually polled

    def run_once(self) -> list[tuple[str, int]] | None:
        """One round: poll, unless another process holds this interval's lock (then None)."""
        ttl_ms = max(1, int(self.interval_s * 1000 * 0.9))
        if not self.services.redis.set(self.LOCK_KEY, str(os.getpid()), nx=True, px=ttl_ms):
            return None
        self.rounds += 1
        return poll_merges(self.services)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.run_once()
            except Exception:
                log.exception("merge poll failed; trying again in %ss", self.interval_s)
            self._stop.wait(self.interval_s)

    def start(self) -> bool:
        """Start polling in the background; False (and nothing started) when the interval is 0."""
        if self.interval_s <= 0:
            log.info("merge polling is off (TRACKBOT_POLL_INTERVAL=0)")
            return False
        if self._thread is not None:
            return True
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="trackbot-merge-poller", daemon=True)
        self._thread.start()
        log.info("polling open PRs for merges every %ss", self.interval_s)
        return True

    def stop(self, timeout: float = 10) -> None:
        """Stop after the current round (waits up to `timeout` seconds)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
