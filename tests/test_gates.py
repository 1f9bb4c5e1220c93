"""Gates by rule, through the real worker: go test per Go module (or the repository's command), the doc's
compose smoke when the deploy topology changes (`down` always), scripts, the repository's own gates,
per-gate timeouts, missing tools, and the gate failure policy.

Docker and Go are not needed: the tests put fake `docker` and `go` executables first on PATH (the
worker inherits the test's environment, and gates get PATH through the agent's allowlist). Each
fake logs its working directory and arguments, so the tests see exactly what trackbot ran, where.
"""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest
from test_rules_run import HELLO, assert_stopped_on, track_doc, upstream_with
from test_run import DOC, MakeStack, agent, gate_line, pulls, pushed_paths, report, run_track

# The sandbox hides the host from agents and gates; here fake `docker` and `go` log their calls
# into files on the host.
pytestmark = pytest.mark.unconfined

COMPOSE = "docker compose -f deploy/compose.yml"
COMPOSE_GATES = f"""\
- Bring the stack up: `{COMPOSE} up -d --wait`
- Smoke: `{COMPOSE} exec -T api wget -qO- http://api:8080/health`
- Tear it down: `{COMPOSE} down -v`
"""
COMPOSE_DOC = track_doc(COMPOSE_GATES, allowed="- `deploy/`\n- `scripts/hello.sh`\n- `app/hello.txt`\n")
DEPLOY_AGENT = HELLO + 'put("deploy/compose.yml", "services:\\n  api:\\n    image: sample/api\\n")\n'


class Fakes:
    """A folder of fake executables, first on PATH, each logging `cwd|args` to `<name>.log`."""

    def __init__(self, root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.bin = root / "fake-bin"
        self.bin.mkdir()
        monkeypatch.setenv("PATH", f"{self.bin}{os.pathsep}{os.environ['PATH']}")

    def add(self, name: str, body: str = "") -> None:
        """`name` logs its call, prints it, runs `body` (bash), and exits 0 unless `body` exits."""
        script = self.bin / name
        script.write_text(
            "#!/usr/bin/env bash\n"
            f'echo "$PWD|$*" >> {self.bin / (name + ".log")}\n'
            f'echo "{name} $*"\n' + textwrap.dedent(body) + "exit 0\n"
        )
        script.chmod(0o755)

    def calls(self, name: str) -> list[tuple[str, str]]:
        """(cwd, args) of each call, in order."""
        log = self.bin / f"{name}.log"
        if not log.exists():
            return []
        return [tuple(line.split("|", 1)) for line in log.read_text().splitlines()]  # type: ignore[misc]


@pytest.fixture
def fakes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Fakes:
    return Fakes(tmp_path, monkeypatch)


def docker_fake(fakes: Fakes) -> None:
    """A `docker` whose `exec` fails while `fail-smoke` exists, and whose `up` fails while `fail-up` does."""
    fakes.add(
        "docker",
        f"""\
        if [[ "$*" == *" exec "* && -e {fakes.bin / "fail-smoke"} ]]; then echo "smoke: connection refused"; exit 1; fi
        if [[ "$*" == *" up "* && -e {fakes.bin / "fail-up"} ]]; then echo "up: image not found"; exit 1; fi
        """,
    )


def compose_args(fakes: Fakes) -> list[str]:
    return [args.split(" ", 4)[3] for _, args in fakes.calls("docker")]  # compose -f FILE <subcommand>


# -- compose ---------------------------------------------------------------------------------------------


def test_a_deploy_change_runs_the_docs_compose_smoke_up_smoke_down(
    make_stack: MakeStack, tmp_path: Path, fakes: Fakes
) -> None:
    docker_fake(fakes)
    stack = make_stack(repo=upstream_with(tmp_path, {DOC: COMPOSE_DOC}), agent=agent(tmp_path, DEPLOY_AGENT))
    run_track(stack)

    assert compose_args(fakes) == ["up", "exec", "down"]
    assert all(Path(cwd).name == "tree" for cwd, _ in fakes.calls("docker"))
    [pr] = pulls(stack)
    assert not pr.draft
    body = pr.body or ""
    for name, command in (
        ("compose up", f"{COMPOSE} up -d --wait"),
        ("compose smoke", f"{COMPOSE} exec -T api wget -qO- http://api:8080/health"),
        ("compose down", f"{COMPOSE} down -v"),
    ):
        line = gate_line(body, name)
        assert f"**passed** (`{command}` → exit 0, " in line and "s)" in line, line
        assert f"docker {command.removeprefix('docker ')}" in body  # its output tail
    required = body.split("### The doc's required gates", 1)[1].split("###", 1)[0]
    assert "ran by trackbot as `compose up`: **passed**" in required
    assert "ran by trackbot as `compose smoke`: **passed**" in required
    assert "ran by trackbot as `compose down`: **passed**" in required
    text = report(stack)
    assert "compose smoke: *passed*" in gate_line(text, "compose smoke")


def test_down_runs_even_when_the_smoke_fails_and_the_failure_leads_the_report(
    make_stack: MakeStack, tmp_path: Path, fakes: Fakes
) -> None:
    docker_fake(fakes)
    (fakes.bin / "fail-smoke").touch()
    stack = make_stack(repo=upstream_with(tmp_path, {DOC: COMPOSE_DOC}), agent=agent(tmp_path, DEPLOY_AGENT))
    run_track(stack)

    assert compose_args(fakes) == ["up", "exec", "down"]
    [pr] = pulls(stack)
    assert pr.draft
    body = pr.body or ""
    assert body.startswith("> **Gates failed** — this PR is a draft: compose smoke (exit 1)")
    assert "smoke: connection refused" in body
    assert "**passed**" in gate_line(body, "compose down")
    text = report(stack)
    lines = text.splitlines()
    assert lines[1].startswith(":link: PR #1 (draft: a gate failed)")
    assert lines[2] == ":warning: *Gates failed* — this PR is a draft: compose smoke (exit 1)"
    assert "smoke: connection refused" in text  # the failed gate's output tail, in the thread too


def test_when_compose_up_fails_the_smoke_is_not_run_and_down_still_runs(
    make_stack: MakeStack, tmp_path: Path, fakes: Fakes
) -> None:
    docker_fake(fakes)
    (fakes.bin / "fail-up").touch()
    stack = make_stack(repo=upstream_with(tmp_path, {DOC: COMPOSE_DOC}), agent=agent(tmp_path, DEPLOY_AGENT))
    run_track(stack)
    assert compose_args(fakes) == ["up", "down"]
    body = pulls(stack)[0].body or ""
    assert "**failed**" in gate_line(body, "compose up") and "up: image not found" in body
    assert "**not run**: compose up failed" in gate_line(body, "compose smoke")
    assert "**passed**" in gate_line(body, "compose down")


def test_a_compose_file_anywhere_without_a_smoke_in_the_doc_needs_a_person(
    make_stack: MakeStack, tmp_path: Path, fakes: Fakes
) -> None:
    docker_fake(fakes)
    stack = make_stack(
        agent=agent(tmp_path, HELLO + 'put("services/api/docker-compose.override.yml", "services: {}\\n")\n')
    )
    run_track(stack)
    assert fakes.calls("docker") == []
    [pr] = pulls(stack)
    assert not pr.draft
    expected = "deploy topology changed but the doc names no compose smoke: a person must check"
    assert f"compose smoke: **not run**: {expected}" in (pr.body or "")
    assert f"compose smoke: *not run*: {expected}" in report(stack)


def test_without_a_deploy_change_the_docs_compose_gates_are_left_to_a_person(
    make_stack: MakeStack, tmp_path: Path, fakes: Fakes
) -> None:
    docker_fake(fakes)
    stack = make_stack(repo=upstream_with(tmp_path, {DOC: COMPOSE_DOC}), agent=agent(tmp_path, HELLO))
    run_track(stack)
    assert fakes.calls("docker") == []
    required = (pulls(stack)[0].body or "").split("### The doc's required gates", 1)[1].split("###", 1)[0]
    assert required.count("the deploy topology did not change, so trackbot ran no compose smoke") == 3


LOCAL = "docker compose -f deploy/local/compose.yaml"
# Required gates as a team writes them: the stack up, a smoke script named in words, the stack down.
LOCAL_GATES = f"""\
- `go test ./...`
- `{LOCAL} up -d --build`
- Run local smoke script (documented entrypoint)
- `{LOCAL} down -v`
"""
LOCAL_DOC = track_doc(
    LOCAL_GATES,
    allowed="- `deploy/local/*` compose topology and docs\n- `scripts/` smoke entrypoint\n- `app/hello.txt`\n",
)
SMOKE = 'put("deploy/local/smoke.sh", "#!/usr/bin/env bash\\nset -e\\ndocker ps\\necho smoke ok\\n")\n'
LOCAL_AGENT = 'put("app/hello.txt", "hello\\n")\nput("deploy/local/compose.yaml", "services: {}\\n")\n' + SMOKE


def test_an_added_smoke_script_runs_where_the_doc_says_between_up_and_down(
    make_stack: MakeStack, tmp_path: Path, fakes: Fakes
) -> None:
    docker_fake(fakes)
    stack = make_stack(repo=upstream_with(tmp_path, {DOC: LOCAL_DOC}), agent=agent(tmp_path, LOCAL_AGENT))
    run_track(stack)

    # The doc's order: up, the smoke script (its `docker ps`), down; the script never ran alone.
    assert [args.split(" ")[3] if args.startswith("compose") else args for _, args in fakes.calls("docker")] == [
        "up",
        "ps",
        "down",
    ]
    [pr] = pulls(stack)
    assert not pr.draft
    body = pr.body or ""
    gates = body.split("### Gates", 1)[1].split("###", 1)[0]
    names = [line[2:].split(":", 1)[0] for line in gates.splitlines() if line.startswith("- ")]
    assert names == ["compose up", "script deploy/local/smoke.sh", "compose down"]
    required = body.split("### The doc's required gates", 1)[1].split("###", 1)[0]
    assert (
        "Run local smoke script (documented entrypoint) — ran by trackbot as `script deploy/local/smoke.sh`: "
        "**passed**" in required
    )


def test_a_smoke_script_with_no_stack_up_is_not_run_rather_than_failed(
    make_stack: MakeStack, tmp_path: Path, fakes: Fakes
) -> None:
    docker_fake(fakes)
    agent_body = 'put("app/hello.txt", "hello\\n")\n' + SMOKE.replace("deploy/local/smoke.sh", "scripts/smoke.sh")
    stack = make_stack(repo=upstream_with(tmp_path, {DOC: LOCAL_DOC}), agent=agent(tmp_path, agent_body))
    run_track(stack)

    assert fakes.calls("docker") == []
    [pr] = pulls(stack)
    assert not pr.draft  # not the change's failure: nothing was tried without the stack
    body = pr.body or ""
    assert (
        "script scripts/smoke.sh: **not run**: needs the stack the doc brings up: the deploy topology did not "
        "change, so trackbot brought no stack up" in gate_line(body, "script scripts/smoke.sh")
    )
    required = body.split("### The doc's required gates", 1)[1].split("###", 1)[0]
    assert "Run local smoke script (documented entrypoint) — **a person must check**: trackbot could not run it" in (
        required
    )


def test_when_the_stack_does_not_come_up_the_placed_smoke_script_is_not_run_and_down_still_runs(
    make_stack: MakeStack, tmp_path: Path, fakes: Fakes
) -> None:
    docker_fake(fakes)
    (fakes.bin / "fail-up").touch()
    stack = make_stack(repo=upstream_with(tmp_path, {DOC: LOCAL_DOC}), agent=agent(tmp_path, LOCAL_AGENT))
    run_track(stack)
    assert compose_args(fakes) == ["up", "down"]
    body = pulls(stack)[0].body or ""
    assert "**failed**" in gate_line(body, "compose up")
    assert "**not run**: compose up failed" in gate_line(body, "script deploy/local/smoke.sh")
    assert "**passed**" in gate_line(body, "compose down")


# -- go ----------------------------------------------------------------------------------------------------


def test_go_test_runs_in_each_go_module_the_change_touches(make_stack: MakeStack, tmp_path: Path, fakes: Fakes) -> None:
    fakes.add("go")
    stack = make_stack(
        agent=agent(
            tmp_path,
            'put("app/greeting/greeting.go", "package greeting\\n")\n'
            'put("tools/go.mod", "module example.com/tools\\n")\n'
            'put("tools/gen/main.go", "package main\\n")\n',
        )
    )
    run_track(stack)
    calls = sorted((Path(cwd).name, args) for cwd, args in fakes.calls("go"))
    assert calls == [("app", "test ./..."), ("tools", "test ./...")]
    body = pulls(stack)[0].body or ""
    assert "**passed** (`go test ./...` in `app/` → exit 0" in gate_line(body, "go test (app)")
    assert "**passed** (`go test ./...` in `tools/` → exit 0" in gate_line(body, "go test (tools)")
    assert "go test ./..." in body.split("### Commands run", 1)[1]


def test_the_repositorys_go_test_command_and_timeouts_are_used(
    make_stack: MakeStack, tmp_path: Path, fakes: Fakes
) -> None:
    fakes.add("go")
    rules = '[gates]\ngo_test = "go test -race ./..."\n\n[gates.timeouts]\nscript = 1\n'
    stack = make_stack(
        repo=upstream_with(tmp_path, {".trackbot.toml": rules}),
        agent=agent(
            tmp_path,
            'put("app/greeting/greeting.go", "package greeting\\n")\n'
            'put("scripts/slow.sh", "echo starting\\nsleep 30\\n")\n',
        ),
    )
    run_track(stack)
    [(cwd, args)] = fakes.calls("go")
    assert args == "test -race ./..." and Path(cwd).name == "tree"  # the root
    [pr] = pulls(stack)
    assert pr.draft
    body = pr.body or ""
    assert "**passed** (`go test -race ./...` → exit 0" in gate_line(body, "go test")
    slow = gate_line(body, "script scripts/slow.sh")
    assert "**failed** (`bash scripts/slow.sh` → timed out" in slow, slow
    assert "timed out after 1s" in body


def test_a_missing_tool_is_reported_not_run_never_passed(make_stack: MakeStack, tmp_path: Path) -> None:
    rules = '[gates]\nlint = "nosuchlinter --all ./..."\n'
    stack = make_stack(repo=upstream_with(tmp_path, {".trackbot.toml": rules}), agent=agent(tmp_path, HELLO))
    run_track(stack)
    [pr] = pulls(stack)
    assert not pr.draft  # not run is not failed; it is for a person
    body = pr.body or ""
    assert gate_line(body, "lint") == "- lint: **not run**: nosuchlinter not installed"
    assert "Run the gate `nosuchlinter --all ./...` yourself: nosuchlinter not installed." in body
    assert "lint: *not run*: nosuchlinter not installed" in report(stack)


# -- the failure policy ---------------------------------------------------------------------------------------


def test_on_failure_stop_stops_the_run_before_the_push(make_stack: MakeStack, tmp_path: Path) -> None:
    stack = make_stack(
        repo=upstream_with(tmp_path, {".trackbot.toml": '[gates]\non_failure = "stop"\n'}),
        agent=agent(tmp_path, 'put("scripts/x.sh", "echo red\\nexit 1\\n")\n'),
    )
    run_track(stack)
    text = assert_stopped_on(stack, "1 gate(s) failed (script scripts/x.sh)", 'on_failure = "stop"')
    assert text.splitlines()[2] == ":warning: *Gates failed*: script scripts/x.sh (exit 1)"
    assert "Make `bash scripts/x.sh` pass (then `/track run` again)." in text
    assert "red" in text


def test_a_gate_failure_by_default_still_opens_a_draft(make_stack: MakeStack, tmp_path: Path) -> None:
    stack = make_stack(agent=agent(tmp_path, 'put("scripts/x.sh", "echo red\\nexit 1\\n")\n'))
    run_track(stack)
    [pr] = pulls(stack)
    assert pr.draft and pushed_paths(stack) == ["scripts/x.sh"]
    assert (pr.body or "").startswith("> **Gates failed** — this PR is a draft: script scripts/x.sh (exit 1)")


# -- the pure parts ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("command", "programs"),
    [
        ("cd app && go test ./...", ["go"]),
        ("docker compose -f deploy/compose.yml up -d", ["docker"]),
        ('curl -fsS "http://api:8080/?a=1&b=2" | grep -q ok', ["curl", "grep"]),
        ("FOO=1 sudo -E make lint > out.txt 2>&1", ["make"]),
        ("./scripts/smoke.sh && bash scripts/x.sh", ["bash"]),
        ("if true; then gotestsum; fi", ["gotestsum"]),
        ('unbalanced "quote', []),
    ],
)
def test_shell_programs_names_what_must_be_installed(command: str, programs: list[str]) -> None:
    from bot.steps.gates import shell_programs

    assert shell_programs(command) == programs


@pytest.mark.parametrize(
    ("path", "deploy"),
    [
        ("docker-compose.yml", True),
        ("services/api/docker-compose.override.yaml", True),
        ("compose.yaml", True),
        ("ops/compose.prod.yml", True),
        ("deploy/k8s/api.yaml", True),
        ("deploy", False),
        ("app/deploy/notes.md", False),
        ("docs/compose-notes.md", False),
    ],
)
def test_the_deploy_topology_is_compose_files_anywhere_and_deploy(path: str, deploy: bool) -> None:
    from bot.steps.gates import is_deploy_path

    assert is_deploy_path(path) is deploy
