"""Runs that keep every rule, through the real worker: the repository's own `.trackbot.toml`, the track
doc as data (its scope and required gates), invariants on added lines, and re-runs of a track whose
branch or PR already exists.

Like tests/test_run.py: the local stack (Slack and GitHub twins, the bot's HTTP app, a real worker
process, real Redis), a real upstream git repository and real agent subprocesses.
"""

from __future__ import annotations

import subprocess
import textwrap
from pathlib import Path

import pytest
from test_run import (
    BRANCH,
    DOC,
    MakeStack,
    agent,
    branches,
    git,
    messages,
    parents,
    pulls,
    pushed_file,
    pushed_paths,
    report,
    run_track,
    services,
)

from bot.local.console import LocalStack
from bot.local.sample import create_sample_repo
from bot.queueing import enqueue_run
from bot.retry import retry_run
from bot.runs import RunState

# -- helpers shared with the other rule tests (test_gates, test_codex_agent, test_exception) -----------


def upstream_with(tmp_path: Path, files: dict[str, str | None], message: str = "Maintainer's change") -> Path:
    """The sample repository with one more commit on main by a maintainer: `files` written (None: removed)."""
    repo = create_sample_repo(tmp_path / "upstream.git")
    work = tmp_path / "maintainer"
    subprocess.run(["git", "clone", "-q", str(repo), str(work)], check=True)
    for path, text in files.items():
        target = work / path
        if text is None:
            target.unlink()
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    ident = ["-c", "user.name=Maintainer", "-c", "user.email=maintainer@example.com", "-c", "commit.gpgsign=false"]
    subprocess.run(["git", "add", "-A"], cwd=work, check=True)
    subprocess.run(["git", *ident, "commit", "-q", "-m", message], cwd=work, check=True)
    subprocess.run(["git", "push", "-q", "origin", "main"], cwd=work, check=True)
    return repo


def stop_line(text: str) -> str:
    """The STOP line of a thread report."""
    return next(line for line in text.splitlines() if "*STOP*" in line)


def assert_stopped_on(stack: LocalStack, *words: str, main_commits: int = 2) -> str:
    """The run STOPPED for a reason holding every one of `words`; nothing was pushed; main untouched."""
    text = report(stack)
    line = stop_line(text)
    for word in words:
        assert word in line, (word, text)
    assert "Nothing was pushed." in line
    assert branches(stack) == ["main"]
    assert git(stack, "rev-list", "--count", "main").strip() == str(main_commits)
    assert pulls(stack) == []
    return text


def track_doc(gates: str, allowed: str = "- `scripts/hello.sh`\n- `app/hello.txt`\n") -> str:
    """Track 1's doc with the given allowed paths and required gates (markdown bullets)."""
    return textwrap.dedent(
        """\
        # Track 1: Hello endpoint

        ## Goal

        Say hello.

        ## What you are allowed to change

        {allowed}
        ## Required gates

        {gates}
        """
    ).format(allowed=allowed, gates=gates)


HELLO = """\
put("scripts/hello.sh", "#!/usr/bin/env bash\\nset -euo pipefail\\necho 'hello from track 1'\\n")
put("app/hello.txt", "hello\\n")
"""


# -- .trackbot.toml ---------------------------------------------------------------------------------


def test_an_invalid_trackbot_toml_refuses_the_run_with_its_line_and_why(make_stack: MakeStack, tmp_path: Path) -> None:
    from test_handlers import command

    rules = '[guardrails]\nforbidden = ["docs/api/"]\n\n[gates]\non_failure = "later"\n'
    stack = make_stack(repo=upstream_with(tmp_path, {".trackbot.toml": rules}), agent=agent(tmp_path, HELLO))
    answer = command(stack, "run").text
    for words in (".trackbot.toml is not valid", "line 5", 'on_failure must be "draft" or "stop"'):
        assert words in answer, (words, answer)
    assert services(stack).store.runs(services(stack).settings.repositories[0]) == []  # nothing queued
    assert branches(stack) == ["main"]


def test_the_repositorys_rules_name_the_commit_and_pr_and_forbid_exact_files(
    make_stack: MakeStack, tmp_path: Path
) -> None:
    rules = textwrap.dedent(
        """\
        [guardrails]
        forbidden = ["docs/api/", "secrets.env"]

        [names]
        commit = "feat(track-{n}): {slug}"
        pr_title = "[T{n}] {slug}"
        """
    )
    repo = upstream_with(tmp_path, {".trackbot.toml": rules})
    stack = make_stack(
        repo=repo,
        agent=agent(
            tmp_path,
            HELLO
            + 'put("secrets.env.example", "TOKEN=\\n")  # not `secrets.env`: an exact entry forbids only it\n'
            + 'put("app/prompt.txt", sys.stdin.read())\n',
        ),
    )
    run_track(stack)
    [pr] = pulls(stack)
    assert pr.title == "[T1] hello-endpoint"
    assert git(stack, "log", "-1", "--format=%s", BRANCH).strip() == "feat(track-1): hello-endpoint"
    assert "one commit `feat(track-1): hello-endpoint`" in (pr.body or "")
    assert "secrets.env.example" in pushed_paths(stack)

    prompt = pushed_file(stack, "app/prompt.txt")
    for expected in ("`secrets.env`", "`docs/api/`", "`.trackbot.toml`", "`scripts/hello.sh`", "`app/hello.txt`"):
        assert expected in prompt, expected
    assert "`bash scripts/hello.sh` exits 0" in prompt  # the doc's required gate, above the doc
    assert "trackbot (not you) does git, gofmt" in prompt
    assert git(stack, "show", f"main:{DOC}").strip() in prompt


def test_an_exact_forbidden_file_of_the_repository_stops_the_run(make_stack: MakeStack, tmp_path: Path) -> None:
    repo = upstream_with(tmp_path, {".trackbot.toml": '[guardrails]\nforbidden = ["docs/api/", "secrets.env"]\n'})
    stack = make_stack(repo=repo, agent=agent(tmp_path, HELLO + 'put("secrets.env", "TOKEN=x\\n")\n'))
    run_track(stack)
    assert_stopped_on(stack, "forbidden", "`secrets.env`")


def test_the_agents_copy_of_the_rules_is_never_trusted(make_stack: MakeStack, tmp_path: Path) -> None:
    repo = upstream_with(tmp_path, {".trackbot.toml": '[guardrails]\nforbidden = ["docs/api/"]\n'})
    stack = make_stack(
        repo=repo,
        agent=agent(
            tmp_path,
            """\
        put(".trackbot.toml", '[guardrails]\\nforbidden = ["nothing/"]\\n')
        put("docs/api/openapi.yaml", "openapi: 3.1.0\\n")
    """,
        ),
    )
    run_track(stack)
    assert_stopped_on(stack, "forbidden", "`.trackbot.toml`", "`docs/api/openapi.yaml`")


def test_the_repositorys_branch_template_names_the_branch(make_stack: MakeStack, tmp_path: Path) -> None:
    repo = upstream_with(tmp_path, {".trackbot.toml": '[names]\nbranch = "tracks/{n}-{slug}"\n'})
    stack = make_stack(repo=repo, agent=agent(tmp_path, HELLO))
    run_track(stack)
    assert "tracks/1-hello-endpoint" in branches(stack)
    assert [p.head_ref for p in pulls(stack)] == ["tracks/1-hello-endpoint"]


# -- the doc as data ----------------------------------------------------------------------------------


def test_the_report_lists_changes_outside_the_docs_scope_and_each_required_gate(
    make_stack: MakeStack, tmp_path: Path
) -> None:
    gates = textwrap.dedent(
        """\
        - `bash scripts/hello.sh` exits 0 and prints `hello from track 1`.
        - `make lint` is clean.
        - Manual: open the hello page in a browser.
        """
    )
    repo = upstream_with(tmp_path, {DOC: track_doc(gates)})
    stack = make_stack(repo=repo, agent=agent(tmp_path, HELLO + 'put("app/extra.txt", "more\\n")\n'))
    run_track(stack)
    [pr] = pulls(stack)
    assert not pr.draft  # scope is advice, not a STOP and not a draft
    body = pr.body or ""
    scope = body.split("### Outside the doc's scope", 1)[1].split("###", 1)[0]
    assert "- `app/extra.txt`" in scope and "hello.sh" not in scope and "hello.txt" not in scope
    required = body.split("### The doc's required gates", 1)[1].split("###", 1)[0]
    lines = [line for line in required.splitlines() if line.startswith("- ")]
    assert len(lines) == 3, required
    assert "ran by trackbot as `script scripts/hello.sh`: **passed**" in lines[0]
    assert "`make lint` is clean. — **a person must check**: trackbot runs no gate that matches it" in lines[1]
    assert "**a person must check**: the doc leaves it to a person" in lines[2]
    assert "Check the doc's required gate yourself: `make lint` is clean." in body

    text = report(stack)
    assert "*Outside the doc's scope* (advice, not a STOP):\n  • `app/extra.txt`: no line of the doc names it" in text
    assert '  • `scripts/hello.sh` — line 9: "scripts/hello.sh" (`scripts/hello.sh`)' in text
    assert "ran by trackbot as `script scripts/hello.sh`: *passed*" in text
    assert text.count("*a person must check*") == 2


# -- invariants ------------------------------------------------------------------------------------------


def test_an_added_line_that_breaks_an_invariant_is_a_warning_at_the_top(make_stack: MakeStack, tmp_path: Path) -> None:
    workflow = "name: ci\\njobs:\\n  smoke:\\n    steps:\\n      - run: curl -fsS http://localhost:8080/health\\n"
    stack = make_stack(
        agent=agent(
            tmp_path,
            HELLO + f'put(".github/workflows/ci.yml", "{workflow}")\n',
        )
    )
    run_track(stack)
    [pr] = pulls(stack)
    assert not pr.draft  # a warning, not a draft: only failed gates make one
    body = pr.body or ""
    assert body.startswith("> **Invariants**: 1 added line(s) break an invariant: `.github/workflows/ci.yml` line 5")
    section = body.split("### Invariants", 1)[1].split("###", 1)[0]
    assert "`.github/workflows/ci.yml` line 5 — ci-docker-network: CI must reach services" in section
    assert "curl -fsS http://localhost:8080/health" in section
    text = report(stack)
    head = text.split("*Changed files:*", 1)[0]
    assert ":warning: *Invariants*: 1 added line(s) break an invariant: `.github/workflows/ci.yml` line 5" in head


def test_invariants_come_from_the_repositorys_rules(make_stack: MakeStack, tmp_path: Path) -> None:
    rules = textwrap.dedent(
        """\
        replace_default_invariants = true

        [[invariants]]
        name = "no-todo"
        paths = ["app/**"]
        pattern = "TODO"
        message = "finish it or open an issue"
        """
    )
    repo = upstream_with(tmp_path, {".trackbot.toml": rules, "app/old.txt": "TODO from before\n"})
    stack = make_stack(
        repo=repo,
        agent=agent(
            tmp_path,
            HELLO
            + 'put("app/old.txt", "TODO from before\\nnew line\\nTODO: new\\n")\n'
            + 'put(".github/workflows/ci.yml", "run: curl http://localhost:1\\n")\n',
        ),
    )
    run_track(stack)
    [pr] = pulls(stack)
    section = (pr.body or "").split("### Invariants", 1)[1].split("###", 1)[0]
    hits = [line for line in section.splitlines() if line.startswith("- ")]
    # Only the added line is blamed, not the one already on main; the default CI rule was replaced.
    assert hits == ["- `app/old.txt` line 3 — no-todo: finish it or open an issue"]


# -- re-runs: the branch (and its PR) already exist --------------------------------------------------------


COUNTED = """\
count_file = pathlib.Path({count!r})
count = int(count_file.read_text()) + 1 if count_file.exists() else 1
count_file.write_text(str(count))
put("app/hello.txt", f"hello, take {{count}}\\n")
put("scripts/check.sh", "exit 0\\n" if count > 1 else "echo 'red on the first take'\\nexit 1\\n")
"""


@pytest.mark.unconfined  # the agent counts its runs in a file on the host
def test_a_retry_after_the_pr_could_not_be_opened_replaces_the_pushed_branch(
    make_stack: MakeStack, tmp_path: Path
) -> None:
    stack = make_stack(agent=agent(tmp_path, COUNTED.format(count=str(tmp_path / "count"))))
    assert stack.github is not None
    # The push succeeds, then GitHub refuses to open the PR: the run FAILS with the branch pushed.
    stack.github.fail_next(1, 422, method="POST", path_prefix=f"/repos/{stack.github.full_name}/pulls")
    run_track(stack)
    first = services(stack).store.latest(services(stack).settings.repositories[0], 1)
    assert first is not None and first.state is RunState.FAILED, first
    assert BRANCH in branches(stack) and pulls(stack) == []
    first_sha = git(stack, "rev-parse", BRANCH).strip()

    retry_run(services(stack), first.id, "U0ALICE")
    stack.handle(":wait 120")

    # A fresh branch from main, one commit, pushed over the first with --force-with-lease; one PR.
    assert git(stack, "rev-parse", f"{BRANCH}^").strip() == git(stack, "rev-parse", "main").strip()
    assert git(stack, "rev-parse", BRANCH).strip() != first_sha
    assert pushed_file(stack, "app/hello.txt") == "hello, take 2\n"
    [pr] = pulls(stack)
    assert pr.head_ref == BRANCH and not pr.draft
    push = [line for line in (pr.body or "").splitlines() if "git push" in line]
    assert push and f"--force-with-lease=refs/heads/{BRANCH}:{first_sha}" in push[0]


@pytest.mark.unconfined  # the agent counts its runs in a file on the host
def test_a_new_run_after_a_gate_failed_draft_updates_that_pr(make_stack: MakeStack, tmp_path: Path) -> None:
    stack = make_stack(agent=agent(tmp_path, COUNTED.format(count=str(tmp_path / "count"))))
    run_track(stack)
    [draft] = pulls(stack)
    assert draft.draft and "> **Gates failed** — this PR is a draft: script scripts/check.sh (exit 1)" in (
        draft.body or ""
    )
    first_sha = git(stack, "rev-parse", BRANCH).strip()

    # `/track run` refuses while the PR is open, and `/track retry` retries only runs without a PR, so this
    # queues the next run of the track the way both do (the worker's path): lock, record, RQ job.
    svc = services(stack)
    first = svc.store.latest(svc.settings.repositories[0], 1)
    assert first is not None and first.state is RunState.PR_OPEN
    rerun = first.follow_up("U0ALICE", retry_of=first.id)
    assert svc.store.claim(rerun) is None
    enqueue_run(svc, rerun)
    stack.handle(":wait 120")

    [pr] = pulls(stack)  # the same PR, updated: not a second one
    assert pr.number == draft.number
    assert not pr.draft  # its gates pass now: ready for review
    assert git(stack, "rev-parse", BRANCH).strip() != first_sha  # pushed over with --force-with-lease
    assert git(stack, "rev-list", "--count", f"main..{BRANCH}").strip() == "1"
    assert pushed_file(stack, "app/hello.txt") == "hello, take 2\n"
    body = pr.body or ""
    assert "Gates failed" not in body and "script scripts/check.sh: **passed**" in body
    done = svc.store.get(rerun.id)
    assert done is not None and done.state is RunState.PR_OPEN and done.pr_number == draft.number
    [parent] = parents(stack)
    progress = [m.text for m in messages(stack) if m.thread_ts == parent.ts and "Pull request" in m.text]
    assert len(progress) == 2 and f"updated PR #{draft.number}, now ready for review" in progress[1], progress
