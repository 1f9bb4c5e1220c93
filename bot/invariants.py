"""Invariants: regexes the procedure forbids on the lines a change adds, in the files they apply to.

Pure: the caller runs ``git diff --unified=0`` and passes its output in. Only added lines are
checked, so a repository that already breaks an invariant is not blamed for it on every track.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from bot.trackdoc import path_allowed


@dataclass(frozen=True)
class Invariant:
    """A rule on added lines: in files matching `paths`, no line may match `pattern`."""

    name: str
    paths: list[str]  # path patterns, as in bot.trackdoc.path_allowed
    pattern: str  # a Python regex, searched in each added line
    message: str  # what is wrong and what to do instead, shown to the user


@dataclass(frozen=True)
class InvariantHit:
    """An added line that breaks an invariant."""

    invariant: str
    path: str
    line: int  # line number in the new file
    text: str
    message: str


CI_PATHS = [
    ".github/workflows/**",
    ".gitlab-ci.yml",
    "ci/**",
    "scripts/ci/**",
    ".ci/**",
    "**/*ci*.sh",
]

# Reaching `localhost` from the CI host: `curl`/`wget` to it, or any `http(s)://localhost` URL.
# Commented-out lines do not run, and `docker exec` / `docker compose exec|run` run the command
# inside the Docker network, so neither is flagged.
_CI_LOCALHOST_PATTERN = (
    r"^(?!\s*#)"
    r"(?!.*\b(?:docker\s+exec|docker(?:-compose|\s+compose)\s+(?:-\S+\s+(?:[^-\s]\S*\s+)?)*(?:exec|run))\b)"
    r"(?:.*\b(?:curl|wget)\b.*(?:\blocalhost\b|\b127\.0\.0\.1\b|\[::1\])"
    r"|.*\bhttps?://(?:localhost\b|127\.0\.0\.1\b|\[::1\]))"
)

DEFAULT_INVARIANTS: list[Invariant] = [
    Invariant(
        name="ci-docker-network",
        paths=CI_PATHS,
        pattern=_CI_LOCALHOST_PATTERN,
        message=(
            "CI must reach services through the Docker network (service name), not localhost from the CI host: "
            "use the Compose service name (e.g. http://api:8080) from a container on the network, "
            "or `docker compose exec`"
        ),
    )
]

_HUNK_RE = re.compile(r"^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@")
_C_ESCAPES = {"a": 7, "b": 8, "t": 9, "n": 10, "v": 11, "f": 12, "r": 13, '"': 34, "\\": 92}


def _unquote_git_path(text: str) -> str:
    """A path as git prints it in a diff header: C-quoted when it has special bytes, tab-terminated
    when it has spaces."""
    text = text.rstrip("\n")
    if text.endswith("\t"):
        text = text[:-1]
    if not (len(text) >= 2 and text.startswith('"') and text.endswith('"')):
        return text
    raw = bytearray()
    body = text[1:-1]
    index = 0
    while index < len(body):
        char = body[index]
        if char == "\\" and index + 1 < len(body):
            nxt = body[index + 1]
            if re.fullmatch(r"[0-7]{3}", body[index + 1 : index + 4]):
                raw.append(int(body[index + 1 : index + 4], 8))
                index += 4
                continue
            if nxt in _C_ESCAPES:
                raw.append(_C_ESCAPES[nxt])
                index += 2
                continue
        raw.extend(char.encode("utf-8"))
        index += 1
    return raw.decode("utf-8", errors="replace")


def _new_side_path(header: str) -> str | None:
    """The path of a `+++ ` header, or None for `/dev/null` (a deleted file)."""
    name = _unquote_git_path(header[4:])
    if name == "/dev/null":
        return None
    return name[2:] if name.startswith("b/") else name


def added_lines(unified_diff: str) -> dict[str, list[tuple[int, str]]]:
    """Parse `git diff` output into path -> [(line number in the new file, added text)].

    Works with any context size (`--unified=0` is what the worker should use). New files, renames
    and copies are keyed by their new path; deleted files add nothing. Hunk lengths are counted,
    so an added line that itself starts with `+++` or `---` is never mistaken for a header.
    Expects git's default `a/` `b/` prefixes (do not pass `--no-prefix`).
    """
    result: dict[str, list[tuple[int, str]]] = {}
    path: str | None = None
    old_left = new_left = 0
    line_number = 0
    for raw in unified_diff.split("\n"):
        line = raw[:-1] if raw.endswith("\r") else raw
        if old_left > 0 or new_left > 0:
            marker = line[:1]
            if marker == "+":
                if path is not None:
                    result.setdefault(path, []).append((line_number, line[1:]))
                line_number += 1
                new_left -= 1
                continue
            if marker == "-":
                old_left -= 1
                continue
            if marker in (" ", ""):
                # A context line (empty when its single space was stripped in transit).
                line_number += 1
                old_left -= 1
                new_left -= 1
                continue
            if marker == "\\":  # "\ No newline at end of file"
                continue
            old_left = new_left = 0  # a malformed hunk: read the line as a header
        if line.startswith("diff --git "):
            path = None
        elif line.startswith("+++ "):
            path = _new_side_path(line)
        elif hunk := _HUNK_RE.match(line):
            old_left = int(hunk.group(2)) if hunk.group(2) is not None else 1
            new_left = int(hunk.group(4)) if hunk.group(4) is not None else 1
            line_number = int(hunk.group(3))
    return result


def check_invariants(unified_diff: str, invariants: list[Invariant]) -> list[InvariantHit]:
    """Every added line that breaks an invariant, by file then line. Raises re.error on a bad pattern."""
    compiled = [(invariant, re.compile(invariant.pattern)) for invariant in invariants]
    hits: list[InvariantHit] = []
    for path, lines in added_lines(unified_diff).items():
        applicable = [(inv, regex) for inv, regex in compiled if path_allowed(path, inv.paths)]
        for number, text in lines:
            for invariant, regex in applicable:
                if regex.search(text):
                    hits.append(InvariantHit(invariant.name, path, number, text, invariant.message))
    return hits
