"""The procedure's rules: forbidden paths, the knob, names of branches, commits and PRs, gate rules."""

from __future__ import annotations

from dataclasses import dataclass

from bot.knob import KNOB_PATH


@dataclass(frozen=True)
class Rules:
    """Defaults of the track-runner procedure; one plan kind of a repository (the track runner by default).

    A plan kind is a sequential runner: a knob file and the member holding the next number, where
    each item's doc lives, and how its branch, commit, PR and advance are named.
    """

    forbidden_prefixes: tuple[str, ...] = ("docs/product/agentos-prs/", "docs/api/")
    knob_path: str = KNOB_PATH
    plan: str = "tracks"  # the plan kind's name, as `/track run --plan NAME` says it
    knob_field: str = "next_track"  # the knob's member that holds the next number
    # Where item N's doc is: "" is the track runner's search (bot.plan.resolve_track_doc), else a
    # pattern with {plan_version} and {n} (a `*` in the file name matches one file).
    doc_template: str = ""
    noun: str = "Track"  # what one item of the plan is called in messages
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
# The phase runner: configs/NEXT_PHASE.json {"plan_version": "v1.02", "next": 17}, one doc per phase.
PHASES_RULES = Rules(
    plan="phases",
    knob_path="configs/NEXT_PHASE.json",
    knob_field="next",
    doc_template="docs/plan/{plan_version}/phases/phase-{n}.md",
    branch_template="phase-{n}",
    commit_template="feat(phase{n}): implement phase {n}",
    pr_title_template="Phase {n}",
    advance_message_template="Update next phase value from {old} to {new}",
    noun="Phase",
)
PRESETS = {"tracks": DEFAULT_RULES, "phases": PHASES_RULES}
