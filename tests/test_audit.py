"""The audit trail: decisions appended to a Redis stream, read back newest first, rendered for Slack."""

from __future__ import annotations

import logging
import time

import pytest
from redis import Redis

from bot import audit
from bot.audit import AuditEntry, recent, record, render_audit

REPO = "acme/widgets"


def test_record_and_read_back_newest_first(redis: Redis) -> None:
    before = time.time()
    first = record(redis, "run_queued", "U0ALICE", "acme/widgets", "queued", run_id="run-1", detail="Track 1")
    second = record(redis, "approved", "U0BOB", "acme/widgets", "advanced 1 -> 2", run_id="run-1")
    assert first and second and first != second

    entries = recent(redis)
    assert [e.id for e in entries] == [second, first]
    newest = entries[0]
    assert newest == AuditEntry(
        id=second,
        when=newest.when,
        action="approved",
        who="U0BOB",
        repo="acme/widgets",
        outcome="advanced 1 -> 2",
        run_id="run-1",
        detail="",
    )
    assert before - 1 <= newest.when <= time.time() + 1
    assert entries[1].detail == "Track 1"
    assert redis.xlen(audit.STREAM) == 2  # a real stream: durable with the rest of Redis (AOF)


def test_recent_filters_by_repository_and_action_and_honours_the_limit(redis: Redis) -> None:
    for n in range(300):
        repo = "acme/widgets" if n % 3 else "acme/gadgets"
        record(redis, "run_refused" if n % 2 else "run_queued", f"U0USER{n % 5}", repo, f"n={n}")
    assert len(recent(redis, limit=20)) == 20
    assert recent(redis, limit=1)[0].outcome == "n=299"

    gadgets = recent(redis, limit=50, repo="acme/gadgets")
    assert len(gadgets) == 50 and all(e.repo == "acme/gadgets" for e in gadgets)
    assert [e.outcome for e in gadgets[:2]] == ["n=297", "n=294"]  # newest first, across pages

    queued_gadgets = recent(redis, limit=500, repo="acme/gadgets", action="run_queued")
    assert len(queued_gadgets) == 50  # n divisible by 6
    assert all(e.action == "run_queued" and e.repo == "acme/gadgets" for e in queued_gadgets)
    assert recent(redis, repo="acme/nothing") == []
    assert recent(redis, limit=0) == []


def test_the_stream_is_capped(redis: Redis, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(audit, "MAX_ENTRIES", 100)
    for n in range(1000):
        record(redis, "refused", "U0BOB", "acme/widgets", f"n={n}")
    # MAXLEN ~ trims whole macro nodes: about the cap, never the whole history.
    assert 100 <= redis.xlen(audit.STREAM) < 1000
    assert recent(redis, limit=1)[0].outcome == "n=999"


def test_a_redis_failure_goes_to_the_log_and_does_not_raise(caplog: pytest.LogCaptureFixture) -> None:
    dead = Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.5)
    with caplog.at_level(logging.ERROR, logger="bot.audit"):
        assert record(dead, "approved", "U0ALICE", "acme/widgets", "advanced") == ""
    assert "audit entry not stored" in caplog.text and "approved" in caplog.text


def test_render_audit_lines_with_mentions_and_times(redis: Redis) -> None:
    assert render_audit([]) == "No audit entries yet."
    entries = [
        AuditEntry("1700000000000-0", 1700000000.0, "approved", "U0ALICE", REPO, "advanced to 2", "run-1", ""),
        AuditEntry("1700000001000-0", 1700000001.0, "merge_prompted", "octocat", REPO, "prompted", None, "<x&>"),
    ]
    lines = render_audit(entries).splitlines()
    assert lines[0] == "`2023-11-14 22:13:20Z` <@U0ALICE> *approved* acme/widgets `run-1` — advanced to 2"
    # A GitHub login is not a Slack mention; stored text cannot become markup.
    assert lines[1] == "`2023-11-14 22:13:21Z` octocat *merge_prompted* acme/widgets — prompted: &lt;x&amp;&gt;"

    record(redis, "cancelled", "U0BOB", "acme/widgets", "cancelled", run_id="run-2")
    assert render_audit(recent(redis)).endswith("<@U0BOB> *cancelled* acme/widgets `run-2` — cancelled")
