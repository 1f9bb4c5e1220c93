"""Prose scope: track docs written the way people write them, and the report each one must give.

Each fixture is a doc as a team would write it (prose items, bold words, commands in backticks in the
gate list, a trailing "do not change ..." line); each test states which file is in scope by which line,
which is outside, and which guardrail exception is offered.
"""

from __future__ import annotations

from bot.render import conflict_line, report_markdown
from bot.rules import DEFAULT_RULES
from bot.runs import ChangedFile, GuardrailConflict, Run
from bot.scope import judge_scope, naming_line, scope_items
from bot.trackdoc import parse_track_doc

CANCEL_DOC = """\
# Track 14: run-cancellation

## Goal

Let a client cancel a queued or running run, idempotently.

## What you are allowed to change

- `internal/runs/` cancellation logic
- Unit tests for the policy engine
- OpenAPI spec for the cancel endpoint
- OpenAPI examples demonstrating idempotency behavior
- README sections **only if needed**
- `deploy/local/*` compose topology and docs
- Do not change `internal/auth/` or the migrations.

## Required gates

- `go test ./...`
- Update OpenAPI with agent endpoints
- Manual: a maintainer reads the cancel flow
"""


def changes(*paths: str) -> list[ChangedFile]:
    return [ChangedFile(status="M", path=path) for path in paths]


def line_of(doc: str, words: str) -> int:
    """The 1-based line of `doc` that holds `words`."""
    return next(number for number, line in enumerate(doc.splitlines(), start=1) if words in line)


def test_each_changed_file_is_in_scope_by_the_line_of_the_doc_that_names_it() -> None:
    spec = parse_track_doc(CANCEL_DOC)
    judged = judge_scope(
        changes(
            "internal/runs/cancel.go",
            "internal/policy/engine_test.go",
            "docs/api/runs/openapi.yaml",
            "README.md",
            "deploy/local/compose.yaml",
            "deploy/local/README-smoke.md",
        ),
        spec,
    )
    by_path = {m.path: (m.line, m.how) for m in judged.in_scope}
    assert by_path == {
        "internal/runs/cancel.go": (line_of(CANCEL_DOC, "cancellation logic"), "`internal/runs/`"),
        "internal/policy/engine_test.go": (line_of(CANCEL_DOC, "Unit tests"), "tests"),
        "docs/api/runs/openapi.yaml": (line_of(CANCEL_DOC, "cancel endpoint"), "OpenAPI specs and examples"),
        "README.md": (line_of(CANCEL_DOC, "README sections"), "READMEs"),
        "deploy/local/compose.yaml": (line_of(CANCEL_DOC, "deploy/local"), "`deploy/local/`"),
        "deploy/local/README-smoke.md": (line_of(CANCEL_DOC, "deploy/local"), "`deploy/local/`"),
    }
    assert judged.outside == []


def test_a_file_no_line_names_is_outside_and_a_do_not_change_line_excludes_what_it_names() -> None:
    spec = parse_track_doc(CANCEL_DOC)
    judged = judge_scope(changes("internal/auth/token.go", "cmd/server/main.go", "internal/runs/x.go"), spec)
    assert judged.outside == ["internal/auth/token.go", "cmd/server/main.go"]
    [excluded] = judged.excluded
    assert excluded.path == "internal/auth/token.go"
    assert excluded.line == line_of(CANCEL_DOC, "Do not change")


def test_an_exclusion_wins_over_a_kind_the_doc_allows() -> None:
    doc = """\
# Track 3: policy

## What you are allowed to change

- Unit tests for the policy engine; do not change `internal/legacy/`
"""
    spec = parse_track_doc(doc)
    judged = judge_scope(changes("internal/legacy/old_test.go", "internal/policy/p_test.go"), spec)
    assert [m.path for m in judged.in_scope] == ["internal/policy/p_test.go"]
    assert judged.outside == ["internal/legacy/old_test.go"]
    assert [m.line for m in judged.excluded] == [5]


def test_words_that_name_no_kind_of_file_put_nothing_in_scope() -> None:
    doc = """\
# Track 5: tidy

## What you are allowed to change

- Keep the change small and focused.
- Docs, where they help.
- `internal/tidy/`
"""
    spec = parse_track_doc(doc)
    judged = judge_scope(changes("docs/guide.md", "internal/tidy/a.go", "app/main.go"), spec)
    assert [m.path for m in judged.in_scope] == ["internal/tidy/a.go"]
    assert judged.outside == ["docs/guide.md", "app/main.go"]


def test_a_kind_named_with_a_folder_stays_inside_that_folder() -> None:
    doc = """\
# Track 6: storage

## What you are allowed to change

- Tests under `internal/storage/`
- Schemas in **db/schema/**
"""
    spec = parse_track_doc(doc)
    judged = judge_scope(changes("internal/storage/s_test.go", "internal/other/o_test.go", "db/schema/runs.sql"), spec)
    assert {m.path: m.line for m in judged.in_scope} == {"internal/storage/s_test.go": 5, "db/schema/runs.sql": 6}
    assert judged.outside == ["internal/other/o_test.go"]


def test_a_doc_without_a_scope_section_judges_nothing() -> None:
    spec = parse_track_doc("# Track 1: x\n\n## Goal\n\nDo it.\n")
    judged = judge_scope(changes("anything.go"), spec)
    assert judged.outside == [] and judged.in_scope == []


def test_the_doc_words_that_name_a_forbidden_openapi_file_offer_the_exception() -> None:
    spec = parse_track_doc(CANCEL_DOC)
    named = naming_line("docs/api/runs/openapi.yaml", spec, "docs/api/")
    assert named is not None
    assert named.line == line_of(CANCEL_DOC, "cancel endpoint")
    assert named.text == "OpenAPI spec for the cancel endpoint"


def test_a_required_gate_that_asks_for_the_change_names_the_forbidden_file() -> None:
    doc = """\
# Track 21: agent-endpoints

## What you are allowed to change

- `internal/agents/`

## Required gates

- `go test ./internal/agents/...`
- Update OpenAPI with agent endpoints
"""
    spec = parse_track_doc(doc)
    named = naming_line("docs/api/agents/openapi.yaml", spec, "docs/api/")
    assert named is not None and named.section == "gates"
    assert named.text == "Update OpenAPI with agent endpoints" and named.line == 10
    judged = judge_scope(changes("docs/api/agents/openapi.yaml", "internal/agents/a.go"), spec)
    assert judged.outside == []


def test_a_gate_that_only_checks_names_nothing() -> None:
    doc = """\
# Track 2: x

## What you are allowed to change

- `app/`

## Required gates

- Unit tests pass
- OpenAPI lint is clean
"""
    spec = parse_track_doc(doc)
    assert [item.section for item in scope_items(spec)] == ["allowed"]
    assert naming_line("docs/api/openapi.yaml", spec, "docs/api/") is None
    assert judge_scope(changes("app/a_test.go", "pkg/b_test.go"), spec).outside == ["pkg/b_test.go"]


def test_no_exception_when_the_doc_excludes_the_forbidden_file_or_names_only_a_broad_folder() -> None:
    excluded = parse_track_doc(
        "# T\n\n## What you are allowed to change\n\n- `docs/**`\n- Do not change the OpenAPI spec\n"
    )
    assert naming_line("docs/api/openapi.yaml", excluded, "docs/api/") is None
    broad = parse_track_doc("# T\n\n## What you are allowed to change\n\n- `docs/**`\n")
    assert naming_line("docs/api/openapi.yaml", broad, "docs/api/") is None


def test_the_report_says_which_line_allowed_each_file_and_why_the_others_are_outside() -> None:
    spec = parse_track_doc(CANCEL_DOC)
    judged = judge_scope(changes("docs/api/runs/openapi.yaml", "internal/auth/a.go", "cmd/x.go"), spec)
    run = Run(
        repo="acme/widgets",
        track=14,
        slug="run-cancellation",
        requested_by="U1",
        doc="docs/t.md",
        branch="track-14-run-cancellation",
        channel="C1",
    )
    run.in_scope, run.scope_excluded, run.out_of_scope = judged.in_scope, judged.excluded, judged.outside
    text = report_markdown(run, DEFAULT_RULES)
    cancel = line_of(CANCEL_DOC, "cancel endpoint")
    assert (
        f'- `docs/api/runs/openapi.yaml` — line {cancel}: "OpenAPI spec for the cancel endpoint" '
        "(OpenAPI specs and examples)" in text
    )
    exclusion = line_of(CANCEL_DOC, "Do not change")
    quote = '"Do not change internal/auth/ or the migrations."'
    assert f"- `internal/auth/a.go`: excluded by line {exclusion}: {quote}" in text
    assert "- `cmd/x.go`: no line of the doc names it" in text


def test_a_conflict_named_by_words_quotes_them() -> None:
    conflict = GuardrailConflict(
        path="docs/api/runs/openapi.yaml",
        allowed="OpenAPI specs and examples",
        forbidden="docs/api/",
        doc_line=9,
        doc_words="OpenAPI spec for the cancel endpoint",
        by_words=True,
    )
    assert conflict_line(conflict) == (
        'the doc\'s line 9 ("OpenAPI spec for the cancel endpoint") names `docs/api/runs/openapi.yaml` '
        "(OpenAPI specs and examples); the procedure forbids `docs/api/`"
    )
