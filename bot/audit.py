"""The audit trail: every decision trackbot makes for someone, appended to a Redis stream.

`record` appends one entry to `trackbot:audit` (trimmed to about 100,000 entries). Redis with AOF
keeps it across restarts. `recent` reads the newest entries, optionally for one repository or
one action, and `render_audit` turns them into Slack lines.

Actions in use: run_queued, run_refused, cancelled, retried, approved, dismissed, refused,
exception_granted, knob_advanced, merge_prompted. Any other short word is accepted too.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from redis import Redis
from redis.exceptions import RedisError

from bot.config import SLACK_USER_RE

log = logging.getLogger(__name__)

STREAM = "trackbot:audit"
MAX_ENTRIES = 100_000
MAX_DETAIL = 1000  # characters kept of `detail`
SCAN_LIMIT = 10_000  # entries read at most by a filtered `recent`

KNOWN_ACTIONS = (
    "run_queued",
    "run_refused",
    "cancelled",
    "retried",
    "approved",
    "dismissed",
    "refused",
    "exception_granted",
    "knob_advanced",
    "merge_prompted",
)


@dataclass(frozen=True)
class AuditEntry:
    """One recorded decision. `when` is epoch seconds (from the stream entry's id)."""

    id: str
    when: float
    action: str
    who: str
    repo: str
    outcome: str
    run_id: str | None
    detail: str


def record(
    redis: Redis,
    action: str,
    who: str,
    repo: str,
    outcome: str,
    run_id: str | None = None,
    detail: str = "",
) -> str:
    """Append a decision to the audit stream; returns the entry's id.

    Redact `detail` before passing it if it may hold error text from outside. When Redis fails,
    the entry goes to the log instead (error level) and "" is returned: an audit failure never
    undoes or blocks the decision itself.
    """
    fields: dict[Any, Any] = {
        "action": action,
        "who": who,
        "repo": repo,
        "outcome": outcome,
        "run_id": run_id or "",
        "detail": detail[:MAX_DETAIL],
    }
    try:
        entry_id = redis.xadd(STREAM, fields, maxlen=MAX_ENTRIES, approximate=True)
    except RedisError as error:
        log.error("audit entry not stored (%s): %s", error, fields)
        return ""
    return entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)


def _text(value: Any) -> str:
    if value is None:
        return ""
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _entry(raw_id: Any, raw: Any) -> AuditEntry:
    entry_id = _text(raw_id)
    fields = {_text(k): _text(v) for k, v in raw.items()}
    return AuditEntry(
        id=entry_id,
        when=int(entry_id.split("-", 1)[0]) / 1000,
        action=fields.get("action", ""),
        who=fields.get("who", ""),
        repo=fields.get("repo", ""),
        outcome=fields.get("outcome", ""),
        run_id=fields.get("run_id") or None,
        detail=fields.get("detail", ""),
    )


def recent(redis: Redis, limit: int = 20, repo: str | None = None, action: str | None = None) -> list[AuditEntry]:
    """The newest `limit` entries, newest first; only one repository's / one action's when given.

    A filtered read looks at most SCAN_LIMIT entries back.
    """
    if limit <= 0:
        return []
    found: list[AuditEntry] = []
    page = limit if repo is None and action is None else max(4 * limit, 200)
    upper, scanned = "+", 0
    while len(found) < limit and scanned < SCAN_LIMIT:
        batch = redis.xrevrange(STREAM, max=upper, min="-", count=page)
        if not batch:
            break
        for raw_id, raw in batch:
            entry = _entry(raw_id, raw)
            if (repo is None or entry.repo == repo) and (action is None or entry.action == action):
                found.append(entry)
                if len(found) == limit:
                    break
        scanned += len(batch)
        if len(batch) < page:
            break
        upper = "(" + _text(batch[-1][0])  # exclusive: continue below the oldest entry read
    return found


def _escape(text: str) -> str:
    """Slack mrkdwn control characters, so stored text cannot become a link or a mention."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _who(who: str) -> str:
    return f"<@{who}>" if SLACK_USER_RE.match(who) else _escape(who or "?")


def format_when(when: float) -> str:
    """`2025-01-31 14:05:09Z` (UTC)."""
    return time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(when))


def render_audit(entries: list[AuditEntry]) -> str:
    """Slack mrkdwn, one line per entry: when, who, action, repository, run, outcome, detail."""
    if not entries:
        return "No audit entries yet."
    lines = []
    for entry in entries:
        line = f"`{format_when(entry.when)}` {_who(entry.who)} *{_escape(entry.action)}* {_escape(entry.repo)}"
        if entry.run_id:
            line += f" `{_escape(entry.run_id)}`"
        line += f" — {_escape(entry.outcome)}"
        if entry.detail:
            line += f": {_escape(entry.detail)}"
        lines.append(line)
    return "\n".join(lines)
