"""Behaviour of the knob (configs/NEXT_TRACK.json) parser and editor."""

from __future__ import annotations

import difflib
import json

import pytest

from bot.knob import (
    KNOB_PATH,
    KnobError,
    NextTrack,
    advance_knob_text,
    parse_knob,
    safe_repo_path,
    validate_slug,
)

REALISTIC_KNOB = """\
{
  "version": 1,
  "mode": "sequential",
  "plan_version": "v2",
  "next_track": 9,
  "tracks": {
    "1": {"slug": "local-deploy-parity", "doc": "docs/plan/v2/tracks/track-01-local-deploy-parity.md"},
    "9": {"slug": "federation-security-hardening"}
  },
  "notes": "Only a maintainer advances next_track, after the merge."
}
"""


def knob_with(**overrides: object) -> str:
    """The realistic knob as JSON text with some top-level fields replaced."""
    data = json.loads(REALISTIC_KNOB)
    data.update(overrides)
    return json.dumps(data, indent=2)


def refusal(text: str) -> str:
    with pytest.raises(KnobError) as caught:
        parse_knob(text)
    return str(caught.value)


# --- parsing -------------------------------------------------------------------------


def test_parses_realistic_knob() -> None:
    knob = parse_knob(REALISTIC_KNOB)

    assert knob.next_track == 9
    assert knob.plan_version == "v2"
    assert knob.mode == "sequential"
    assert knob.version == 1
    assert knob.track_numbers() == [1, 9]
    first = knob.entry(1)
    assert first is not None
    assert first.doc == "docs/plan/v2/tracks/track-01-local-deploy-parity.md"
    ninth = knob.entry(9)
    assert ninth is not None
    assert ninth.slug == "federation-security-hardening"
    assert ninth.doc is None
    assert knob.entry(2) is None


def test_round_trip_keeps_unknown_fields_at_every_level() -> None:
    data = json.loads(REALISTIC_KNOB)
    data["owner"] = "platform-team"
    data["tracks"]["9"]["risk"] = "high"

    knob = parse_knob(json.dumps(data))
    dumped = knob.model_dump(exclude_unset=True)

    assert dumped == data
    assert NextTrack.model_validate(dumped) == knob


def test_accepts_notes_as_a_list_of_lines_and_version_as_a_string() -> None:
    knob = parse_knob(knob_with(notes=["first", "second"], version="2024-06"))

    assert knob.notes == ["first", "second"]
    assert knob.version == "2024-06"


def test_minimal_knob_needs_only_next_track() -> None:
    knob = parse_knob('{"next_track": 3}')

    assert knob.next_track == 3
    assert knob.plan_version is None
    assert knob.track_numbers() == []


# --- refusals ------------------------------------------------------------------------


def test_refuses_invalid_json_naming_the_line_and_what_to_do() -> None:
    broken = '{\n  "next_track": 9,\n  "mode": "sequential"\n  "notes": "x"\n}\n'

    message = refusal(broken)

    assert "not valid JSON" in message
    assert "line 4" in message
    assert f"Fix {KNOB_PATH} on main" in message


def test_refuses_a_top_level_that_is_not_an_object() -> None:
    assert "must be a JSON object" in refusal("[9]")


def test_refuses_missing_next_track() -> None:
    message = refusal('{"plan_version": "v2"}')

    assert "next_track is missing" in message
    assert f"Fix {KNOB_PATH} on main" in message


@pytest.mark.parametrize(
    ("value", "expected_words"),
    [
        ("9", 'not "9" (write 9 without quotes)'),
        (0, "must be 1 or more, not 0"),
        (-2, "must be 1 or more, not -2"),
        (True, "not true"),
        (9.5, "not 9.5"),
        (None, "not null"),
    ],
)
def test_refuses_next_track_that_is_not_a_positive_whole_number(value: object, expected_words: str) -> None:
    message = refusal(knob_with(next_track=value))

    assert "next_track:" in message
    assert expected_words in message


def test_refuses_bad_slug_naming_the_field_and_the_allowed_form() -> None:
    message = refusal(knob_with(tracks={"9": {"slug": "Bad Slug"}}))

    assert "tracks.9.slug" in message
    assert "'Bad Slug'" in message
    assert "lowercase letters, digits and hyphens" in message
    assert "pydantic" not in message.lower()


def test_refuses_doc_path_that_leaves_the_repository() -> None:
    message = refusal(knob_with(tracks={"9": {"slug": "ok", "doc": "../x"}}))

    assert "tracks.9.doc" in message
    assert "leaves the repository" in message


def test_refuses_plan_version_that_is_not_a_folder_name() -> None:
    message = refusal(knob_with(plan_version="../v2"))

    assert "plan_version" in message
    assert '"../v2"' in message


@pytest.mark.parametrize("key", ["nine", "09", "0", "-1", ""])
def test_refuses_track_keys_that_are_not_track_numbers(key: str) -> None:
    message = refusal(knob_with(tracks={key: {"slug": "ok"}}))

    assert "tracks:" in message
    assert json.dumps(key) in message


def test_reports_bad_track_key_and_bad_slug_of_another_entry_together() -> None:
    message = refusal(knob_with(tracks={"nine": {"slug": "ok"}, "1": {"slug": "Bad Slug"}}))

    assert 'key "nine" is not a track number' in message
    assert "tracks.1.slug" in message


def test_refuses_track_entry_that_is_not_an_object() -> None:
    message = refusal(knob_with(tracks={"9": "federation"}))

    assert "tracks.9: must be an object" in message


def test_reports_every_problem_in_one_message() -> None:
    text = knob_with(
        next_track="9",
        plan_version="../v2",
        tracks={"1": {"slug": "Bad Slug"}, "2": {"slug": "fine", "doc": "/etc/passwd"}},
    )

    with pytest.raises(KnobError) as caught:
        parse_knob(text)

    message = str(caught.value)
    for field in ("next_track", "plan_version", "tracks.1.slug", "tracks.2.doc"):
        assert field in message
    assert len(caught.value.problems) == 4
    assert "\n" not in message


# --- validate_slug / safe_repo_path --------------------------------------------------


def test_validate_slug_accepts_lowercase_hyphenated_slug() -> None:
    assert validate_slug("federation-security-hardening") == "federation-security-hardening"


@pytest.mark.parametrize("slug", ["Bad Slug", "-leading", "under_score", "", "a" * 101, "ok\n"])
def test_validate_slug_refuses_and_names_the_slug(slug: str) -> None:
    with pytest.raises(ValueError, match="is not allowed") as caught:
        validate_slug(slug)

    assert repr(slug) in str(caught.value)


@pytest.mark.parametrize(
    ("path", "normalised"),
    [
        ("./a/b.md", "a/b.md"),
        ("a//b.md", "a/b.md"),
        ("docs/plan/../plan/v2/x.md", "docs/plan/v2/x.md"),
        ("docs/plan/v2/tracks/track-01.md", "docs/plan/v2/tracks/track-01.md"),
    ],
)
def test_safe_repo_path_normalises(path: str, normalised: str) -> None:
    assert safe_repo_path(path) == normalised


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("", "empty"),
        ("/etc/passwd", "absolute"),
        ("C:\\x", "backslashes"),
        ("C:/x", "absolute"),
        ("docs\\x.md", "backslashes"),
        ("a\x00b", "control character"),
        ("../x", "leaves the repository"),
        ("a/../../x", "leaves the repository"),
        (".git/config", ".git"),
        ("docs/.GIT/hooks/x", ".git"),
        (".", "repository root"),
    ],
)
def test_safe_repo_path_refuses_unsafe_paths(path: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason.replace(".", r"\.")):
        safe_repo_path(path)


# --- advance_knob_text ---------------------------------------------------------------

ODDLY_FORMATTED_KNOB = (
    "{\n"
    '\t"version": 1,\n'
    '\t"notes": ["Bump \\"next_track\\": 4 only after merge", "next_track: 4"],\n'
    '\t"tracks": {"4": {"slug": "four", "next_track": 4}},\n'
    '\t"plan_version" :"v2",\n'
    '\t"next_track" :   4 ,\n'
    '\t"mode":"sequential"\n'
    "}"
)


def changed_lines(before: str, after: str) -> list[str]:
    return [
        line
        for line in difflib.unified_diff(before.splitlines(), after.splitlines(), lineterm="", n=0)
        if line.startswith(("-", "+")) and not line.startswith(("---", "+++"))
    ]


def test_advance_changes_exactly_one_line_of_an_oddly_formatted_knob() -> None:
    updated = advance_knob_text(ODDLY_FORMATTED_KNOB, expected=4, new=5)

    assert changed_lines(ODDLY_FORMATTED_KNOB, updated) == [
        '-\t"next_track" :   4 ,',
        '+\t"next_track" :   5 ,',
    ]
    assert parse_knob(updated).next_track == 5
    # The nested "next_track" and the words in notes are untouched.
    assert parse_knob(updated).notes == ['Bump "next_track": 4 only after merge', "next_track: 4"]
    assert json.loads(updated)["tracks"]["4"]["next_track"] == 4
    assert not updated.endswith("\n")


def test_advance_keeps_trailing_newline_and_everything_else() -> None:
    updated = advance_knob_text(REALISTIC_KNOB, expected=9, new=10)

    assert updated == REALISTIC_KNOB.replace('"next_track": 9,', '"next_track": 10,')
    assert updated.endswith("}\n")


def test_advance_refuses_when_someone_else_moved_next_track() -> None:
    with pytest.raises(KnobError, match="next_track is 9, not 8: someone else changed it"):
        advance_knob_text(REALISTIC_KNOB, expected=8, new=9)


def test_advance_refuses_duplicate_top_level_next_track() -> None:
    duplicated = '{"next_track": 3, "next_track": 4}'

    with pytest.raises(KnobError, match="exactly one"):
        advance_knob_text(duplicated, expected=4, new=5)


def test_advance_refuses_a_broken_knob() -> None:
    with pytest.raises(KnobError, match="not valid JSON"):
        advance_knob_text('{"next_track": 4', expected=4, new=5)


@pytest.mark.parametrize("new", [0, True])
def test_advance_refuses_a_new_value_that_is_not_a_track_number(new: int) -> None:
    with pytest.raises(KnobError, match="whole number of 1 or more"):
        advance_knob_text(REALISTIC_KNOB, expected=9, new=new)
