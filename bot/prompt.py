"""The agent's prompt, built from the procedure and the track doc."""

from __future__ import annotations

from bot.rules import Rules


def build_prompt(track: int, slug: str, doc_path: str, doc_text: str, rules: Rules) -> str:
    """The instructions the agent receives on stdin."""
    forbidden = "\n".join(f"- `{prefix}`" for prefix in rules.forbidden_prefixes)
    return f"""You are implementing Track {track} ({slug}) of this repository's plan.

Implement ONLY what the track doc below asks for, in the current directory (the work tree).

Rules (trackbot enforces them; a change that breaks one is discarded and reported):
- Never change anything under these folders:
{forbidden}
- Never change `{rules.knob_path}`: only a maintainer advances it, after the merge.
- If the doc needs a forbidden path, stop and explain why in your final message instead.
- Do not run git commit, branch, push or open pull requests: trackbot does git, gofmt, the gates,
  the one commit, the push and the PR after you finish.
- End with a short summary: what you changed, commands you ran and their results, what remains.

Track doc `{doc_path}`:

{doc_text}
"""
