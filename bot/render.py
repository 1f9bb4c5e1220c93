"""Runs and answers into words: Slack text and blocks, PR markdown. Pure functions."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from bot.rules import Rules
from bot.runs import (
    UNCONFINED_WARNING,
    DocGateCheck,
    GateResult,
    GateStatus,
    GuardrailConflict,
    Outcome,
    Run,
    RunState,
    ScopeMatch,
)

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
    RunState.ADVANCING: "merged, advance waiting for its PR",
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


def knob_name(run: Run) -> str:
    """What the run's knob number is called: NEXT_TRACK, or "next phase" for another plan kind."""
    return "NEXT_TRACK" if run.plan == "tracks" else f"next {run.noun.lower()}"


def track_title(run: Run) -> str:
    """`Track 9: federation-security-hardening`; `Phase 17` when the slug only repeats the number."""
    if run.slug == f"{run.noun.lower()}-{run.track}":
        return f"{run.noun} {run.track}"
    return f"{run.noun} {run.track}: {run.slug}"


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


NO_GATE = "no gate applies to this change (no Go files changed, no script added, no deploy change)"
GATE_TAIL_CHARS = 4000
# What the run stopped at, in words, for a report whose gates never ran.
_STOPPED_AT = {"guardrails": "the guardrails", "agent": "the agent", "preflight": "preflight", "format": "format"}


def no_gate_text(run: Run) -> str:
    """Why a report lists no gate: none applied, or the run ended before the gates step.

    A run that STOPs at the guardrails never ran its gates; saying "no gate applies" there would
    claim no Go file changed when the gates simply never looked.
    """
    if any(step.name == "gates" for step in run.steps):
        return NO_GATE
    ended = next(
        (s for s in reversed(run.steps) if s.outcome in (Outcome.STOPPED, Outcome.FAILED, Outcome.ERROR)), None
    )
    if ended is None:
        return "gates not run: the run ended before the gates"
    verb = "stopped" if ended.outcome is Outcome.STOPPED else "failed"
    return f"gates not run: the run {verb} at {_STOPPED_AT.get(ended.name, ended.name)}"


def _gate_summary(gate: GateResult, bold: str) -> str:
    """`go test: **passed** (`go test ./...` in `app/` → exit 0, 1.2s)`; `bold` is `**` or `*`."""
    if gate.status is GateStatus.NOT_RUN:
        return f"{gate.name}: {bold}not run{bold}: {gate.reason}"
    code = "timed out" if gate.exit_code is None else f"exit {gate.exit_code}"
    where = f" in `{gate.cwd}/`" if gate.cwd else ""
    return f"{gate.name}: {bold}{gate.status.value}{bold} (`{gate.command}`{where} → {code}, {gate.duration_s:.1f}s)"


def _fence(text: str) -> str:
    """A code fence longer than any run of backticks inside `text`."""
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    return "`" * max(3, longest + 1)


def _gate_lines(run: Run) -> list[str]:
    if not run.gates:
        return [f"- {no_gate_text(run)}"]
    lines = []
    for gate in run.gates:
        lines.append(f"- {_gate_summary(gate, '**')}")
        tail = gate.output_tail.strip("\n")
        if gate.status is not GateStatus.NOT_RUN and tail:
            tail = tail[-GATE_TAIL_CHARS:]
            fence = _fence(tail)
            opened = " open" if gate.status is GateStatus.FAILED else ""
            lines += [
                f"  <details{opened}><summary>output (last lines)</summary>",
                "",
                f"  {fence}",
                *[f"  {line}" for line in tail.splitlines()],
                f"  {fence}",
                "  </details>",
            ]
    return lines


def _doc_gate_line(check: DocGateCheck, bold: str) -> str:
    if check.gates and check.status != GateStatus.NOT_RUN.value:
        ran = ", ".join(f"`{name}`" for name in check.gates)
        return f"{check.text} — ran by trackbot as {ran}: {bold}{check.status}{bold}"
    return f"{check.text} — {bold}a person must check{bold}: {check.note}"


def _doc_gate_lines(run: Run) -> list[str]:
    return [f"- {_doc_gate_line(check, '**')}" for check in run.doc_gates] or ["- the doc names no required gates"]


def _invariant_lines(run: Run) -> list[str]:
    lines = []
    for hit in run.invariant_hits:
        lines.append(f"- `{hit.path}` line {hit.line} — {hit.invariant}: {hit.message}")
        lines.append(f"  `{hit.text.replace('`', chr(39))}`")
    return lines


def conflict_line(conflict: GuardrailConflict) -> str:
    """A guardrail conflict in words: which of the doc's words allow the path, and what forbids it."""
    if conflict.by_words:
        return (
            f'the doc\'s line {conflict.doc_line} ("{_plain(conflict.doc_words)}") names `{conflict.path}` '
            f"({conflict.allowed}); the procedure forbids `{conflict.forbidden}`"
        )
    line = f" (the doc's line {conflict.doc_line})" if conflict.doc_line else ""
    return (
        f"the doc allows `{conflict.allowed}`, the procedure forbids `{conflict.forbidden}` (`{conflict.path}`){line}"
    )


def _plain(words: str, limit: int = 160) -> str:
    """The doc's words for a quote: emphasis and backticks dropped (they would break the report's own)."""
    text = re.sub(r"(\*\*|__)(.+?)\1", r"\2", words).replace("`", "")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _scope_line(match: ScopeMatch) -> str:
    where = "a required gate" if match.section == "gates" else "line"
    place = f"{where} {match.line}" if match.section != "gates" else f"{where} (line {match.line})"
    return f'`{match.path}` — {place}: "{_plain(match.text)}" ({match.how})'


def _outside_lines(run: Run) -> list[str]:
    excluded = {m.path: m for m in run.scope_excluded}
    lines = []
    for path in run.out_of_scope:
        match = excluded.get(path)
        if match is None:
            lines.append(f"`{path}`: no line of the doc names it")
        else:
            lines.append(f'`{path}`: excluded by line {match.line}: "{_plain(match.text)}"')
    return lines


def exception_offered(run: Run) -> bool:
    """A STOP whose change a maintainer may still approve as a guardrail exception."""
    return (
        run.state is RunState.STOPPED
        and bool(run.exception_paths)
        and run.exception_of is None  # an exception's own run offers none
        and run.exception_run is None
    )


def _exception_head(run: Run, mark: Callable[[str], str]) -> str:
    paths = ", ".join(f"`{p}`" for p in run.exception_paths)
    by = f" granted by {mark(run.exception_granted_by)}" if run.exception_granted_by else " granted"
    conflicts = [c for c in run.exception_conflicts if c.by_words]
    words = list(dict.fromkeys(f'line {c.doc_line}: "{_plain(c.doc_words)}"' for c in conflicts))
    named = f", as the doc's words name them ({'; '.join(words)})" if words else ""
    return f"**Guardrail exception**{by} for {paths}{named}"


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
    if exception_offered(run):
        todo.append(
            "A maintainer may approve the guardrail exception: trackbot then opens the PR with exactly this "
            "change. Otherwise change the doc or the change, then `/track run` again."
        )
    elif run.state is RunState.STOPPED:
        todo.append("Fix what stopped the run (above), then `/track run` again.")
    elif run.state is RunState.FAILED:
        todo.append("A fault stopped the run (above); fix it and `/track run` again.")
    elif run.state is RunState.DRY_RUN:
        todo.append("`/track run` (without --dry-run) pushes the branch and opens the PR.")
    for gate in run.gates:
        if gate.status is GateStatus.NOT_RUN and not gate.command:
            todo.append(f"{gate.reason[:1].upper()}{gate.reason[1:]}.")
        elif gate.status is GateStatus.NOT_RUN:
            where = f" in `{gate.cwd}/`" if gate.cwd else ""
            todo.append(f"Run the gate `{gate.command}` yourself{where}: {gate.reason}.")
        elif gate.status is GateStatus.FAILED:
            after = (
                "then `/track run` again"
                if run.state is RunState.STOPPED
                else ("the PR is a draft until then" if run.draft else "the PR must not be merged until then")
            )
            todo.append(f"Make `{gate.command}` pass ({after}).")
    for check in run.doc_gates:
        if not check.gates:
            todo.append(f"Check the doc's required gate yourself: {check.text}")
    if run.invariant_hits:
        todo.append("Fix the added lines that break an invariant (see Invariants), or say in the PR why they must.")
    if run.out_of_scope:
        todo.append("Check that the changes outside the doc's scope belong to this track.")
    if run.pr_number is not None:
        todo.append(f"Review and merge PR #{run.pr_number}; then a maintainer approves advancing {knob_name(run)}.")
    return todo


def _warnings_head(run: Run, quote: str, bold: str) -> list[str]:
    """The warnings that open a report: failed gates (the reason for a draft) and invariants."""
    head = []
    failed = run.failed_gates()
    if failed:
        draft = ""
        if run.state is not RunState.STOPPED:  # only a PR that is a draft is called one
            draft = " — this PR is a draft" if run.draft else (" — do not merge" if run.draft_refused else "")
        named = ", ".join(f"{g.name} ({'timed out' if g.exit_code is None else f'exit {g.exit_code}'})" for g in failed)
        head.append(f"{quote}{bold}Gates failed{bold}{draft}: {named}")
    if run.invariant_hits:
        where = ", ".join(f"`{h.path}` line {h.line}" for h in run.invariant_hits[:5])
        more = f" and {len(run.invariant_hits) - 5} more" if len(run.invariant_hits) > 5 else ""
        head.append(
            f"{quote}{bold}Invariants{bold}: {len(run.invariant_hits)} added line(s) break an invariant: {where}{more}"
        )
    if run.unconfined:
        head.append(f"{quote}{bold}Unconfined{bold}: {UNCONFINED_WARNING}")
    return head


def report_markdown(run: Run, rules: Rules) -> str:
    """The run's report: the PR body, and the full record of what trackbot did."""
    head = []
    if run.exception_of:
        head.append(f"> {_exception_head(run, lambda user: f'`@{user}`')}")
    head += _warnings_head(run, "> ", "**")
    if head:
        # One quote block, its warnings apart: `> a`, `>`, `> b`, then a blank line.
        head = [*[line for item in head for line in (item, ">")][:-1], ""]
    parts = [
        *head,
        f"## {track_title(run)}",
        "",
        f"- Track: **{run.track}** (`{run.slug}`), plan `{run.plan_version or '-'}`",
        f"- Doc: `{run.doc}`",
        f"- Branch: `{run.branch}`, one commit `{rules.commit_message(run.track, run.slug)}`",
    ]
    if run.exception_of:
        parts.append(f"- Change: held from run `{run.exception_of}`, applied without an agent")
    parts += ["", "### Changed files", *_changed_lines(run)]
    if run.in_scope:
        parts += [
            "",
            "### In the doc's scope",
            "The line of the doc that allows each change:",
            *[f"- {_scope_line(match)}" for match in run.in_scope],
        ]
    if run.out_of_scope:
        parts += [
            "",
            "### Outside the doc's scope",
            "Advice, not a STOP: no line of the doc's scope allows these changes.",
            *[f"- {line}" for line in _outside_lines(run)],
        ]
    if run.exception_conflicts:
        parts += ["", "### Guardrail conflict", *[f"- {conflict_line(c)}" for c in run.exception_conflicts]]
    parts += ["", "### Gates", *_gate_lines(run)]
    if run.doc_gates:
        parts += ["", "### The doc's required gates", *_doc_gate_lines(run)]
    if run.invariant_hits:
        parts += ["", "### Invariants", *_invariant_lines(run)]
    parts += [
        "",
        "### Commands run",
        *_command_lines(run),
        "",
        "### Failures and fixes",
        *([f"- {line}" for line in failures(run)] or ["- none"]),
    ]
    if run.agent_summary:
        summary = run.agent_summary.strip()[-3000:]
        fence = _fence(summary)
        parts += ["", "### Agent's summary", "", fence, summary, fence]
    todo = remains(run)
    if run.pr_number is None and run.commit_sha is not None:
        # The body of the PR being opened (or updated): it has no number yet, but it is what remains.
        todo.append(f"Review and merge this PR; then a maintainer approves advancing {knob_name(run)}.")
    parts += ["", "### What remains", *[f"- {line}" for line in todo]]
    parts += ["", f"_Run `{run.id}` by trackbot; requested by Slack user `{run.requested_by}`._"]
    return "\n".join(parts)


SLACK_TAIL_LINES = {GateStatus.FAILED: 10, GateStatus.PASSED: 3}


def report_text(run: Run) -> str:
    """The report posted in the thread when the run ends: what went wrong first, then the record."""
    lines = [f"*Report — {track_title(run)}* (`{run.doc}`)"]
    if run.exception_of:
        lines.append(f":unlock: {_exception_head(run, mention).replace('**', '*')}")
    if run.state is RunState.STOPPED:
        lines.append(f":octagonal_sign: *STOP* — {run.stop_reason}. Nothing was pushed.")
    elif run.state is RunState.FAILED:
        lines.append(
            f":boom: *Failed* — {run.error}. Nothing was pushed."
            if run.pr_number is None and not any(s.name == "push" and s.outcome is Outcome.OK for s in run.steps)
            else f":boom: *Failed* — {run.error}."
        )
    if run.state is RunState.DRY_RUN:
        lines.append(":test_tube: *Dry run* — everything but the push and the PR. The change:")
        lines.append(f"```{run.diff_stat or '(empty)'}```")
    if run.pr_url:
        draft = " (draft: a gate failed)" if run.draft else (" (gates failing)" if run.draft_refused else "")
        lines.append(f":link: PR #{run.pr_number}{draft}: {run.pr_url}")
    lines += [f":warning: {line}" for line in _warnings_head(run, "", "*")]
    problems = failures(run)
    if problems:
        lines.append("*Failures:*")
        lines += [f"  • {p.strip()}" for p in problems]
    if exception_offered(run):
        lines.append(
            "*Guardrail exception possible:* the doc explicitly allows every forbidden path this change touches:"
        )
        lines += [f"  • {conflict_line(c)}" for c in run.exception_conflicts]
        lines.append("  A maintainer may approve the exception; the change is kept until then (14 days).")
    lines.append("*Changed files:* " + (", ".join(f"`{c.path}`" for c in run.changed_files) or "none"))
    if run.in_scope:
        lines.append("*In the doc's scope:*")
        lines += [f"  • {_scope_line(match)}" for match in run.in_scope]
    if run.out_of_scope:
        lines.append("*Outside the doc's scope* (advice, not a STOP):")
        lines += [f"  • {line}" for line in _outside_lines(run)]
    lines.append("*Gates:*")
    if not run.gates:
        lines.append(f"  {no_gate_text(run)}")
    for gate in run.gates:
        lines.append(f"  {_gate_summary(gate, '*')}")
        shown = SLACK_TAIL_LINES.get(gate.status, 0)
        tail = gate.output_tail.strip("\n").splitlines()[-shown:] if shown else []
        if tail:
            lines.append("```" + "\n".join(tail).replace("```", "'''") + "```")
    if run.doc_gates:
        lines.append("*The doc's required gates:*")
        lines += [f"  • {_doc_gate_line(check, '*')}" for check in run.doc_gates]
    if run.invariant_hits:
        lines.append("*Invariants:*")
        lines += [f"  • `{h.path}` line {h.line} — {h.invariant}: {h.message}" for h in run.invariant_hits]
    lines.append("*What remains:*")
    lines += [f"  • {r}" for r in remains(run)] or ["  • nothing"]
    return cut_report("\n".join(lines), run)


REPORT_SECTION_CHARS = 2900
# A thread report longer than this is cut: Slack shows long messages badly, and the PR body has it all.
SLACK_REPORT_CHARS = 3500


def cut_report(text: str, run: Run, limit: int = SLACK_REPORT_CHARS) -> str:
    """`text` cut at a line boundary to about `limit` characters, ending with where the full report is."""
    if len(text) <= limit:
        return text
    body = f"the PR body and its first {run.report_comments} comment(s)" if run.report_comments else "the PR body"
    where = f"{body}: {run.pr_url}" if run.pr_url else f"the run record (`{run.id}`; `/track history`)"
    kept: list[str] = []
    size = 0
    for line in text.splitlines():
        if size + len(line) + 1 > limit - 200:
            break
        kept.append(line)
        size += len(line) + 1
    if sum(part.count("```") for part in kept) % 2:
        kept.append("```")  # close a code block the cut left open
    kept.append(f"… (report cut) The full report is in {where}")
    return "\n".join(kept)


def section_texts(text: str, limit: int) -> list[str]:
    """`text` in pieces of at most `limit` characters for section blocks, cut between lines (a
    longer line is cut too), in the text's order; never an empty or blank piece (Slack refuses an
    empty section as invalid_blocks)."""
    pieces: list[str] = []
    chunk: list[str] = []

    def flush() -> None:
        joined = "\n".join(chunk)
        if joined.strip():
            pieces.append(joined)
        chunk.clear()

    for line in text.splitlines():
        while len(line) > limit:
            flush()  # what came before the long line goes first
            if line[:limit].strip():
                pieces.append(line[:limit])
            line = line[limit:]
        if chunk and len("\n".join([*chunk, line])) > limit:
            flush()
        chunk.append(line)
    flush()
    return pieces


def report_blocks(run: Run) -> Blocks | None:
    """Blocks for the thread's report when it needs a button (a guardrail exception to approve); None
    otherwise (the plain text is the message)."""
    if not exception_offered(run):
        return None
    text = report_text(run)
    blocks: Blocks = []
    for text_of_block in section_texts(text, REPORT_SECTION_CHARS):
        blocks.append(section(text_of_block))
    blocks = blocks[:45]
    blocks.append(buttons(("approve_exception", "Approve exception", run.id, "primary")))
    return blocks


def merge_prompt(run: Run, pr_number: int, new_track: int) -> tuple[str, Blocks]:
    """The question asked in the thread after the track's PR merged."""
    text = f"PR #{pr_number} merged. Advance {knob_name(run)} from {run.track} to {new_track}?"
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
        "• `--plan NAME` — after `run`, `status`, `advance` or `plan`: another plan kind of the repository "
        "(e.g. `/track run --plan phases` runs the next phase)\n"
        "• `/track plan` — every track of the plan: merged, next, upcoming\n"
        "• `/track history` — the last 10 runs: who, when, outcome, PR\n"
        "• `/track help` — this message"
    )
