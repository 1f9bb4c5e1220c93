"""Gates, by rule:

- Go changed: `go test ./...` in each Go module the change touches (or the repository's `go_test`
  command, once, from the root);
- the deploy topology changed (a Compose file anywhere, or anything under `deploy/`): the doc's
  compose smoke in the doc's order: `up`, each step after it, then `down`, which runs even when the
  smoke fails. A bullet that asks in words for a script ("Run local smoke script (documented
  entrypoint)") runs the smoke script the change adds, at that place;
- a script added: run with its interpreter, except a smoke script (under `deploy/` or named for a
  smoke) when the doc brings a stack up: that one runs only inside the sequence, and is "not run:
  needs the stack the doc brings up" otherwise, never failed for want of a stack;
- every other command of the repository's `[gates]`.

A gate whose tool is missing is "not run", never passed. Gates run the repository's code, so they
get the agent's environment: none of trackbot's secrets. Each gate's timeout comes from the
repository's rules. A failed gate makes the PR a draft, or STOPs the run before the push when
the repository says `on_failure = "stop"`.
"""

from __future__ import annotations

import fnmatch
import re
import shlex
import shutil
from dataclasses import dataclass
from pathlib import Path

from bot.pipeline import RunContext
from bot.repo_rules import BUILTIN_GATES, REPO_RULES_PATH
from bot.runs import CommandRecord, DocGateCheck, GateResult, GateStatus, Outcome, StepResult
from bot.steps.agent import safe_environment
from bot.steps.format import changed_go_files
from bot.steps.sandbox import run_untrusted, sandbox_problem
from bot.trackdoc import ComposeGate, RequiredGate, SmokeStep, TrackSpec

COMPOSE_FILE_PATTERNS = ("docker-compose*.yml", "docker-compose*.yaml", "compose*.yml", "compose*.yaml")
DEPLOY_DIR = "deploy/"
# Words that are not programs to look for on PATH: shell builtins and keywords.
_SHELL_WORDS = {
    "cd", "export", "set", "unset", "source", ".", "test", "[", "[[", "true", "false", "echo", "printf",
    "exit", ":", "eval", "exec", "if", "then", "else", "fi", "for", "do", "done", "while", "until",
    "case", "esac", "!", "{", "}", "(", ")", "read", "shift", "wait", "pwd", "umask", "ulimit", "trap",
}  # fmt: skip
# Words after which the next word is still a command: keywords, and `sudo`.
_SHELL_PREFIXES = {"sudo", "if", "then", "else", "elif", "do", "while", "until", "!", "{", "time"}
_ASSIGNMENT_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
_GO_TEST_RE = re.compile(r"\bgo\s+test\b")


@dataclass
class Gate:
    """A gate to run: its name, what a person would type, how trackbot runs it."""

    name: str
    command: str  # as shown in the report
    argv: list[str]
    tools: list[str]  # programs that must be installed
    timeout_key: str  # the gate's name in the repository's [gates.timeouts]
    cwd: str = ""  # relative to the repository root


def shell_programs(command: str) -> list[str]:
    """The programs a shell command line runs (best effort), builtins and repository paths left out.

    An unreadable line gives none: a gate is never called "not installed" on a guess.
    """
    lexer = shlex.shlex(command, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    try:
        tokens = list(lexer)
    except ValueError:
        return []
    programs: list[str] = []
    at_start, skip_next = True, False
    for token in tokens:
        if skip_next:
            skip_next = False
            continue
        if token and all(ch in "();<>|&" for ch in token):
            if "<" in token or ">" in token:
                skip_next = True  # a redirection's file, not a program
            else:
                at_start = True
            continue
        if not at_start:
            continue
        if _ASSIGNMENT_RE.match(token) or token in _SHELL_PREFIXES or token.startswith("-"):
            continue
        at_start = False
        if token in _SHELL_WORDS or "/" in token or "$" in token or "`" in token:
            continue
        if token not in programs:
            programs.append(token)
    return programs


def shell_gate(name: str, command: str, timeout_key: str, cwd: str = "") -> Gate:
    """A gate that is a command line (from the doc or `.trackbot.toml`), run by a shell."""
    return Gate(
        name=name,
        command=command,
        argv=["bash", "-c", command],
        tools=["bash", *shell_programs(command)],
        timeout_key=timeout_key,
        cwd=cwd,
    )


def go_module_dirs(ctx: RunContext, files: list[str]) -> list[str]:
    """The folders of the Go modules (nearest `go.mod`) holding `files`; the root when there is none."""
    root = ctx.clone.path
    found: list[str] = []
    for path in files:
        folder = Path(path).parent
        module = ""
        while True:
            if (root / folder / "go.mod").is_file():
                module = "" if str(folder) == "." else folder.as_posix()
                break
            if str(folder) in (".", ""):
                break
            folder = folder.parent
        if module not in found:
            found.append(module)
    return sorted(found)


def go_gates(ctx: RunContext) -> list[Gate]:
    """`go test ./...` per touched Go module, or the repository's own `go_test` command."""
    files = changed_go_files(ctx)
    if not files:
        return []
    configured = ctx.repo_rules.gate_commands.get("go_test")
    if configured:
        return [shell_gate("go test", configured, "go_test")]
    modules = go_module_dirs(ctx, files)
    return [
        Gate(
            name="go test" if len(modules) == 1 else f"go test ({module or '.'})",
            command="go test ./...",
            argv=["go", "test", "./..."],
            tools=["go"],
            timeout_key="go_test",
            cwd=module,
        )
        for module in modules
    ]


def is_deploy_path(path: str) -> bool:
    """A Compose file anywhere, or anything under `deploy/`: the deploy topology."""
    name = path.rsplit("/", 1)[-1]
    return path.startswith(DEPLOY_DIR) or any(fnmatch.fnmatchcase(name, p) for p in COMPOSE_FILE_PATTERNS)


def deploy_paths(ctx: RunContext) -> list[str]:
    """The changed paths (both sides of a rename) that are deploy topology."""
    return [p for change in ctx.run.changed_files for p in change.paths() if is_deploy_path(p)]


def script_gates(ctx: RunContext) -> list[Gate]:
    """Every script the change adds, run with its interpreter."""
    gates: list[Gate] = []
    for change in ctx.run.changed_files:
        if change.status != "A":
            continue
        interpreter = ctx.repo_rules.rules.interpreter_for(change.path)
        if interpreter is not None:
            gates.append(
                Gate(
                    name=f"script {change.path}",
                    command=shlex.join([interpreter, change.path]),
                    argv=[interpreter, change.path],
                    tools=[interpreter],
                    timeout_key="script",
                )
            )
    return gates


def custom_gates(ctx: RunContext) -> list[Gate]:
    """The repository's other `[gates]` commands (e.g. `lint = "make lint"`): they run on every change."""
    return [
        shell_gate(name, command, name)
        for name, command in ctx.repo_rules.gate_commands.items()
        if name not in BUILTIN_GATES
    ]


class GateRunner:
    """Runs gates one by one, recording each as a GateResult and a CommandRecord."""

    def __init__(self, ctx: RunContext) -> None:
        self.ctx = ctx
        self.env = safe_environment(ctx)
        self.commands: list[CommandRecord] = []

    def missing_tool(self, gate: Gate) -> str | None:
        return next((tool for tool in gate.tools if shutil.which(tool, path=self.env.get("PATH")) is None), None)

    def not_run(self, gate: Gate, reason: str) -> GateResult:
        result = GateResult(
            name=gate.name, command=gate.command, status=GateStatus.NOT_RUN, reason=reason, cwd=gate.cwd
        )
        self.ctx.run.gates.append(result)
        return result

    def run(self, gate: Gate) -> GateResult:
        ctx = self.ctx
        missing = self.missing_tool(gate)
        if missing is not None:
            return self.not_run(gate, f"{missing} not installed")
        timeout = ctx.repo_rules.gate_timeout(gate.timeout_key, ctx.settings.gate_timeout_s)
        cwd = ctx.clone.path / gate.cwd if gate.cwd else ctx.clone.path
        ctx.note(f"gate: {ctx.redact(gate.command)}")
        # The repository's own code: in the sandbox, with no network.
        result, _ = run_untrusted(ctx, gate.argv, self.env, timeout, cwd=cwd)
        tail = ctx.redact(result.output_tail)
        reason = f"timed out after {timeout}s" if result.timed_out else ""
        if result.missing:
            return self.not_run(gate, f"{gate.argv[0]} could not start: {tail}")
        gate_result = GateResult(
            name=gate.name,
            command=ctx.redact(gate.command),
            status=GateStatus.PASSED if result.ok else GateStatus.FAILED,
            exit_code=result.exit_code,
            duration_s=round(result.duration_s, 3),
            reason=reason,
            output_tail=tail,
            cwd=gate.cwd,
        )
        ctx.run.gates.append(gate_result)
        where = f" (in {gate.cwd}/)" if gate.cwd else ""
        self.commands.append(
            CommandRecord(
                command=gate_result.command + where,
                exit_code=result.exit_code,
                duration_s=gate_result.duration_s,
                output_tail=tail,
                note=reason,
            )
        )
        return gate_result


def is_stack_script(path: str) -> bool:
    """An added script that smokes a stack: under `deploy/`, or named for a smoke test."""
    return path.startswith(DEPLOY_DIR) or "smoke" in path.rsplit("/", 1)[-1].lower()


def script_path(gate: Gate) -> str:
    """The repository path of a script gate (`script deploy/local/smoke.sh`)."""
    return gate.name.removeprefix("script ")


@dataclass
class StackPlan:
    """Where the added scripts go when the doc brings a stack up: inside its sequence, or nowhere.

    `placed` maps each bullet that asks for a script in words to the script gates that fill it;
    `needs_stack` are stack scripts that only run with the stack up (never on their own);
    `standalone` are the scripts that run on their own as before.
    """

    placed: dict[str, list[Gate]]
    needs_stack: list[Gate]
    standalone: list[Gate]


def plan_scripts(compose: ComposeGate | None, scripts: list[Gate]) -> StackPlan:
    """Put the added scripts where the doc says: a script a doc command already runs is left to that
    command; a stack script fills the first bullet asking for a script; another stack script needs the
    stack and is not run alone (run with no stack up, it can only fail, and not for the change)."""
    if compose is None:
        return StackPlan({}, [], scripts)
    commands = [compose.up, *compose.smoke, compose.down]
    asking = [step.text for step in compose.steps if step.command is None]
    plan = StackPlan({text: [] for text in asking}, [], [])
    for gate in scripts:
        path = script_path(gate)
        if any(path in [word.removeprefix("./") for word in command.split()] for command in commands):
            continue  # the doc's own command runs it, in its place
        if not is_stack_script(path):
            plan.standalone.append(gate)
        elif asking:
            plan.placed[asking[0]].append(gate)
        else:
            plan.needs_stack.append(gate)
    return plan


def compose_gates(compose: ComposeGate, placed: dict[str, list[Gate]] | None = None) -> tuple[Gate, list[Gate], Gate]:
    """The doc's compose smoke as gates: up, each step in the doc's order (a bullet asking for a script
    runs the scripts placed there), down."""
    up = shell_gate("compose up", compose.up, "compose")
    smoke: list[Gate] = []
    for step in compose.steps or [SmokeStep(command, command) for command in compose.smoke]:
        if step.command is not None:
            smoke.append(shell_gate("compose smoke", step.command, "compose"))
        else:
            smoke.extend((placed or {}).get(step.text, []))
    commands = [gate for gate in smoke if gate.name == "compose smoke"]
    for index, gate in enumerate(commands, start=1):
        gate.name = "compose smoke" if len(commands) == 1 else f"compose smoke {index}"
    down = shell_gate("compose down", compose.down, "compose")
    return up, smoke, down


def run_compose(runner: GateRunner, compose: ComposeGate, placed: dict[str, list[Gate]] | None = None) -> None:
    """Up, then the steps (only if up passed), then down: always, once up was tried."""
    up, smoke, down = compose_gates(compose, placed)
    started = runner.run(up)
    if started.status is GateStatus.NOT_RUN:
        for gate in [*smoke, down]:
            runner.not_run(gate, started.reason)
        return
    for gate in smoke:
        if started.status is GateStatus.PASSED:
            runner.run(gate)
        else:
            runner.not_run(gate, "compose up failed")
    runner.run(down)


NEEDS_STACK = "needs the stack the doc brings up"


NO_COMPOSE_SMOKE = "deploy topology changed but the doc names no compose smoke: a person must check"


def gates(ctx: RunContext) -> StepResult:
    """Run each gate; a failed gate does not halt the run (the PR becomes a draft) unless the
    repository says `on_failure = "stop"`."""
    run = ctx.run
    problem = sandbox_problem(ctx)
    if problem is not None:
        return StepResult(name="gates", outcome=Outcome.STOPPED, summary=problem)
    runner = GateRunner(ctx)
    for gate in go_gates(ctx):
        runner.run(gate)
    deploy = deploy_paths(ctx)
    compose = ctx.spec.compose if ctx.spec is not None else None
    scripts = plan_scripts(compose, script_gates(ctx))
    if deploy and compose is not None:
        run_compose(runner, compose, scripts.placed)
    else:
        if deploy:
            run.gates.append(
                GateResult(name="compose smoke", command="", status=GateStatus.NOT_RUN, reason=NO_COMPOSE_SMOKE)
            )
        why = "" if deploy else ": the deploy topology did not change, so trackbot brought no stack up"
        for gate in [gate for placed in scripts.placed.values() for gate in placed]:
            runner.not_run(gate, NEEDS_STACK + why)
    for gate in scripts.needs_stack:
        reason = f"{NEEDS_STACK}, and the doc's gates do not say where in its sequence to run it"
        runner.not_run(gate, reason if deploy and compose is not None else NEEDS_STACK)
    for gate in [*scripts.standalone, *custom_gates(ctx)]:
        runner.run(gate)
    placed_names = {text: [gate.name for gate in gates] for text, gates in scripts.placed.items() if gates}
    run.doc_gates = check_doc_gates(ctx.spec, run.gates, bool(deploy), placed_names)
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
    if failed and ctx.repo_rules.on_gate_failure == "stop":
        return StepResult(
            name="gates",
            outcome=Outcome.STOPPED,
            summary=f"{len(failed)} gate(s) failed ({', '.join(g.name for g in failed)}) and "
            f'{REPO_RULES_PATH} says on_failure = "stop"',
            commands=runner.commands,
            details=details,
        )
    return StepResult(
        name="gates",
        outcome=Outcome.FAILED if failed else Outcome.OK,
        summary=", ".join(parts),
        commands=runner.commands,
        details=details,
    )


# -- the doc's required gates ------------------------------------------------------------------------


def _words(command: str) -> str:
    return " ".join(command.split())


def _matches(required: RequiredGate, gate: GateResult) -> bool:
    """Whether a gate trackbot ran is one the doc's bullet asks for."""
    if not gate.command:
        return False
    for command in required.commands:
        if _words(command) == _words(gate.command):
            return True
        if gate.name.startswith("go test") and _GO_TEST_RE.search(command):
            return True
        if gate.name.startswith("script "):
            path = gate.name.removeprefix("script ")
            words = [w.removeprefix("./") for w in command.split()]
            if path in words:
                return True
    return False


def _status(matched: list[GateResult]) -> str:
    statuses = {g.status for g in matched}
    for status in (GateStatus.FAILED, GateStatus.NOT_RUN, GateStatus.PASSED):
        if status in statuses:
            return status.value
    return ""


def check_doc_gates(
    spec: TrackSpec | None,
    ran: list[GateResult],
    deploy_changed: bool,
    placed: dict[str, list[str]] | None = None,
) -> list[DocGateCheck]:
    """Each gate the doc requires: which of trackbot's gates covered it, or why a person must check it.

    `placed` maps a bullet that asks in words for a script to the gates trackbot ran (or could not
    run) in its place.
    """
    if spec is None:
        return []
    checks: list[DocGateCheck] = []
    for required in spec.required_gates:
        check = DocGateCheck(text=required.text, kind=required.kind)
        if required.kind == "manual":
            names = (placed or {}).get(required.text, [])
            matched = [g for g in ran if g.name in names]
        else:
            matched = [g for g in ran if _matches(required, g)]
        if matched:
            check.gates = [g.name for g in matched]
            check.status = _status(matched)
            not_run = [g for g in matched if g.status is GateStatus.NOT_RUN]
            if not_run:
                check.note = f"trackbot could not run it ({not_run[0].reason})"
        elif required.kind == "manual":
            check.note = "the doc leaves it to a person"
        elif required.kind == "compose" and not deploy_changed:
            check.note = "the deploy topology did not change, so trackbot ran no compose smoke"
        elif required.kind == "compose" and spec.compose is None:
            check.note = "trackbot runs a compose smoke only when the doc names both its `up` and its `down`"
        else:
            check.note = "trackbot runs no gate that matches it"
        checks.append(check)
    return checks
