"""Plan kinds: the track runner and the phase runner as presets, and a repository's own in `.trackbot.toml`."""

from __future__ import annotations

import pytest
from test_plan import FolderOfFiles

from bot.knob import KnobError, advance_knob_text, parse_knob
from bot.plan import DocNotFound, TrackDoc, known_plan_numbers, resolve_plan_doc
from bot.repo_rules import RepoRulesError, parse_repo_rules

PHASE_KNOB = '{\n  "plan_version": "v1.02",\n  "next": 17\n}\n'
PHASES = "docs/plan/v1.02/phases"


def test_the_phases_preset_names_its_knob_docs_branch_commit_pr_and_advance() -> None:
    rules = parse_repo_rules(None).for_plan("phases").rules
    assert (rules.knob_path, rules.knob_field) == ("configs/NEXT_PHASE.json", "next")
    assert rules.doc_template == "docs/plan/{plan_version}/phases/phase-{n}.md"
    assert rules.branch(17, "phase-17") == "phase-17"
    assert rules.commit_message(17, "phase-17") == "feat(phase17): implement phase 17"
    assert rules.pr_title(17, "phase-17") == "Phase 17"
    assert rules.advance_message(16, 17) == "Update next phase value from 16 to 17"
    # The same guardrails, and the other runner's knob is forbidden to the agent too.
    assert "docs/api/" in rules.forbidden_prefixes and ".trackbot.toml" in rules.forbidden_prefixes
    assert "configs/NEXT_TRACK.json" in rules.forbidden_prefixes


def test_the_phase_knob_is_read_and_advanced_by_its_own_member() -> None:
    assert parse_knob(PHASE_KNOB, "configs/NEXT_PHASE.json", "next").next_track == 17
    assert advance_knob_text(PHASE_KNOB, 17, 18, "configs/NEXT_PHASE.json", "next") == PHASE_KNOB.replace("17", "18")
    with pytest.raises(KnobError, match="next is missing; it must name the next number"):
        parse_knob('{"next_track": 3}', "configs/NEXT_PHASE.json", "next")


def test_a_phase_doc_is_found_by_the_pattern_and_the_known_phases_are_listed() -> None:
    knob = parse_knob(PHASE_KNOB, field="next")
    files = FolderOfFiles({f"{PHASES}/phase-16.md": "# 16", f"{PHASES}/phase-17.md": "# 17"})
    template = "docs/plan/{plan_version}/phases/phase-{n}.md"
    assert resolve_plan_doc(knob, 17, files, template) == TrackDoc(
        number=17, slug="phase-17", path=f"{PHASES}/phase-17.md", source="the plan's doc pattern"
    )
    missing = resolve_plan_doc(knob, 18, files, template)
    assert isinstance(missing, DocNotFound) and missing.searched == [f"{PHASES}/phase-18.md"]
    assert missing.known_tracks == [16, 17]
    assert known_plan_numbers(knob, files, template) == [16, 17]


def test_a_repository_defines_its_own_plan_kind_from_a_preset() -> None:
    text = """\
[plans.milestones]
preset = "phases"
knob = "configs/NEXT_MILESTONE.json"
field = "milestone"
docs = "docs/milestones/m-{n}-*.md"
branch = "milestone-{n}"
commit = "feat(m{n}): milestone {n}"
pr_title = "Milestone {n}"
advance_message = "Update next milestone from {old} to {new}"
noun = "Milestone"
"""
    repo = parse_repo_rules(text)
    assert repo.plan_names() == ["tracks", "phases", "milestones"]
    rules = repo.for_plan("milestones").rules
    assert (rules.knob_path, rules.knob_field, rules.noun) == ("configs/NEXT_MILESTONE.json", "milestone", "Milestone")
    assert rules.pr_title(3, "m-3-x") == "Milestone 3" and rules.branch(3, "m-3-x") == "milestone-3"
    files = FolderOfFiles({"docs/milestones/m-3-search.md": "# 3"})
    knob = parse_knob('{"milestone": 3}', field="milestone")
    found = resolve_plan_doc(knob, 3, files, rules.doc_template)
    assert isinstance(found, TrackDoc) and found.path == "docs/milestones/m-3-search.md" and found.slug == "m-3-search"


def test_a_bad_plan_table_is_refused_with_its_line_and_an_unknown_plan_names_the_plans() -> None:
    text = '[plans.phases]\npreset = "waves"\n\n[plans.other]\nknobs = "x.json"\n'
    with pytest.raises(RepoRulesError) as refused:
        parse_repo_rules(text)
    message = str(refused.value)
    assert "plans.phases.preset must be one of tracks, phases, not 'waves'" in message
    assert 'line 5: plans.other.knobs is not a setting (did you mean "knob"?)' in message
    with pytest.raises(RepoRulesError, match="there is no plan `waves`; this repository's plans are tracks, phases"):
        parse_repo_rules(None).for_plan("waves")
