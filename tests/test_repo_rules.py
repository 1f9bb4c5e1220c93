"""A repository's `.trackbot.toml`: overrides of the procedure's rules, and refusals that say what to change."""

from __future__ import annotations

import pytest

from bot.invariants import DEFAULT_INVARIANTS, Invariant
from bot.repo_rules import RepoRules, RepoRulesError, parse_repo_rules
from bot.rules import DEFAULT_RULES

FULL = """\
[guardrails]
forbidden = ["docs/api/", "docs/product/agentos-prs/", "secrets/"]
knob = "configs/NEXT_TRACK.json"

[names]
branch = "track-{n}-{slug}"
commit = "chore(track{n}): {slug}"
pr_title = "Track {n}: {slug}"

[gates]
on_failure = "stop"
go_test = "go test -race ./..."
timeout_s = 900

[gates.timeouts]
go_test = 1200

[[invariants]]
name = "no-sleep-in-tests"
paths = ["**/*_test.go"]
pattern = "time\\\\.Sleep\\\\("
message = "tests must not sleep"
"""


def _error(text: str) -> str:
    with pytest.raises(RepoRulesError) as caught:
        parse_repo_rules(text)
    return str(caught.value)


def test_no_file_means_the_procedures_defaults_and_the_file_itself_is_forbidden() -> None:
    rules = parse_repo_rules(None)

    assert rules.rules.forbidden_prefixes == (*DEFAULT_RULES.forbidden_prefixes, ".trackbot.toml")
    assert rules.rules.branch(9, "x") == "track-9-x"
    assert rules.gate_commands == {}
    assert rules.gate_timeouts == {}
    assert rules.on_gate_failure == "draft"
    assert rules.invariants == DEFAULT_INVARIANTS
    assert parse_repo_rules("") == rules


def test_a_full_file_overrides_every_rule_it_names() -> None:
    rules = parse_repo_rules(FULL)

    assert rules.rules.forbidden_prefixes == ("docs/api/", "docs/product/agentos-prs/", "secrets/", ".trackbot.toml")
    assert rules.rules.knob_path == "configs/NEXT_TRACK.json"
    assert rules.gate_commands == {"go_test": "go test -race ./..."}
    assert rules.gate_timeouts == {"default": 900, "go_test": 1200}
    assert rules.gate_timeout("go_test", 60) == 1200
    assert rules.gate_timeout("script", 60) == 900
    assert rules.on_gate_failure == "stop"
    assert rules.invariants == [
        *DEFAULT_INVARIANTS,
        Invariant(
            name="no-sleep-in-tests", paths=["**/*_test.go"], pattern=r"time\.Sleep\(", message="tests must not sleep"
        ),
    ]


def test_custom_names_shape_branches_commits_and_titles() -> None:
    rules = parse_repo_rules(
        '[names]\nbranch = "agent/t{n}/{slug}"\ncommit = "track {n}"\npr_title = "[T{n}] {slug}"\n'
    )

    assert rules.rules.branch(9, "fed") == "agent/t9/fed"
    assert rules.rules.commit_message(9, "fed") == "track 9"
    assert rules.rules.pr_title(9, "fed") == "[T9] fed"


def test_replacing_the_default_invariants_keeps_only_the_repositorys_own() -> None:
    text = (
        "replace_default_invariants = true\n"
        '[[invariants]]\nname = "x"\npaths = ["**"]\npattern = "TODO"\nmessage = "no TODOs"\n'
    )

    assert [inv.name for inv in parse_repo_rules(text).invariants] == ["x"]


def test_unset_gate_timeouts_fall_back_to_the_workers_setting() -> None:
    assert RepoRules().gate_timeout("go_test", 900) == 900


def test_invalid_toml_names_its_line_and_column() -> None:
    message = _error('[gates]\non_failure = "draft"\ngo_test = go test\n')

    assert message.startswith(".trackbot.toml cannot be read: it is not valid TOML:")
    assert "line 3" in message
    assert message.endswith("Fix .trackbot.toml on main, then try again.")


def test_unknown_tables_and_keys_are_named_with_their_line_and_a_suggestion() -> None:
    message = _error('[guardrail]\nforbidden = ["x/"]\n\n[names]\nbranches = "t-{n}-{slug}"\n')

    assert 'line 1: unknown table guardrail (did you mean "guardrails"?)' in message
    assert 'line 5: names.branches is not a setting (did you mean "branch"?)' in message


def test_every_problem_is_reported_at_once() -> None:
    with pytest.raises(RepoRulesError) as caught:
        parse_repo_rules('[gates]\non_failure = "abort"\ntimeout_s = 0\n[names]\ncommit = "chore: {slug}"\n')

    assert caught.value.problems == [
        'line 2: gates.on_failure must be "draft" or "stop", not \'abort\'',
        "line 3: gates.timeout_s must be a whole number of seconds from 1 to 86400 (e.g. 900), not 0",
        'line 5: names.commit must contain {n} (e.g. "chore(track{n}): {slug}")',
    ]


@pytest.mark.parametrize(
    ("branch", "complaint"),
    [
        ("track-{n}", "names.branch must contain {slug}"),
        ("track {n} {slug}", "which contains ' '"),
        ("track..{n}-{slug}", 'contains "..", "@{" or "//"'),
        ("track~{n}:{slug}", "contains :, ~"),
        ("-{n}-{slug}", 'starts with "-" or "/"'),
        ("track-{num}-{slug}", "names.branch uses {num}; only {n}, {slug} are available"),
        ("track-{n-{slug}", "is not a valid template"),
    ],
)
def test_branch_templates_must_give_names_git_accepts(branch: str, complaint: str) -> None:
    assert complaint in _error(f'[names]\nbranch = "{branch}"\n')


@pytest.mark.parametrize(
    ("entry", "complaint"),
    [
        ("../outside/", "leaves the repository"),
        ("/etc/", "is absolute"),
        ("docs/*/", "is a glob"),
        ("./docs/api/", 'must be written "docs/api/"'),
        (".git/", "goes through a .git folder"),
    ],
)
def test_forbidden_entries_must_be_safe_relative_folders_or_files(entry: str, complaint: str) -> None:
    message = _error(f'[guardrails]\nforbidden = ["{entry}"]\n')

    assert "line 2: guardrails.forbidden" in message
    assert complaint in message


def test_invariants_must_be_complete_and_compile() -> None:
    text = """\
[[invariants]]
name = "broken"
paths = ["**/*.go"]
pattern = "time.Sleep("
message = "no"

[[invariants]]
name = "half"
paths = ["x"]

[[invariants]]
name = "ci-docker-network"
paths = []
pattern = "x"
message = "m"
severity = "high"
"""
    with pytest.raises(RepoRulesError) as caught:
        parse_repo_rules(text)
    problems = caught.value.problems

    assert problems[0].startswith('line 4: invariant "broken": pattern is not a valid regular expression')
    assert (
        'line 7: invariant "half": pattern and message are missing '
        "(each [[invariants]] needs name, paths, pattern and message)"
    ) in problems
    assert 'line 16: invariant "ci-docker-network": unknown key severity' in problems
    assert any('the name "ci-docker-network" is already used' in p for p in problems)
    assert any('paths must be a non-empty list of patterns, like ["**/*_test.go"]' in p for p in problems)


def test_gate_commands_timeouts_and_typos() -> None:
    message = _error(
        '[gates]\non_falure = "stop"\nlint = 42\n[gates.timeouts]\nlnt = 30\ngo_test = -1\nscript = true\n'
    )

    assert 'line 2: gates.on_falure is not a setting (did you mean "on_failure"?)' in message
    assert "line 3: gates.lint must be the command to run" in message
    assert "line 5: gates.timeouts.lnt names no gate; use one of default, go_test, script, compose" in message
    assert "line 6: gates.timeouts.go_test must be a whole number of seconds" in message
    assert "line 7: gates.timeouts.script must be a whole number of seconds" in message


def test_a_top_level_key_written_after_a_table_is_explained() -> None:
    message = _error('[gates]\ngo_test = "go test ./..."\nreplace_default_invariants = true\n')

    assert "replace_default_invariants belongs at the top of the file, before the first [table]" in message


def test_custom_gates_may_have_their_own_timeouts() -> None:
    rules = parse_repo_rules('[gates]\nlint = "make lint"\n[gates.timeouts]\nlint = 60\ndefault = 300\n')

    assert rules.gate_commands == {"lint": "make lint"}
    assert rules.gate_timeouts == {"lint": 60, "default": 300}


def test_the_knob_must_be_a_safe_file_path() -> None:
    assert 'guardrails.knob must be a file path written "configs/knob.json"' in _error(
        '[guardrails]\nknob = "./configs/knob.json"\n'
    )
    assert "guardrails.knob is not usable" in _error('[guardrails]\nknob = "../knob.json"\n')
