"""Gates: `go test ./...` when Go changed, every added script run with its interpreter.

A gate whose tool is missing is "not run", never passed. Gates run the repository's code, so they
get the agent's environment: none of trackbot's secrets.
"""

from __future__ import annotations

import shutil

from bot.adapters.process import run_process
from bot.pipeline import RunContext
from bot.runs import CommandRecord, GateResult, GateStatus, Outcome, StepResult
from bot.steps.agent import safe_environment
from bot.steps.format import changed_go_files


def planned_gates(ctx: RunContext) -> list[tuple[str, list[str]]]:
    """(name, argv) of every gate this change calls for, in order."""
    gates: list[tuple[str, list[str]]] = []
    if changed_go_files(ctx):
        gates.append(("go test", ["go", "test", "./..."]))
    for change in ctx.run.changed_files:
        if change.status != "A":
            continue
        interpreter = ctx.rules.interpreter_for(change.path)
        if interpreter is not None:
            gates.append((f"script {change.path}", [interpreter, change.path]))
    return gates


def gates(ctx: RunContext) -> StepResult:
    """Run each gate; a failed gate does not halt the run (the PR becomes a draft)."""
    run = ctx.run
    env = safe_environment(ctx)
    commands: list[CommandRecord] = []
    for name, argv in planned_gates(ctx):
        command = " ".join(argv)
        if shutil.which(argv[0], path=env.get("PATH")) is None:
            run.gates.append(
                GateResult(
                    name=name,
                    command=command,
                    status=GateStatus.NOT_RUN,
                    reason=f"{argv[0]} is not installed on the worker",
                )
            )
            continue
        result = run_process(argv, ctx.clone.path, env, ctx.settings.gate_timeout_s)
        tail = ctx.redact(result.output_tail)
        status = GateStatus.PASSED if result.ok else GateStatus.FAILED
        reason = f"timed out after {ctx.settings.gate_timeout_s}s" if result.timed_out else ""
        run.gates.append(
            GateResult(
                name=name,
                command=command,
                status=status,
                exit_code=result.exit_code,
                duration_s=round(result.duration_s, 3),
                reason=reason,
                output_tail=tail,
            )
        )
        commands.append(
            CommandRecord(
                command=command,
                exit_code=result.exit_code,
                duration_s=round(result.duration_s, 3),
                output_tail=tail,
                note=reason,
            )
        )
    if not run.gates:
        return StepResult(name="gates", outcome=Outcome.SKIPPED, summary="no gate applies to this change")
    failed = run.failed_gates()
    not_run = [g for g in run.gates if g.status is GateStatus.NOT_RUN]
    parts = [f"{sum(g.status is GateStatus.PASSED for g in run.gates)} passed"]
    if failed:
        parts.append(f"{len(failed)} failed ({', '.join(g.name for g in failed)})")
    if not_run:
        parts.append(f"{len(not_run)} not run ({', '.join(g.name for g in not_run)})")
    details = [f"{g.name}: {g.output_tail.splitlines()[-1] if g.output_tail else 'no output'}" for g in failed]
    return StepResult(
        name="gates",
        outcome=Outcome.FAILED if failed else Outcome.OK,
        summary=", ".join(parts),
        commands=commands,
        details=details,
    )
