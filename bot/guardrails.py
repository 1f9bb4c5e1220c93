"""Pure checks on the paths a change touches."""

from __future__ import annotations

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
