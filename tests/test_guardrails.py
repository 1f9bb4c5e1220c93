"""Guardrails on changed paths (pure)."""

from __future__ import annotations

from bot.guardrails import check_changes
from bot.rules import DEFAULT_RULES
from bot.runs import ChangedFile


def test_changes_under_forbidden_folders_and_the_knob_are_violations() -> None:
    changes = [
        ChangedFile(status="M", path="docs/api/openapi.yaml"),
        ChangedFile(status="A", path="docs/product/agentos-prs/0001.md"),
        ChangedFile(status="M", path="configs/NEXT_TRACK.json"),
        ChangedFile(status="A", path="app/main.go"),
    ]
    found = {v.path for v in check_changes(changes, DEFAULT_RULES)}
    assert found == {"docs/api/openapi.yaml", "docs/product/agentos-prs/0001.md", "configs/NEXT_TRACK.json"}


def test_a_rename_out_of_a_forbidden_folder_is_a_violation() -> None:
    changes = [ChangedFile(status="R", old_path="docs/api/spec.yaml", path="app/spec.yaml")]
    assert [v.path for v in check_changes(changes, DEFAULT_RULES)] == ["docs/api/spec.yaml"]


def test_similar_names_outside_forbidden_folders_are_allowed() -> None:
    changes = [ChangedFile(status="A", path="docs/api-notes.md"), ChangedFile(status="A", path="docs/apis/x.md")]
    assert check_changes(changes, DEFAULT_RULES) == []


def test_an_exact_file_entry_forbids_only_that_file() -> None:
    from dataclasses import replace

    rules = replace(DEFAULT_RULES, forbidden_prefixes=("docs/api/", "secrets.env", ".trackbot.toml"))
    changes = [
        ChangedFile(status="M", path="secrets.env"),
        ChangedFile(status="A", path="secrets.env.example"),
        ChangedFile(status="A", path="secrets.envelope/x.txt"),
        ChangedFile(status="A", path=".trackbot.toml.bak"),
        ChangedFile(status="M", path=".trackbot.toml"),
        ChangedFile(status="A", path="docs/api"),
    ]
    assert [v.path for v in check_changes(changes, rules)] == ["secrets.env", ".trackbot.toml", "docs/api"]
