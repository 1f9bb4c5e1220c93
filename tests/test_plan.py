"""Behaviour of track doc resolution (bot.plan)."""

from __future__ import annotations

from typing import Any

import pytest

from bot.knob import NextTrack, parse_knob
from bot.plan import (
    EN_DASH,
    DocNotFound,
    TrackDoc,
    format_ranges,
    known_tracks,
    resolve_track_doc,
    slug_from_text,
)

PLAN = "docs/plan/v2/tracks"
LEGACY = "docs/plan/tracks"


class FolderOfFiles:
    """A repository as a dict of ``{path: text}``; folders exist when a file is under them."""

    def __init__(self, files: dict[str, str]) -> None:
        self.files = files

    def list_dir(self, path: str) -> list[str] | None:
        prefix = path.rstrip("/") + "/"
        names = {p[len(prefix) :].split("/", 1)[0] for p in self.files if p.startswith(prefix)}
        return sorted(names) if names else None

    def read_text(self, path: str) -> str | None:
        return self.files.get(path)


def knob(next_track: int = 9, plan_version: str | None = "v2", tracks: dict[str, Any] | None = None) -> NextTrack:
    return NextTrack(next_track=next_track, plan_version=plan_version, tracks=tracks or {})


def docs(*paths: str) -> FolderOfFiles:
    return FolderOfFiles({path: f"# {path}\n" for path in paths})


def resolved(result: TrackDoc | DocNotFound) -> TrackDoc:
    assert isinstance(result, TrackDoc), getattr(result, "message", result)
    return result


def test_uses_the_doc_named_in_the_knob() -> None:
    the_knob = knob(tracks={"9": {"slug": "federation-security-hardening", "doc": "docs/security/fed.md"}})
    files = docs("docs/security/fed.md", f"{PLAN}/track-09-something-else.md")

    doc = resolved(resolve_track_doc(the_knob, 9, files))

    assert doc == TrackDoc(
        number=9,
        slug="federation-security-hardening",
        path="docs/security/fed.md",
        source="the knob's tracks map",
    )


def test_knob_doc_that_does_not_exist_falls_through_to_the_plan_folder() -> None:
    the_knob = knob(tracks={"9": {"slug": "federation-security-hardening", "doc": "docs/gone.md"}})
    files = docs(f"{PLAN}/track-09-federation-security-hardening.md")

    doc = resolved(resolve_track_doc(the_knob, 9, files))

    assert doc.path == f"{PLAN}/track-09-federation-security-hardening.md"
    assert doc.source == "the plan folder"


def test_resolves_unpadded_doc_in_plan_folder_and_derives_slug_from_its_name() -> None:
    files = docs(f"{PLAN}/track-9-federation-security-hardening.md")

    doc = resolved(resolve_track_doc(knob(), 9, files))

    assert doc.path == f"{PLAN}/track-9-federation-security-hardening.md"
    assert doc.slug == "federation-security-hardening"
    assert doc.source == "the plan folder"


def test_resolves_zero_padded_doc_in_plan_folder() -> None:
    files = docs(f"{PLAN}/track-01-local-deploy-parity.md", f"{PLAN}/track-02-other.md")

    doc = resolved(resolve_track_doc(knob(next_track=1), 1, files))

    assert doc.path == f"{PLAN}/track-01-local-deploy-parity.md"
    assert doc.slug == "local-deploy-parity"


def test_slug_comes_from_the_knob_when_it_has_an_entry() -> None:
    the_knob = knob(tracks={"9": {"slug": "from-the-knob"}})
    files = docs(f"{PLAN}/track-09-from-the-file.md")

    assert resolved(resolve_track_doc(the_knob, 9, files)).slug == "from-the-knob"


def test_does_not_take_track_10_or_11_docs_for_track_1() -> None:
    files = docs(f"{PLAN}/track-10-ten.md", f"{PLAN}/track-11-eleven.md", f"{PLAN}/track-1-one.md")

    assert resolved(resolve_track_doc(knob(), 1, files)).path == f"{PLAN}/track-1-one.md"
    assert resolved(resolve_track_doc(knob(), 10, files)).path == f"{PLAN}/track-10-ten.md"


def test_track_1_is_not_found_when_only_track_10_and_11_exist() -> None:
    files = docs(f"{PLAN}/track-10-ten.md", f"{PLAN}/track-11-eleven.md")

    result = resolve_track_doc(knob(), 1, files)

    assert isinstance(result, DocNotFound)
    assert result.known_tracks == [10, 11]


def test_prefers_the_doc_whose_name_matches_the_knob_slug_when_several_match() -> None:
    the_knob = knob(tracks={"9": {"slug": "the-right-one"}})
    files = docs(f"{PLAN}/track-09-a-draft.md", f"{PLAN}/track-09-the-right-one.md")

    assert resolved(resolve_track_doc(the_knob, 9, files)).path == f"{PLAN}/track-09-the-right-one.md"


def test_picks_first_by_name_when_several_match_and_the_knob_has_no_slug() -> None:
    files = docs(f"{PLAN}/track-09-zeta.md", f"{PLAN}/track-09-alpha.md")

    assert resolved(resolve_track_doc(knob(), 9, files)).path == f"{PLAN}/track-09-alpha.md"


def test_resolves_index_table_row_relative_to_the_tracks_folder() -> None:
    index = (
        "# Tracks\n\n| # | Slug | Doc |\n|---|------|-----|\n"
        "| 8 | other | [doc](track-eight.md) |\n"
        "| 9 | federation-security-hardening | [doc](track-nine.md) |\n"
    )
    files = docs(f"{PLAN}/track-nine.md", f"{PLAN}/track-eight.md")
    files.files[f"{PLAN}/INDEX.md"] = index

    doc = resolved(resolve_track_doc(knob(), 9, files))

    assert doc.path == f"{PLAN}/track-nine.md"
    assert doc.source == "the plan folder's INDEX.md"
    assert doc.slug == "track-nine"


def test_resolves_index_list_item_with_dot_slash_link() -> None:
    index = "- Track 90: [Other](./other.md)\n- Track 9: [Federation hardening](./federation.md)\n"
    files = FolderOfFiles({f"{PLAN}/INDEX.md": index, f"{PLAN}/federation.md": "#", f"{PLAN}/other.md": "#"})

    doc = resolved(resolve_track_doc(knob(tracks={"9": {"slug": "fed"}}), 9, files))

    assert doc.path == f"{PLAN}/federation.md"
    assert doc.slug == "fed"


def test_index_link_up_a_folder_resolves_inside_the_repository() -> None:
    index = "* **Track 9** - [Federation](../shared/federation.md)\n"
    files = FolderOfFiles({f"{PLAN}/INDEX.md": index, "docs/plan/v2/shared/federation.md": "#"})

    assert resolved(resolve_track_doc(knob(), 9, files)).path == "docs/plan/v2/shared/federation.md"


def test_index_ignores_links_that_leave_the_repository_or_the_site() -> None:
    index = "| 9 | x | [doc](../../../../../etc/passwd.md) [web](https://example.com/nine.md) |\n"
    files = FolderOfFiles({f"{PLAN}/INDEX.md": index, "etc/passwd.md": "#", f"{PLAN}/track-01-a.md": "#"})

    assert isinstance(resolve_track_doc(knob(), 9, files), DocNotFound)


def test_index_link_to_a_missing_file_is_reported() -> None:
    files = FolderOfFiles({f"{PLAN}/INDEX.md": "| 9 | x | [doc](nine.md) |\n"})

    result = resolve_track_doc(knob(), 9, files)

    assert isinstance(result, DocNotFound)
    assert f"it links {PLAN}/nine.md, which does not exist" in result.message


def test_resolves_legacy_folder_when_the_plan_folder_has_nothing() -> None:
    files = docs(f"{LEGACY}/track-03-old-style.md")

    doc = resolved(resolve_track_doc(knob(), 3, files))

    assert doc.path == f"{LEGACY}/track-03-old-style.md"
    assert doc.source == "the legacy folder docs/plan/tracks/"


def test_without_plan_version_only_the_knob_and_legacy_folder_are_searched() -> None:
    files = docs(f"{PLAN}/track-09-ignored.md", f"{LEGACY}/track-9-legacy.md")

    doc = resolved(resolve_track_doc(knob(plan_version=None), 9, files))
    missing = resolve_track_doc(knob(plan_version=None), 4, files)

    assert doc.path == f"{LEGACY}/track-9-legacy.md"
    assert isinstance(missing, DocNotFound)
    assert "skipped: the knob has no plan_version" in missing.message


def test_nothing_found_says_where_it_looked_which_tracks_exist_and_what_to_do() -> None:
    the_knob = knob(next_track=10, tracks={"1": {"slug": "one", "doc": f"{PLAN}/track-01-one.md"}})
    files = docs(*(f"{PLAN}/track-{n:02d}-t{n}.md" for n in range(1, 10)))

    result = resolve_track_doc(the_knob, 10, files)

    assert isinstance(result, DocNotFound)
    assert result.number == 10
    assert result.known_tracks == list(range(1, 10))
    message = result.message
    assert message.startswith('No doc for track 10: looked in the knob\'s tracks map (no entry "10")')
    assert f"{PLAN}/track-10-*.md" in message
    assert f"{PLAN}/INDEX.md (does not exist)" in message
    assert f"{LEGACY}/track-10-*.md (folder does not exist)" in message
    assert f"Tracks 1{EN_DASH}9 exist." in message
    assert "ask a maintainer to fix next_track in configs/NEXT_TRACK.json" in message


def test_not_found_mentions_both_spellings_for_single_digit_tracks() -> None:
    result = resolve_track_doc(knob(), 4, docs(f"{PLAN}/track-01-a.md"))

    assert isinstance(result, DocNotFound)
    assert f"{PLAN}/track-4-*.md and track-04-*.md" in result.message
    assert "Only track 1 exists." in result.message


def test_not_found_when_the_knob_doc_is_missing_names_that_doc() -> None:
    the_knob = knob(tracks={"9": {"slug": "nine", "doc": "docs/gone.md"}})

    result = resolve_track_doc(the_knob, 9, docs())

    assert isinstance(result, DocNotFound)
    assert "the knob's tracks map (docs/gone.md, which does not exist)" in result.message
    assert "Only track 9 exists." in result.message  # the knob names track 9


def test_not_found_in_an_empty_repository_says_no_tracks_are_known() -> None:
    result = resolve_track_doc(knob(), 1, docs("README.md"))

    assert isinstance(result, DocNotFound)
    assert "No tracks are known" in result.message


def test_known_tracks_unites_knob_plan_folder_and_legacy_folder() -> None:
    the_knob = parse_knob('{"next_track": 1, "plan_version": "v2", "tracks": {"12": {"slug": "twelve"}}}')
    files = docs(f"{PLAN}/track-01-a.md", f"{PLAN}/track-2-b.md", f"{PLAN}/INDEX.md", f"{LEGACY}/track-5-x.md")

    assert known_tracks(the_knob, files) == [1, 2, 5, 12]


@pytest.mark.parametrize(
    ("numbers", "text"),
    [
        ([1, 2, 3, 4, 5, 6, 7, 8, 9], f"1{EN_DASH}9"),
        ([5, 1, 2, 3], f"1{EN_DASH}3, 5"),
        ([7], "7"),
        ([1, 3, 4, 9, 10, 11], f"1, 3{EN_DASH}4, 9{EN_DASH}11"),
        ([], ""),
    ],
)
def test_format_ranges_compresses_runs(numbers: list[int], text: str) -> None:
    assert format_ranges(numbers) == text


@pytest.mark.parametrize(
    ("text", "slug"),
    [("Federation Hardening!", "federation-hardening"), ("__x__Y__", "x-y"), ("ok-slug", "ok-slug")],
)
def test_slug_from_text_produces_valid_slugs(text: str, slug: str) -> None:
    assert slug_from_text(text) == slug
