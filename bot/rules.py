"""The procedure's rules: forbidden paths, the knob, names of branches, commits and PRs, gate rules."""

from __future__ import annotations

from dataclasses import dataclass

from bot.knob import KNOB_PATH


@dataclass(frozen=True)
class Rules:
    """Defaults of the track-runner procedure."""

    forbidden_prefixes: tuple[str, ...] = ("docs/product/agentos-prs/", "docs/api/")
    knob_path: str = KNOB_PATH
    branch_template: str = "track-{n}-{slug}"
    commit_template: str = "chore(track{n}): {slug}"
    pr_title_template: str = "Track {n}: {slug}"
    advance_message_template: str = "Update next_track value from {old} to {new}"
    # Scripts added by the change are gates: run each with its interpreter.
    script_interpreters: tuple[tuple[str, str], ...] = ((".sh", "bash"), (".py", "python3"), (".ps1", "pwsh"))

    def branch(self, n: int, slug: str) -> str:
        """The track's branch name, e.g. `track-9-federation-security-hardening`."""
        return self.branch_template.format(n=n, slug=slug)

    def commit_message(self, n: int, slug: str) -> str:
        """The one commit's message, e.g. `chore(track9): federation-security-hardening`."""
        return self.commit_template.format(n=n, slug=slug)

    def pr_title(self, n: int, slug: str) -> str:
        """The PR title, e.g. `Track 9: federation-security-hardening`."""
        return self.pr_title_template.format(n=n, slug=slug)

    def advance_message(self, old: int, new: int) -> str:
        """The maintainer's one-line knob commit message."""
        return self.advance_message_template.format(old=old, new=new)

    def interpreter_for(self, path: str) -> str | None:
        """The interpreter that runs a script added at `path`, or None if it is not a script."""
        for suffix, interpreter in self.script_interpreters:
            if path.endswith(suffix):
                return interpreter
        return None


DEFAULT_RULES = Rules()
