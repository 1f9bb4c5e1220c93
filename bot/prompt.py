"""The agent's prompt, built from the procedure, the repository's rules and the track doc."""

from __future__ import annotations

from bot.rules import Rules
from bot.trackdoc import TrackSpec


def _bullets(items: list[str], empty: str) -> str:
    return "\n".join(f"  - {item}" for item in items) if items else f"  - {empty}"


def build_prompt(
    track: int, slug: str, doc_path: str, doc_text: str, rules: Rules, spec: TrackSpec | None = None
) -> str:
    """The instructions the agent receives on stdin.

    `rules` are the repository's own (`.trackbot.toml`) where it has them; `spec` is the doc as data:
    its allowed paths and required gates are repeated above the doc so they cannot be missed.
    """
    forbidden = "\n".join(f"  - `{entry}`" for entry in rules.forbidden_prefixes)
    allowed = _bullets(
        [f"`{pattern}`" for pattern in (spec.allowed if spec else [])],
        "the doc names no paths: keep the change to what the doc asks for",
    )
    gates = _bullets(
        [gate.text for gate in (spec.required_gates if spec else [])],
        "the doc names none",
    )
    return f"""You are implementing Track {track} ({slug}) of this repository's plan.

Implement ONLY what the track doc below asks for, in the current directory (the work tree).

Rules (trackbot enforces them; a change that breaks one is discarded and reported):
- Never change these paths (a folder ending in `/` covers everything below it):
{forbidden}
- Never change `{rules.knob_path}`: only a maintainer advances it, after the merge.
- If the doc needs a forbidden path, stop and explain why in your final message instead.
- Stay within the paths the doc allows you to change:
{allowed}
- The doc's required gates (trackbot runs the ones it can and reports the rest; run them yourself
  if you can, and say what happened):
{gates}
- Do not run git commit, branch, push or open pull requests: trackbot (not you) does git, gofmt,
  the gates, the one commit, the push and the PR after you finish.
- End with a short summary: what you changed, commands you ran and their results, what remains.

Track doc `{doc_path}` (in full):

{doc_text}
"""
