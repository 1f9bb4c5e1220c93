"""Track docs as data: title, sections, allowed paths, required gates, the Compose smoke gate."""

from __future__ import annotations

import pytest

from bot.rules import DEFAULT_RULES, Rules
from bot.runs import ChangedFile
from bot.trackdoc import (
    ComposeGate,
    RequiredGate,
    TrackSpec,
    allowed_forbidden,
    compose_subcommand,
    out_of_scope,
    parse_track_doc,
    path_allowed,
)

TRACK_9 = """\
# Track 9: Federation security hardening

## Goal
Harden the federation service: mTLS between peers, signed cancel requests.

## What you are allowed to change
- `internal/federation/**`
- `cmd/agentd/main.go`
- `deploy/compose/` (the federation service only)
- OpenAPI spec for the cancel endpoint: `docs/api/openapi.yaml`
- Run `go generate ./...` after editing the spec.

## Required gates
- `go test ./...`
- Compose smoke: `docker compose -f deploy/compose/docker-compose.yml up -d --wait`, then
  `./scripts/smoke-federation.sh`, then `docker compose -f deploy/compose/docker-compose.yml down -v`
- Manual: verify the dashboard renders

## Done when
All gates are green and the cancel endpoint rejects unsigned requests.
"""


def test_a_real_track_doc_becomes_its_title_scope_and_gates() -> None:
    spec = parse_track_doc(TRACK_9)

    assert spec.title == "Track 9: Federation security hardening"
    assert spec.allowed == [
        "internal/federation/**",
        "cmd/agentd/main.go",
        "deploy/compose/",
        "docs/api/openapi.yaml",
    ]
    assert [gate.kind for gate in spec.required_gates] == ["go-test", "compose", "manual"]
    assert spec.required_gates[0] == RequiredGate(text="`go test ./...`", commands=["go test ./..."], kind="go-test")
    assert spec.required_gates[1].commands == [
        "docker compose -f deploy/compose/docker-compose.yml up -d --wait",
        "./scripts/smoke-federation.sh",
        "docker compose -f deploy/compose/docker-compose.yml down -v",
    ]
    assert spec.required_gates[2] == RequiredGate(
        text="Manual: verify the dashboard renders", commands=[], kind="manual"
    )
    assert spec.compose == ComposeGate(
        up="docker compose -f deploy/compose/docker-compose.yml up -d --wait",
        smoke=["./scripts/smoke-federation.sh"],
        down="docker compose -f deploy/compose/docker-compose.yml down -v",
    )


def test_sections_are_keyed_by_lower_cased_heading() -> None:
    spec = parse_track_doc(TRACK_9)

    assert list(spec.sections) == ["goal", "what you are allowed to change", "required gates", "done when"]
    assert spec.sections["goal"] == "Harden the federation service: mTLS between peers, signed cancel requests."
    assert spec.sections["done when"].startswith("All gates are green")


@pytest.mark.parametrize(
    "heading",
    [
        "What you're allowed to change",
        "What you\u2019re allowed to change",
        "WHAT YOU ARE ALLOWED TO CHANGE:",
        "Allowed changes",
        "Allowed paths",
        "Scope",
        "2. Scope",
        "**Scope**",
    ],
)
def test_the_allowed_section_is_found_under_any_usual_heading(heading: str) -> None:
    spec = parse_track_doc(f"# Track 1: x\n## {heading}\n- `app/`\n## Gates\n- `go test ./...`\n")

    assert spec.allowed == ["app/"]
    assert [gate.commands for gate in spec.required_gates] == [["go test ./..."]]


def test_sections_that_say_what_must_not_change_allow_nothing() -> None:
    doc = """\
# Track 2: y
## What you are allowed to change
- `app/`
### Not allowed
- `app/secret.go`
## Out of scope
- `web/`
## What you are not allowed to change
- `infra/`
"""
    assert parse_track_doc(doc).allowed == ["app/"]


def test_subsections_of_the_allowed_section_count() -> None:
    doc = "# T\n## Allowed changes\n### Backend\n- `api/`\n### Frontend\n- `web/src/**`\n## Goal\n`not/this.go`\n"

    assert parse_track_doc(doc).allowed == ["api/", "web/src/**"]


def test_code_that_is_not_a_path_is_ignored_in_the_allowed_section() -> None:
    doc = """\
# T
## Scope
- `go generate ./...` regenerates `internal/gen/`
- the `Handler(ctx)` function, `FOO=1`, `https://example.com/x`
- Go packages: `./internal/federation/...`
- `../outside/`, `/etc/passwd`, `.git/config`
```
`fenced/not/a/path.go`
```
"""
    # `/etc/passwd` is read as the repository-relative `etc/passwd`: it cannot leave the repository.
    assert parse_track_doc(doc).allowed == ["internal/gen/", "internal/federation/", "etc/passwd"]


def test_a_doc_without_headings_or_sections_is_still_a_spec() -> None:
    spec = parse_track_doc("just some text with `a/b.go`\n")

    assert spec == TrackSpec(title=None, allowed=[], required_gates=[], compose=None, sections={})


def test_headings_inside_fenced_code_are_not_sections() -> None:
    doc = "# T\n## Goal\n```sh\n# not a heading\n```\n## Gates\n- `make check`\n"
    spec = parse_track_doc(doc)

    assert list(spec.sections) == ["goal", "gates"]
    assert spec.required_gates == [RequiredGate(text="`make check`", commands=["make check"], kind="script")]


def test_gate_bullets_keep_their_text_and_only_the_commands_in_it() -> None:
    doc = """\
# T
## Gates
- `go test -race ./...` passes, including `internal/federation/`
- `./scripts/check-openapi.sh` against `docs/api/openapi.yaml`
- Lint:
  - `golangci-lint run`
1. Manually run `open http://localhost:3000` and check the page
"""
    gates = parse_track_doc(doc).required_gates

    assert gates == [
        RequiredGate(
            text="`go test -race ./...` passes, including `internal/federation/`",
            commands=["go test -race ./..."],
            kind="go-test",
        ),
        RequiredGate(
            text="`./scripts/check-openapi.sh` against `docs/api/openapi.yaml`",
            commands=["./scripts/check-openapi.sh"],
            kind="script",
        ),
        RequiredGate(text="Lint: - `golangci-lint run`", commands=["golangci-lint run"], kind="script"),
        RequiredGate(
            text="Manually run `open http://localhost:3000` and check the page",
            commands=["open http://localhost:3000"],
            kind="manual",
        ),
    ]
    assert parse_track_doc(doc).compose is None


def test_the_compose_gate_may_span_bullets_and_use_docker_compose_v1() -> None:
    doc = """\
# T
## Required gates
- `docker-compose -f up.yml up -d`
- `curl -sf http://api:8080/health` from the runner container
- `docker-compose exec -T api ./smoke.sh`
- `docker-compose -f up.yml down --volumes`
- `go test ./...`
"""
    spec = parse_track_doc(doc)

    assert spec.compose == ComposeGate(
        up="docker-compose -f up.yml up -d",
        smoke=["curl -sf http://api:8080/health", "docker-compose exec -T api ./smoke.sh"],
        down="docker-compose -f up.yml down --volumes",
    )


def test_no_compose_gate_without_both_up_and_down() -> None:
    doc = "# T\n## Gates\n- `docker compose up -d`\n- `./smoke.sh`\n"

    assert parse_track_doc(doc).compose is None


@pytest.mark.parametrize(
    ("command", "subcommand"),
    [
        ("docker compose up -d --wait", "up"),
        ("docker compose -f up.yml -p down up", "up"),
        ("COMPOSE_PROFILES=x sudo docker compose --file a.yml down -v", "down"),
        ("docker-compose ps", "ps"),
        ("docker run --rm alpine", None),
        ("go test ./...", None),
    ],
)
def test_compose_subcommands_are_read_past_global_options(command: str, subcommand: str | None) -> None:
    assert compose_subcommand(command) == subcommand


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("internal/federation/a/b.go", True),
        ("internal/federation/a.go", True),
        ("internal/federation", False),  # `/**` is what is below the folder, not the folder itself
        ("internal/federationx/a.go", False),
        ("internal/federation.go", False),
        ("cmd/agentd/main.go", True),
        ("cmd/agentd/main.go.orig", False),
        ("cmd/agentd/other.go", False),
        ("deploy/compose/docker-compose.yml", True),
        ("deploy/compose/nested/x.env", True),
        ("deploy/composer/x", False),
        ("deploy/compose", False),  # a file named like the folder is not in it
        ("docs/api/openapi.yaml", True),
        ("docs/api/other.yaml", False),
    ],
)
def test_paths_allowed_by_the_track_9_scope(path: str, expected: bool) -> None:
    assert path_allowed(path, parse_track_doc(TRACK_9).allowed) is expected


@pytest.mark.parametrize(
    ("pattern", "path", "expected"),
    [
        ("*.md", "README.md", True),
        ("*.md", "docs/README.md", False),  # anchored at the root, unlike gitignore
        ("**/*.md", "docs/a/README.md", True),
        ("**/*.md", "README.md", True),
        ("docs/*/index.md", "docs/v2/index.md", True),
        ("docs/*/index.md", "docs/v2/x/index.md", False),
        ("docs/**/index.md", "docs/index.md", True),
        ("docs/**/index.md", "docs/v2/x/index.md", True),
        ("internal/*", "internal/a/b.go", True),  # `internal/a` matches, so all below it does
        ("internal", "internal/a/b.go", True),  # a plain name covers a folder of that name
        ("src/file?.go", "src/file1.go", True),
        ("src/file?.go", "src/file10.go", False),
        ("src/[ab].go", "src/b.go", True),
        ("src/[!ab].go", "src/c.go", True),
        ("src/[!ab].go", "src/a.go", False),
        ("./cmd/", "cmd/x.go", True),
        ("**", "any/thing", True),
        ("a.b", "aXb", False),  # dots are literal
        ("", "anything", False),
    ],
)
def test_pattern_semantics(pattern: str, path: str, expected: bool) -> None:
    assert path_allowed(path, [pattern]) is expected


def test_out_of_scope_lists_each_uncovered_path_once_including_rename_sources() -> None:
    allowed = ["internal/federation/**", "cmd/agentd/main.go"]
    changes = [
        ChangedFile(status="M", path="internal/federation/tls.go"),
        ChangedFile(status="A", path="internal/billing/x.go"),
        ChangedFile(status="R", old_path="pkg/old.go", path="internal/federation/old.go"),
        ChangedFile(status="M", path="internal/billing/x.go"),
    ]

    assert out_of_scope(changes, allowed) == ["internal/billing/x.go", "pkg/old.go"]


def test_a_doc_without_a_scope_puts_nothing_out_of_scope() -> None:
    assert out_of_scope([ChangedFile(status="M", path="anything.go")], []) == []


def test_explicitly_allowed_forbidden_paths_are_offered_as_exceptions() -> None:
    spec = parse_track_doc(TRACK_9)

    assert allowed_forbidden(spec, DEFAULT_RULES) == ["docs/api/openapi.yaml"]


def test_broad_globs_are_not_exceptions_but_narrow_ones_are() -> None:
    rules = Rules(forbidden_prefixes=("docs/api/", "secrets.env"))
    doc = (
        "# T\n## Scope\n"
        "`docs/**`, `docs/api/*.yaml`, `docs/api`, `docs/apis/x.md`, `secrets.env`, `secrets.env.example`\n"
    )

    assert allowed_forbidden(parse_track_doc(doc), rules) == ["docs/api/*.yaml", "docs/api", "secrets.env"]


def test_a_gate_bullet_asking_for_a_smoke_script_keeps_its_place_in_the_compose_sequence() -> None:
    doc = """\
# Track 7: local stack

## Required gates

- `docker compose -f deploy/local/compose.yaml up -d --build`
- Run local smoke script (documented entrypoint)
- `docker compose -f deploy/local/compose.yaml down -v`
"""
    compose = parse_track_doc(doc).compose
    assert compose is not None and compose.smoke == []
    assert [(step.text, step.command) for step in compose.steps] == [
        ("Run local smoke script (documented entrypoint)", None)
    ]
