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
    """Every changed path under a forbidden folder, or the knob itself (only a maintainer advances it)."""
    violations: list[Violation] = []
    for change in changes:
        for path in change.paths():
            if path == rules.knob_path:
                violations.append(Violation(path, "the knob changes only by a maintainer's advance"))
                continue
            for prefix in rules.forbidden_prefixes:
                if path == prefix.rstrip("/") or path.startswith(prefix):
                    violations.append(Violation(path, f"`{prefix}` is forbidden by the procedure"))
                    break
    return violations
