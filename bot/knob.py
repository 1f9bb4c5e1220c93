"""The "knob": ``configs/NEXT_TRACK.json``, which names the track the bot works on next.

This module is pure: it parses and rewrites text handed to it and never touches the
filesystem or the network. Callers fetch the file (from GitHub or a work tree) and pass
its text in.

Real repositories write the knob by hand, so the model keeps every field it does not
know about (``extra="allow"``) and every refusal is reported as one human sentence via
:class:`KnobError`, never as a pydantic dump.
"""

from __future__ import annotations

import json
import re
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, ValidationError

from bot.errors import ReadableError

KNOB_PATH = "configs/NEXT_TRACK.json"

SLUG_MAX_LENGTH = 100
SLUG_RE = re.compile(r"^[a-z0-9][a-z0-9-]*$")
# plan_version becomes a folder name (docs/plan/<plan_version>/tracks), so it must not
# be able to climb out of docs/plan/ or hide as a dot-folder.
PLAN_VERSION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
PLAN_VERSION_MAX_LENGTH = 64
# Keys of the tracks map are looked up as str(number), so "09" or " 9" would silently
# never match; only the canonical spelling is accepted.
TRACK_KEY_RE = re.compile(r"^[1-9][0-9]*$")

_WINDOWS_DRIVE_RE = re.compile(r"^[A-Za-z]:")


class KnobError(ReadableError):
    """The knob cannot be used. ``str()`` is one paragraph for a human: what is wrong and what to do."""


def validate_slug(slug: str) -> str:
    """Return ``slug`` unchanged if it is a valid track slug, else raise ``ValueError`` naming it."""
    if not isinstance(slug, str):
        raise ValueError(f'slug must be a string like "federation-security-hardening", not {slug!r}')
    allowed = (
        "lowercase letters, digits and hyphens, starting with a letter or digit, "
        f'at most {SLUG_MAX_LENGTH} characters (e.g. "federation-security-hardening")'
    )
    if len(slug) > SLUG_MAX_LENGTH or not SLUG_RE.fullmatch(slug):
        raise ValueError(f"slug {slug!r} is not allowed: use {allowed}")
    return slug


def safe_repo_path(path: str) -> str:
    """Normalise ``path`` to a posix path relative to the repository root.

    ``./a/b.md`` becomes ``a/b.md`` and ``a/../b.md`` becomes ``b.md``. Raises
    ``ValueError`` for anything that is empty, absolute (``/x``, ``C:\\x``), uses
    backslashes, contains NUL or control characters, climbs out of the repository
    with ``..``, or goes through a ``.git`` folder.
    """
    if not isinstance(path, str):
        raise ValueError(f"path must be a string, not {path!r}")
    if not path.strip():
        raise ValueError("path is empty")
    if any(ord(ch) < 0x20 or ch == "\x7f" for ch in path):
        raise ValueError(f"path {path!r} contains a control character")
    if "\\" in path:
        raise ValueError(f"path {path!r} uses backslashes; write it with forward slashes")
    if path.startswith("/") or _WINDOWS_DRIVE_RE.match(path):
        raise ValueError(f"path {path!r} is absolute; write it relative to the repository root")
    parts: list[str] = []
    for component in path.split("/"):
        if component in ("", "."):
            continue
        if component == "..":
            if not parts:
                raise ValueError(f"path {path!r} leaves the repository")
            parts.pop()
            continue
        # Case-insensitive because .GIT is the git folder on case-insensitive filesystems.
        if component.lower() == ".git":
            raise ValueError(f"path {path!r} goes through a .git folder")
        parts.append(component)
    if not parts:
        raise ValueError(f"path {path!r} names the repository root, not a file")
    return "/".join(parts)


def _check_slug(value: Any) -> str:
    return validate_slug(value)


def _check_doc(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        example = "docs/plan/v2/tracks/track-09-x.md"
        raise ValueError(f"must be a repository path string like {json.dumps(example)}, not {value!r}")
    return safe_repo_path(value)


def _check_next_track(value: Any) -> int:
    # bool is a subclass of int in Python; `true` in JSON must not mean track 1.
    if isinstance(value, bool) or not isinstance(value, int):
        hint = ""
        if isinstance(value, str) and value.strip().isdigit():
            hint = f" (write {value.strip()} without quotes)"
        raise ValueError(f"must be a whole number like 9, not {json.dumps(value)}{hint}")
    if value < 1:
        raise ValueError(f"must be 1 or more, not {value}")
    return value


def _check_plan_version(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > PLAN_VERSION_MAX_LENGTH or not PLAN_VERSION_RE.fullmatch(value):
        raise ValueError(
            f"{json.dumps(value)} is not a usable folder name; use letters, digits, '.', '_' or '-' "
            'starting with a letter or digit (e.g. "v2")'
        )
    return value


def _check_version(value: Any) -> int | str | None:
    if value is None or isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    raise ValueError(f"must be a number or a string, not {json.dumps(value)}")


def _check_mode(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise ValueError(f'must be a string like "sequential", not {json.dumps(value)}')


def _check_notes(value: Any) -> str | list[str] | None:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return value
    raise ValueError("must be a string or a list of strings")


def _check_tracks(value: Any) -> Any:
    # Only the container is checked here; keys and entries are validated per item so
    # that every bad key and every bad entry is reported, not just the first.
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValueError('must be an object mapping track numbers to {"slug": ..., "doc": ...}')
    return value


def _check_track_key(key: str) -> str:
    if not TRACK_KEY_RE.fullmatch(key):
        raise ValueError(f'key {json.dumps(key)} is not a track number; write keys like "1" or "10"')
    return key


TrackKey = Annotated[str, AfterValidator(_check_track_key)]


class TrackEntry(BaseModel):
    """One entry of the knob's ``tracks`` map. Unknown fields are kept."""

    model_config = ConfigDict(extra="allow")

    slug: Annotated[str, BeforeValidator(_check_slug)]
    doc: Annotated[str | None, BeforeValidator(_check_doc)] = None


class NextTrack(BaseModel):
    """The whole of ``configs/NEXT_TRACK.json``. Unknown fields are kept."""

    model_config = ConfigDict(extra="allow")

    version: Annotated[int | str | None, BeforeValidator(_check_version)] = None
    mode: Annotated[str | None, BeforeValidator(_check_mode)] = None
    plan_version: Annotated[str | None, BeforeValidator(_check_plan_version)] = None
    next_track: Annotated[int, BeforeValidator(_check_next_track)]
    tracks: Annotated[dict[TrackKey, TrackEntry], BeforeValidator(_check_tracks)] = {}
    notes: Annotated[str | list[str] | None, BeforeValidator(_check_notes)] = None

    def entry(self, number: int) -> TrackEntry | None:
        """Return the ``tracks`` entry for track ``number``, or None if the map has none."""
        return self.tracks.get(str(number))

    def track_numbers(self) -> list[int]:
        """Return the track numbers named in the ``tracks`` map, ascending."""
        return sorted(int(key) for key in self.tracks)


def _describe_error(error: Any) -> str:
    """Turn one pydantic error into ``field.path: what is wrong``."""
    # Dict keys are reported by pydantic as (..., "<key>", "[key]"); the message
    # already names the key, so the field is the map itself.
    loc = list(error["loc"])
    if loc and loc[-1] == "[key]":
        loc = loc[:-2]
    field = ".".join(str(part) for part in loc) or "(top level)"
    kind = error["type"]
    if kind == "missing":
        if field == "next_track":
            return 'next_track is missing; it must name the next track number, e.g. "next_track": 9'
        return f"{field} is missing"
    if kind == "value_error":
        detail = str(error.get("ctx", {}).get("error", error["msg"]))
    elif kind in ("model_type", "dict_type", "model_attributes_type"):
        detail = 'must be an object like {"slug": "my-track", "doc": "docs/..."}'
    else:
        detail = str(error["msg"])
    return f"{field}: {detail}"


def _join_problems(path: str, problems: list[str]) -> str:
    listing = "; ".join(problems)
    return f"{path} is not valid: {listing}. Fix {path} on main, then try again."


def parse_knob(text: str, path: str = KNOB_PATH, field: str = "next_track") -> NextTrack:
    """Parse the knob's text into a :class:`NextTrack`.

    `field` is the member that holds the next number: ``next_track`` for the track runner, ``next``
    for the phase runner (``{"plan_version": "v1.02", "next": 17}``); it is read as ``next_track``.

    Raises :class:`KnobError` for invalid JSON (with line and column), a top level that
    is not an object, and every field problem at once (missing or non-integer
    ``next_track``, bad slugs, unsafe doc paths, bad ``plan_version``, bad track keys).
    """
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        problem = f"it is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}"
        message = f"{path} cannot be read: {problem}. Fix {path} on main, then try again."
        raise KnobError(message, [problem]) from None
    if not isinstance(data, dict):
        problem = f"the top level must be a JSON object {{...}}, not {type(data).__name__}"
        raise KnobError(f"{path} cannot be read: {problem}. Fix {path} on main, then try again.", [problem])
    if field != "next_track":
        if field not in data:
            problem = f'{field} is missing; it must name the next number, e.g. "{field}": 9'
            raise KnobError(_join_problems(path, [problem]), [problem])
        data = {key: value for key, value in data.items() if key != "next_track"}
        data["next_track"] = data.pop(field)
    try:
        return NextTrack.model_validate(data)
    except ValidationError as exc:
        problems = [_describe_error(error).replace("next_track", field) for error in exc.errors()]
        raise KnobError(_join_problems(path, problems), problems) from None


def _top_level_key_value_spans(text: str, key: str) -> list[tuple[int, int]]:
    """Return (start, end) spans of the raw values of top-level ``"key":`` members.

    A small JSON scanner: it tracks string state and nesting depth so that the same
    words inside strings (e.g. in ``notes``) or nested objects are never matched.
    Only integer literals are returned as spans; the caller has already checked the
    document parses, so the value after the colon is a JSON value.
    """
    spans: list[tuple[int, int]] = []
    depth = 0
    index = 0
    length = len(text)
    integer_re = re.compile(r"-?(?:0|[1-9][0-9]*)(?![0-9.eE])")
    while index < length:
        char = text[index]
        if char == '"':
            start = index
            index += 1
            while index < length and text[index] != '"':
                index += 2 if text[index] == "\\" else 1
            end = index  # index of the closing quote
            index += 1
            if depth == 1 and text[start + 1 : end] == key:
                after = index
                while after < length and text[after] in " \t\r\n":
                    after += 1
                if after < length and text[after] == ":":
                    after += 1
                    while after < length and text[after] in " \t\r\n":
                        after += 1
                    match = integer_re.match(text, after)
                    if match:
                        spans.append((match.start(), match.end()))
                    else:
                        # A key whose value is not a plain integer still counts as an
                        # occurrence, so the caller refuses instead of guessing.
                        spans.append((after, after))
            continue
        if char in "{[":
            depth += 1
        elif char in "}]":
            depth -= 1
        index += 1
    return spans


def advance_knob_text(text: str, expected: int, new: int, path: str = KNOB_PATH, field: str = "next_track") -> str:
    """Return ``text`` with only the ``next_track`` value changed from ``expected`` to ``new``.

    Every other byte (indentation, key order, other fields, trailing newline) is kept,
    so the commit is a one-line diff a maintainer can read at a glance. Raises
    :class:`KnobError` if the file does not parse, if its ``next_track`` is not
    ``expected`` (someone else moved it), or if the top-level ``"next_track": <int>``
    member cannot be found exactly once.
    """
    if isinstance(new, bool) or not isinstance(new, int) or new < 1:
        raise KnobError(f"Cannot set {field} to {new!r} in {path}: it must be a whole number of 1 or more.")
    knob = parse_knob(text, path, field)
    if knob.next_track != expected:
        raise KnobError(
            f"{path} on main says {field} is {knob.next_track}, not {expected}: someone else changed it. "
            f"Check {path} on main and the track history, then try again."
        )
    spans = _top_level_key_value_spans(text, field)
    if len(spans) != 1 or spans[0][0] == spans[0][1]:
        raise KnobError(
            f'Cannot find exactly one top-level "{field}": <number> in {path} to edit '
            f"(found {len(spans)}). Edit {field} in {path} on main by hand."
        )
    start, end = spans[0]
    updated = text[:start] + str(new) + text[end:]
    # Prove the edit did what it claims before anyone commits it.
    if parse_knob(updated, path, field).next_track != new:  # pragma: no cover - defensive
        raise KnobError(f"Editing {field} in {path} did not produce {new}. Edit it on main by hand.")
    return updated
