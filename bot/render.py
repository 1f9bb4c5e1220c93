"""Runs and answers into words: Slack text and blocks, PR markdown. Pure functions."""

from __future__ import annotations

from typing import Any

from bot.rules import Rules
from bot.runs import GateStatus, Outcome, Run, RunState

STEP_TITLES: dict[str, str] = {
    "preflight": "Preflight: fresh branch from origin/main",
    "agent": "Agent: implementing the track doc",
    "guardrails": "Guardrails: forbidden paths and the knob",
    "format": "Format: gofmt on changed Go files",
    "gates": "Gates: tests and new scripts",
    "commit": "Commit: exactly one commit",
    "push": "Push: the track branch",
    "pull_request": "Pull request",
}
STEP_ORDER = list(STEP_TITLES)

ICONS = {
    Outcome.OK: ":white_check_mark:",
    Outcome.FAILED: ":x:",
    Outcome.STOPPED: ":octagonal_sign:",
    Outcome.ERROR: ":boom:",
    Outcome.SKIPPED: ":fast_forward:",
}

STATE_WORDS: dict[RunState, str] = {
    RunState.QUEUED: "queued",
    RunState.RUNNING: "running",
    RunState.STOPPED: "stopped (STOP)",
    RunState.FAILED: "failed",
    RunState.PR_OPEN: "PR open",
    RunState.MERGED: "merged, awaiting advance",
    RunState.ADVANCED: "merged and advanced",
    RunState.DISMISSED: "merged, advance dismissed",
    RunState.CANCELLED: "cancelled",
    RunState.ABANDONED: "abandoned (its worker died)",
    RunState.DRY_RUN: "dry run done (nothing pushed)",
}

Blocks = list[dict[str, Any]]


def mention(user_id: str) -> str:
    """A Slack mention of a user."""
    return f"<@{user_id}>"


def track_title(run: Run) -> str:
    """`Track 9: federation-security-hardening`."""
    return f"Track {run.track}: {run.slug}"


def section(text: str) -> dict[str, Any]:
    """A mrkdwn section block (Slack limits a section to 3000 characters)."""
    if len(text) > 2900:
        text = text[:2900] + "\n…"
    return {"type": "section", "text": {"type": "mrkdwn", "text": text}}


def buttons(*items: tuple[str, str, str, str | None]) -> dict[str, Any]:
    """An actions block of buttons: (action_id, label, value, style)."""
    elements = []
    for action_id, label, value, style in items:
        button: dict[str, Any] = {
            "type": "button",
            "action_id": action_id,
            "text": {"type": "plain_text", "text": label},
            "value": value,
        }
        if style:
            button["style"] = style
        elements.append(button)
    return {"type": "actions", "elements": elements}


def parent_text(run: Run) -> str:
    """The channel message a run's thread hangs from."""
    kind = "dry run queued" if run.dry_run else "queued"
    return f"{track_title(run)} — {kind} by {mention(run.requested_by)}"


def progress_text(run: Run) -> str:
    """The one progress message in the thread: every step with its outcome, the current step live."""
    lines = [f"*{track_title(run)}* — {STATE_WORDS[run.state]}"]
    done = {step.name: step for step in run.steps}
    for name in STEP_ORDER:
        title = STEP_TITLES[name]
        if name in done:
            step = done[name]
            lines.append(f"{ICONS[step.outcome]} {title} ({step.duration_s:.1f}s) — {step.summary}")
        elif name == run.current_step and run.state is RunState.RUNNING:
            lines.append(f":hourglass_flowing_sand: {title} …")
        elif run.state.active:
            lines.append(f":white_circle: {title}")
    return "\n".join(lines)


def progress_blocks(run: Run, live_note: str = "") -> Blocks:
    """Blocks for the progress message."""
    blocks = [section(progress_text(run))]
    if live_note and run.state is RunState.RUNNING:
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": live_note[:300]}]})
    return blocks


def _changed_lines(run: Run) -> list[str]:
    if not run.changed_files:
        return ["- (none)"]
    lines = []
    for change in run.changed_files:
        moved = f" (from `{change.old_path}`)" if change.old_path else ""
        lines.append(f"- `{change.status}` `{change.path}`{moved}")
    return lines


def _command_lines(run: Run) -> list[str]:
    lines = []
    for step in run.steps:
        for record in step.commands:
            code = "not finished" if record.exit_code is None else f"exit {record.exit_code}"
            note = f" — {record.note}" if record.note else ""
            lines.append(f"- [{step.name}] `{record.command}` → {code} ({record.duration_s:.1f}s){note}")
    return lines or ["- (none)"]


def _gate_lines(run: Run) -> list[str]:
    if not run.gates:
        return ["- no gate applies to this change (no Go files changed, no script added)"]
    lines = []
    for gate in run.gates:
        if gate.status is GateStatus.NOT_RUN:
            lines.append(f"- {gate.name}: **not run** — {gate.reason}")
        else:
            code = "timed out" if gate.exit_code is None else f"exit {gate.exit_code}"
            lines.append(f"- {gate.name}: **{gate.status.value}** (`{gate.command}` → {code}, {gate.duration_s:.1f}s)")
    return lines


def failures(run: Run) -> list[str]:
    """Every expected failure and fault of the run, in words."""
    found = []
    for step in run.steps:
        if step.outcome in (Outcome.FAILED, Outcome.STOPPED, Outcome.ERROR):
            found.append(f"{step.name}: {step.summary}")
            found.extend(f"  {detail}" for detail in step.details)
    return found


def remains(run: Run) -> list[str]:
    """What a person still has to do."""
    todo = []
    if run.state is RunState.STOPPED:
        todo.append("Fix what stopped the run (above), then `/track run` again.")
    elif run.state is RunState.FAILED:
        todo.append("A fault stopped the run (above); fix it and `/track run` again.")
    elif run.state is RunState.DRY_RUN:
        todo.append("`/track run` (without --dry-run) pushes the branch and opens the PR.")
    for gate in run.gates:
        if gate.status is GateStatus.NOT_RUN:
            todo.append(f"Run the gate `{gate.command}` yourself: {gate.reason}.")
        elif gate.status is GateStatus.FAILED:
            todo.append(f"Make `{gate.command}` pass (the PR is a draft until then).")
    if run.pr_number is not None:
        todo.append(f"Review and merge PR #{run.pr_number}; then a maintainer approves advancing NEXT_TRACK.")
    return todo


def report_markdown(run: Run, rules: Rules) -> str:
    """The run's report: the PR body, and the full record of what trackbot did."""
    head = []
    if run.failed_gates():
        head.append("> **Gates failed** — this PR is a draft. " + ", ".join(g.name for g in run.failed_gates()))
        head.append("")
    parts = [
        *head,
        f"## {track_title(run)}",
        "",
        f"- Track: **{run.track}** (`{run.slug}`), plan `{run.plan_version or '-'}`",
        f"- Doc: `{run.doc}`",
        f"- Branch: `{run.branch}`, one commit `{rules.commit_message(run.track, run.slug)}`",
        "",
        "### Changed files",
        *_changed_lines(run),
        "",
        "### Gates",
        *_gate_lines(run),
        "",
        "### Commands run",
        *_command_lines(run),
        "",
        "### Failures and fixes",
        *([f"- {line}" for line in failures(run)] or ["- none"]),
    ]
    if run.agent_summary:
        parts += ["", "### Agent's summary", "", "```", run.agent_summary.strip()[-3000:], "```"]
    todo = remains(run)
    if run.pr_number is None and run.commit_sha is not None:
        # The body of the PR being opened (or updated): it has no number yet, but it is what remains.
        todo.append("Review and merge this PR; then a maintainer approves advancing NEXT_TRACK.")
    parts += ["", "### What remains", *[f"- {line}" for line in todo]]
    parts += ["", f"_Run `{run.id}` by trackbot; requested by Slack user `{run.requested_by}`._"]
    return "\n".join(parts)


def report_text(run: Run) -> str:
    """The report posted in the thread when the run ends."""
    lines = [f"*Report — {track_title(run)}* (`{run.doc}`)"]
    if run.state is RunState.STOPPED:
        lines.append(f":octagonal_sign: *STOP* — {run.stop_reason}. Nothing was pushed.")
    elif run.state is RunState.FAILED:
        lines.append(
            f":boom: *Failed* — {run.error}. Nothing was pushed."
            if run.pr_number is None
            else f":boom: *Failed* — {run.error}."
        )
    if run.state is RunState.DRY_RUN:
        lines.append(":test_tube: *Dry run* — everything but the push and the PR. The change:")
        lines.append(f"```{run.diff_stat or '(empty)'}```")
    if run.pr_url:
        draft = " (draft: a gate failed)" if run.draft else ""
        lines.append(f":link: PR #{run.pr_number}{draft}: {run.pr_url}")
    lines.append("*Changed files:* " + (", ".join(f"`{c.path}`" for c in run.changed_files) or "none"))
    lines.append("*Gates:*")
    lines += [f"  {line[2:]}" for line in _gate_lines(run)]
    problems = failures(run)
    if problems:
        lines.append("*Failures:*")
        lines += [f"  • {p.strip()}" for p in problems]
    lines.append("*What remains:*")
    lines += [f"  • {r}" for r in remains(run)] or ["  • nothing"]
    return "\n".join(lines)


def merge_prompt(run: Run, pr_number: int, new_track: int) -> tuple[str, Blocks]:
    """The question asked in the thread after the track's PR merged."""
    text = f"PR #{pr_number} merged. Advance NEXT_TRACK from {run.track} to {new_track}?"
    return text, [
        section(f":tada: {text}\nOnly a maintainer's approval counts."),
        buttons(
            ("approve_advance", "Approve", run.id, "primary"),
            ("dismiss_advance", "Dismiss", run.id, None),
        ),
    ]


def help_text(suggestion: str | None = None) -> str:
    """What `/track` can do."""
    lead = f"I don't know `{suggestion}`. " if suggestion else ""
    return (
        f"{lead}Usage:\n"
        "• `/track status` — the next track, its doc and what is happening\n"
        "• `/track run` — run the next track: branch, agent, guardrails, gates, one commit, PR\n"
        "• `/track run --dry-run` — everything but the push and the PR; the report shows the diff stat\n"
        "• `/track advance` — (maintainers) advance NEXT_TRACK after the track's PR merged\n"
        "• `/track plan` — every track of the plan: merged, next, upcoming\n"
        "• `/track history` — the last 10 runs: who, when, outcome, PR\n"
        "• `/track help` — this message"
    )
