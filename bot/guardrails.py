"""Pure checks on the paths a change touches."""

from __future__ import annotations

import posixpath
from dataclasses import dataclass

from bot.rules import Rules
from bot.runs import ChangedFile


@dataclass(frozen=True)
class Violation:
    """A changed path the procedure forbids, and why."""

    path: str
    reason: str


def check_changes(changes: list[ChangedFile], rules: Rules) -> list[Violation]:
    """Every changed path under a forbidden folder, a forbidden file, or the knob itself (only a
    maintainer advances it)."""
    violations: list[Violation] = []
    for change in changes:
        for path in change.paths():
            if path == rules.knob_path:
                violations.append(Violation(path, "the knob changes only by a maintainer's advance"))
                continue
            for entry in rules.forbidden_prefixes:
                if forbidden_by(path, entry):
                    violations.append(Violation(path, f"`{entry}` is forbidden by the procedure"))
                    break
    return violations


def forbidden_by(path: str, entry: str) -> bool:
    """Whether a forbidden entry covers `path`: `dir/` covers the folder and everything below it
    (and a file replacing the folder); an entry without a trailing `/` is that exact file only."""
    if entry.endswith("/"):
        return path == entry.rstrip("/") or path.startswith(entry)
    return path == entry


def forbidding_entry(path: str, rules: Rules) -> str | None:
    """The first forbidden entry of `rules` that covers `path`, if any."""
    return next((entry for entry in rules.forbidden_prefixes if forbidden_by(path, entry)), None)


SYMLINK_MODE = "120000"
GITLINK_MODE = "160000"


@dataclass(frozen=True)
class TreeEntry:
    """A file the change adds or modifies, as git will commit it: its mode and, for a symlink, its target."""

    path: str
    mode: str  # git's: 100644, 100755, 120000 (symlink), 160000 (gitlink)
    link_target: str | None = None


def has_control_characters(text: str) -> bool:
    """Whether `text` holds a C0 or C1 control character or DEL (a newline, an escape, a bell...)."""
    return any(ord(ch) < 32 or 127 <= ord(ch) < 160 for ch in text)


def shown_path(path: str) -> str:
    """A path safe to show: control characters written as escapes."""
    return "".join(ch if not has_control_characters(ch) else ch.encode("unicode_escape").decode() for ch in path)


def check_entries(entries: list[TreeEntry], rules: Rules) -> list[Violation]:
    """What a tree can smuggle past the path rules: a symlink out of the tree or into a forbidden
    path, a gitlink or `.gitmodules` (another repository's code), a file name with control
    characters (it would forge lines in a report). None of these can be granted as an exception."""
    violations: list[Violation] = []
    for entry in entries:
        path = entry.path
        if has_control_characters(path):
            violations.append(Violation(shown_path(path), "the file name holds control characters"))
            continue
        if entry.mode == GITLINK_MODE:
            violations.append(Violation(path, "a gitlink (a submodule): trackbot commits files, not repositories"))
        elif path == ".gitmodules" or path.endswith("/.gitmodules"):
            violations.append(Violation(path, "a `.gitmodules` file: trackbot commits no submodules"))
        elif entry.mode == SYMLINK_MODE:
            problem = _symlink_problem(path, entry.link_target or "", rules)
            if problem:
                violations.append(Violation(path, problem))
    return violations


def _symlink_problem(path: str, target: str, rules: Rules) -> str | None:
    if has_control_characters(target):
        return "a symlink whose target holds control characters"
    if target.startswith("/"):
        return f"a symlink out of the work tree (to `{target}`)"
    resolved = posixpath.normpath(posixpath.join(posixpath.dirname(path), target))
    if resolved == ".." or resolved.startswith("../"):
        return f"a symlink out of the work tree (to `{target}`)"
    if resolved == rules.knob_path:
        return f"a symlink to the knob (`{target}`)"
    entry = forbidding_entry(resolved, rules) or forbidding_entry(resolved + "/", rules)
    if entry is not None:
        return f"a symlink into the forbidden `{entry}` (to `{target}`)"
    if resolved == ".git" or resolved.startswith(".git/"):
        return f"a symlink into `.git` (to `{target}`)"
    return None
