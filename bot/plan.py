"""Finding the doc that describes a track.

This module is pure: all repository access goes through the :class:`RepoFiles`
protocol, so the same resolution runs against GitHub, a local work tree or a test
double.

Repositories name their track docs in several ways, so resolution tries, in order:

1. the knob's ``tracks["<N>"].doc``;
2. ``docs/plan/<plan_version>/tracks/track-<N>-*.md``, then ``track-<NN>-*.md``
   (two-digit zero padding, only for tracks 1-9);
3. a link for track N in ``docs/plan/<plan_version>/tracks/INDEX.md``;
4. the legacy folder ``docs/plan/tracks/`` with the same file-name patterns.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import unquote

from bot.knob import KNOB_PATH, SLUG_MAX_LENGTH, SLUG_RE, NextTrack, safe_repo_path

LEGACY_TRACKS_FOLDER = "docs/plan/tracks"
EN_DASH = "\u2013"

SOURCE_KNOB = "the knob's tracks map"
SOURCE_PLAN_FOLDER = "the plan folder"
SOURCE_INDEX = "the plan folder's INDEX.md"
SOURCE_LEGACY = f"the legacy folder {LEGACY_TRACKS_FOLDER}/"

# "track-<digits>-<anything>.md"; the number is compared as a string so that
# track-1-x.md can never be taken for track 10 or 11.
_TRACK_FILE_RE = re.compile(r"^track-(?P<digits>[0-9]+)-(?P<rest>.+)\.md$")
_MARKDOWN_LINK_RE = re.compile(r"\[[^\]]*\]\(\s*<?(?P<target>[^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_BACKTICK_PATH_RE = re.compile(r"`(?P<target>[^`\s]+\.md)`", re.IGNORECASE)
# The number a line is about: "Track 9", "track #09", or a bare "9" in a table's first cell.
_TABLE_FIRST_CELL_RE = re.compile(r"^(?:track\s*)?#?\s*(?P<number>[0-9]+)$", re.IGNORECASE)
_LIST_ITEM_RE = re.compile(
    r"^\s*(?:[-*+]|[0-9]+[.)])\s+[\[*_`\s]*track\s*#?\s*(?P<number>[0-9]+)(?![0-9])", re.IGNORECASE
)
_EMPHASIS_CHARS = "*_`[] "


class RepoFiles(Protocol):
    """Read-only access to one revision of a repository."""

    def list_dir(self, path: str) -> list[str] | None:
        """Entry names (files and folders) in a repository folder, None if the folder does not exist."""
        ...

    def read_text(self, path: str) -> str | None:
        """The text of a repository file, None if it does not exist."""
        ...


@dataclass(frozen=True)
class TrackDoc:
    """The doc found for a track, and how it was found (``source``, in human words)."""

    number: int
    slug: str
    path: str
    source: str


@dataclass(frozen=True)
class DocNotFound:
    """No doc exists for a track: where we looked and which tracks do exist."""

    number: int
    searched: list[str]
    known_tracks: list[int]

    @property
    def message(self) -> str:
        """One paragraph for a human: the track, where we looked, what exists, what to do."""
        looked = "; ".join(self.searched)
        if not self.known_tracks:
            exists = "No tracks are known (none in the knob's tracks map or the track folders)."
        elif len(self.known_tracks) == 1:
            exists = f"Only track {self.known_tracks[0]} exists."
        else:
            exists = f"Tracks {format_ranges(self.known_tracks)} exist."
        return (
            f"No doc for track {self.number}: looked in {looked}. {exists} "
            f"Add the doc, or ask a maintainer to fix next_track in {KNOB_PATH}."
        )


def format_ranges(numbers: list[int]) -> str:
    """Compress numbers into ranges for humans: ``[1, 2, 3, 5]`` -> ``"1-3, 5"``.

    Ranges use an en dash (U+2013), as in typeset text, not the hyphen shown here.
    """
    ordered = sorted(set(numbers))
    pieces: list[str] = []
    index = 0
    while index < len(ordered):
        run_end = index
        while run_end + 1 < len(ordered) and ordered[run_end + 1] == ordered[run_end] + 1:
            run_end += 1
        if run_end == index:
            pieces.append(str(ordered[index]))
        else:
            pieces.append(f"{ordered[index]}{EN_DASH}{ordered[run_end]}")
        index = run_end + 1
    return ", ".join(pieces)


def slug_from_text(text: str) -> str:
    """Make a valid slug from arbitrary text: lowercase, runs of other characters become ``-``."""
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    slug = slug[:SLUG_MAX_LENGTH].rstrip("-")
    return slug


def _plan_folder(knob: NextTrack) -> str | None:
    return f"docs/plan/{knob.plan_version}/tracks" if knob.plan_version else None


def _number_spellings(number: int) -> list[str]:
    """``track-<N>`` first, then the two-digit padded form when it differs (only for 1-9)."""
    spellings = [str(number)]
    padded = f"{number:02d}"
    if padded not in spellings:
        spellings.append(padded)
    return spellings


def _pattern_description(folder: str, number: int, files: RepoFiles) -> str:
    patterns = [f"track-{spelling}-*.md" for spelling in _number_spellings(number)]
    missing = " (folder does not exist)" if files.list_dir(folder) is None else ""
    return f"{folder}/" + " and ".join(patterns) + missing


def _slug_for(knob: NextTrack, number: int, path: str) -> str:
    entry = knob.entry(number)
    if entry is not None:
        return entry.slug
    name = path.rsplit("/", 1)[-1]
    match = _TRACK_FILE_RE.match(name)
    stem = match.group("rest") if match else name.removesuffix(".md")
    slug = slug_from_text(stem)
    return slug if SLUG_RE.fullmatch(slug) else f"track-{number}"


def _find_in_folder(knob: NextTrack, number: int, folder: str, files: RepoFiles) -> str | None:
    """Return the repo path of ``track-<N>-*.md`` (then ``track-<NN>-*.md``) in ``folder``."""
    names = files.list_dir(folder)
    if not names:
        return None
    entry = knob.entry(number)
    for spelling in _number_spellings(number):
        matches: list[tuple[str, str]] = []
        for name in sorted(names):
            match = _TRACK_FILE_RE.match(name)
            if match and match.group("digits") == spelling:
                matches.append((name, match.group("rest")))
        if not matches:
            continue
        # Several docs for one number: the one matching the knob's slug wins, else the
        # first by name so the choice never depends on listing order.
        for name, rest in matches:
            if entry is not None and rest == entry.slug:
                return f"{folder}/{name}"
        return f"{folder}/{matches[0][0]}"
    return None


def _line_track_number(line: str) -> int | None:
    """The track number a markdown table row or list item is about, if any."""
    stripped = line.strip()
    if stripped.startswith("|"):
        cells = [cell.strip() for cell in stripped.strip("|").split("|")]
        first = cells[0].strip(_EMPHASIS_CHARS) if cells else ""
        # "[9](track-09-x.md)" as the first cell: the link text is the number.
        first = re.sub(r"\]\(.*$", "", first).strip(_EMPHASIS_CHARS)
        match = _TABLE_FIRST_CELL_RE.match(first)
        return int(match.group("number")) if match else None
    match = _LIST_ITEM_RE.match(line)
    return int(match.group("number")) if match else None


def _link_targets(line: str) -> list[str]:
    """Markdown link targets, then backticked paths, that point at ``.md`` files."""
    targets: list[str] = []
    candidates = [m.group("target") for m in _MARKDOWN_LINK_RE.finditer(line)]
    candidates += [m.group("target") for m in _BACKTICK_PATH_RE.finditer(line)]
    for raw in candidates:
        if "://" in raw or raw.lower().startswith("mailto:"):
            continue
        target = unquote(raw.split("#", 1)[0].split("?", 1)[0])
        if target.lower().endswith(".md"):
            targets.append(target)
    return targets


def _resolve_link(folder: str, target: str) -> str | None:
    # A leading "/" means the repository root, as it does when GitHub renders markdown.
    joined = target.lstrip("/") if target.startswith("/") else f"{folder}/{target}"
    try:
        return safe_repo_path(joined)
    except ValueError:
        return None


def _find_in_index(number: int, folder: str, files: RepoFiles) -> tuple[str | None, list[str]]:
    """Look up track ``number`` in ``<folder>/INDEX.md``.

    Accepted forms, one track per line:

    * a table row whose first cell is the number (``| 9 | slug | [doc](track-nine.md) |``,
      also ``| Track 9 | ...`` or ``| **09** | ...``);
    * a list item starting with "Track N" (``- Track 9: [Federation](./federation.md)``,
      ``1. [Track 9 - Federation](federation.md)``, ``* **Track 9**: `federation.md` ``).

    The line must contain a markdown link or a backticked path ending in ``.md``;
    it is resolved relative to the tracks folder (or the repository root if it starts
    with ``/``). Links to other sites and links that leave the repository are ignored.
    Returns the existing doc path, or None plus notes on links that point nowhere.
    """
    text = files.read_text(f"{folder}/INDEX.md")
    notes: list[str] = []
    if text is None:
        return None, ["does not exist"]
    for line in text.splitlines():
        if _line_track_number(line) != number:
            continue
        for target in _link_targets(line):
            path = _resolve_link(folder, target)
            if path is None:
                continue
            if files.read_text(path) is not None:
                return path, notes
            notes.append(f"it links {path}, which does not exist")
    return None, notes


def resolve_track_doc(knob: NextTrack, number: int, files: RepoFiles) -> TrackDoc | DocNotFound:
    """Find the doc for track ``number``, or say exactly where we looked.

    See the module docstring for the order. The slug is the knob's
    ``tracks["<N>"].slug`` when present, otherwise derived from the file name
    (``track-09-federation-security-hardening.md`` -> ``federation-security-hardening``).
    """
    searched: list[str] = []

    def found(path: str, source: str) -> TrackDoc:
        return TrackDoc(number=number, slug=_slug_for(knob, number, path), path=path, source=source)

    entry = knob.entry(number)
    if entry is None:
        searched.append(f'{SOURCE_KNOB} (no entry "{number}")')
    elif entry.doc is None:
        searched.append(f'{SOURCE_KNOB} (entry "{number}" has no doc)')
    elif files.read_text(entry.doc) is not None:
        return found(entry.doc, SOURCE_KNOB)
    else:
        searched.append(f"{SOURCE_KNOB} ({entry.doc}, which does not exist)")

    plan_folder = _plan_folder(knob)
    if plan_folder is None:
        searched.append("the plan folder and its INDEX.md (skipped: the knob has no plan_version)")
    else:
        path = _find_in_folder(knob, number, plan_folder, files)
        if path is not None:
            return found(path, SOURCE_PLAN_FOLDER)
        searched.append(_pattern_description(plan_folder, number, files))
        path, notes = _find_in_index(number, plan_folder, files)
        if path is not None:
            return found(path, SOURCE_INDEX)
        index_note = f" ({'; '.join(notes)})" if notes else ""
        searched.append(f"{plan_folder}/INDEX.md{index_note}")

    path = _find_in_folder(knob, number, LEGACY_TRACKS_FOLDER, files)
    if path is not None:
        return found(path, SOURCE_LEGACY)
    searched.append(_pattern_description(LEGACY_TRACKS_FOLDER, number, files))

    return DocNotFound(number=number, searched=searched, known_tracks=known_tracks(knob, files))


def _numbers_in_folder(folder: str, files: RepoFiles) -> set[int]:
    numbers: set[int] = set()
    for name in files.list_dir(folder) or []:
        match = _TRACK_FILE_RE.match(name)
        if match and int(match.group("digits")) >= 1:
            numbers.add(int(match.group("digits")))
    return numbers


def known_tracks(knob: NextTrack, files: RepoFiles) -> list[int]:
    """Track numbers that exist: the knob's track keys plus numbers in track doc file names."""
    numbers = set(knob.track_numbers())
    plan_folder = _plan_folder(knob)
    if plan_folder is not None:
        numbers |= _numbers_in_folder(plan_folder, files)
    numbers |= _numbers_in_folder(LEGACY_TRACKS_FOLDER, files)
    return sorted(numbers)


SOURCE_TEMPLATE = "the plan's doc pattern"


def _template_path(knob: NextTrack, number: int, template: str) -> str | None:
    """The doc path a plan's pattern names for `number` (a `*` left for the caller), or None without a
    plan_version the pattern needs."""
    if "{plan_version}" in template and not knob.plan_version:
        return None
    return template.format(plan_version=knob.plan_version or "", n=number)


def resolve_plan_doc(knob: NextTrack, number: int, files: RepoFiles, template: str = "") -> TrackDoc | DocNotFound:
    """The doc of item `number` of a plan: the track runner's search when `template` is empty, else the
    path the plan's pattern names (`docs/plan/{plan_version}/phases/phase-{n}.md`; a `*` in the file
    name matches the one file there). The slug is the knob's, else the file's name."""
    if not template:
        return resolve_track_doc(knob, number, files)
    entry = knob.entry(number)
    if entry is not None and entry.doc is not None and files.read_text(entry.doc) is not None:
        return TrackDoc(number=number, slug=entry.slug, path=entry.doc, source=SOURCE_KNOB)
    pattern = _template_path(knob, number, template)
    if pattern is None:
        return DocNotFound(number, [f"{template} (skipped: the knob has no plan_version)"], [])
    folder, _, name = pattern.rpartition("/")
    if "*" in name:
        regex = re.compile(re.escape(name).replace(r"\*", ".*") + r"\Z")
        matches = sorted(n for n in files.list_dir(folder) or [] if regex.match(n))
        path = f"{folder}/{matches[0]}" if matches else None
    else:
        path = pattern if files.read_text(pattern) is not None else None
    if path is None:
        return DocNotFound(number, [pattern], known_plan_numbers(knob, files, template))
    stem = path.rsplit("/", 1)[-1].removesuffix(".md")
    slug = entry.slug if entry is not None else slug_from_text(stem) or f"item-{number}"
    return TrackDoc(number=number, slug=slug, path=path, source=SOURCE_TEMPLATE)


def known_plan_numbers(knob: NextTrack, files: RepoFiles, template: str = "") -> list[int]:
    """The numbers of a plan that have a doc (the track runner's search when `template` is empty)."""
    if not template:
        return known_tracks(knob, files)
    pattern = _template_path(knob, 0, template.replace("{n}", "\x00"))
    if pattern is None:
        return sorted(knob.track_numbers())
    folder, _, name = pattern.rpartition("/")
    parts = [re.escape(piece).replace(r"\*", ".*") for piece in name.split("\x00")]
    regex = re.compile("([1-9][0-9]*)".join(parts) + r"\Z")
    numbers = set(knob.track_numbers())
    for entry in files.list_dir(folder) or []:
        match = regex.match(entry)
        if match and match.groups():
            numbers.add(int(match.group(1)))
    return sorted(numbers)
