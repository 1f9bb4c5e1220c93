"""A run of a track, end to end and for real: the local stack (Slack and GitHub twins, the bot's HTTP
app, a real worker process, real Redis), a real upstream git repository, real agent subprocesses.

Every test drives `/track run` as a user would and checks what a user sees: the run's Slack thread,
the PR in the GitHub twin, the branches and commits in the upstream repository.
"""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import pytest
from conftest import agent_script

from bot.local.console import LocalStack
from bot.local.github_api import PullRecord
from bot.local.sample import create_sample_repo
from bot.local.slack_api import SlackMessage
from bot.services import Services

MakeStack = Callable[..., LocalStack]  # the `make_stack` fixture

BRANCH = "track-1-hello-endpoint"
DOC = "docs/plan/v1/tracks/track-01-hello-endpoint.md"
PROGRESS_HEADER = "*Track 1: hello-endpoint* —"
REPORT_HEADER = "*Report — Track 1: hello-endpoint*"

# Every agent script starts with this: `put(path, text)` writes a file in the work tree (its cwd).
PRELUDE = """\
import json, os, pathlib, subprocess, sys, time

def put(path, text):
    target = pathlib.Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text)

"""


def agent(tmp_path: Path, body: str) -> str:
    """The command of an agent script: PRELUDE, then `body`."""
    return agent_script(tmp_path, PRELUDE + textwrap.dedent(body))


# -- what a user sees -------------------------------------------------------------------------------


def git(stack: LocalStack, *args: str) -> str:
    """A git command on the upstream (bare) repository."""
    return subprocess.run(
        ["git", "--git-dir", str(stack.repo), *args], capture_output=True, text=True, check=True
    ).stdout


def branches(stack: LocalStack) -> list[str]:
    """The upstream's branches."""
    return git(stack, "for-each-ref", "--format=%(refname:short)", "refs/heads").split()


def run_track(stack: LocalStack, wait: int = 120) -> None:
    """`/track run`, then wait until the run is over."""
    stack.handle("/track run")
    stack.handle(f":wait {wait}")


def messages(stack: LocalStack) -> list[SlackMessage]:
    """Every message in the Slack twin, as users see it now."""
    assert stack.slack is not None
    return stack.slack.snapshot()


def pulls(stack: LocalStack) -> list[PullRecord]:
    """Every PR in the GitHub twin."""
    assert stack.github is not None
    return stack.github.pulls()


def services(stack: LocalStack) -> Services:
    """The bot's services (its settings, store, queue) as the stack built them."""
    assert stack.services is not None
    return stack.services


def answers(stack: LocalStack) -> list[str]:
    """What the bot answered to the user's commands (through response_url), oldest first."""
    return [m.text for m in messages(stack) if m.kind == "response_url"]


def await_answers(stack: LocalStack, count: int, timeout: float = 30.0) -> list[str]:
    """The bot's first `count` answers, once they have all arrived."""
    deadline = time.monotonic() + timeout
    while len(answers(stack)) < count and time.monotonic() < deadline:
        time.sleep(0.02)
    return answers(stack)


def parents(stack: LocalStack) -> list[SlackMessage]:
    """The channel messages runs hang their threads from."""
    return [m for m in messages(stack) if m.kind == "message" and m.thread_ts is None]


def thread(stack: LocalStack) -> list[SlackMessage]:
    """The replies in the (only) run's thread, oldest first."""
    [parent] = parents(stack)
    assert parent.text.startswith("Track 1: hello-endpoint — queued by <@U0ALICE>")
    return [m for m in messages(stack) if m.thread_ts == parent.ts and m.ts != parent.ts]


def report(stack: LocalStack) -> str:
    """The report the run posted in its thread."""
    [found] = [m.text for m in thread(stack) if m.text.startswith(REPORT_HEADER)]
    return found


def pr_url(stack: LocalStack, number: int) -> str:
    """The browser URL of a PR in the GitHub twin."""
    assert stack.github is not None
    return f"{stack.github.html_url}/{stack.github.full_name}/pull/{number}"


def assert_nothing_pushed(stack: LocalStack) -> None:
    """No branch but main upstream, main untouched, no PR, and the thread says so."""
    assert branches(stack) == ["main"]
    assert git(stack, "rev-list", "--count", "main").strip() == "1"
    assert pulls(stack) == []
    assert "Nothing was pushed." in report(stack)


def assert_stopped(stack: LocalStack, *words: str) -> str:
    """The run ended in a STOP whose reason holds every one of `words`; nothing was pushed."""
    text = report(stack)
    stop_line = next(line for line in text.splitlines() if "*STOP*" in line)
    for word in words:
        assert word in stop_line, (word, text)
    assert_nothing_pushed(stack)
    return text


def pushed_file(stack: LocalStack, path: str) -> str:
    """A file as the track branch holds it upstream."""
    return git(stack, "show", f"{BRANCH}:{path}")


def pushed_paths(stack: LocalStack) -> list[str]:
    """Paths the track branch changes against main."""
    return git(stack, "diff", "--name-only", "main", BRANCH).split()


def assert_one_trackbot_commit(stack: LocalStack) -> None:
    """The branch is main plus exactly one commit `chore(track1): hello-endpoint` by trackbot."""
    assert git(stack, "rev-list", "--count", f"main..{BRANCH}").strip() == "1"
    assert git(stack, "rev-parse", f"{BRANCH}^").strip() == git(stack, "rev-parse", "main").strip()
    message, author, committer = git(stack, "log", "-1", "--format=%B%x00%an <%ae>%x00%cn", BRANCH).split("\0")
    assert message.strip() == "chore(track1): hello-endpoint"
    assert author == "trackbot <trackbot@users.noreply.github.com>"
    assert committer.strip() == "trackbot"


def gate_line(text: str, name: str) -> str:
    """The line of a report's gates section about one gate."""
    return next(line for line in text.splitlines() if line.strip().lstrip("- ").startswith(f"{name}:"))


# -- the happy path --------------------------------------------------------------------------------


def test_run_pushes_one_commit_opens_the_pr_and_reports_in_one_thread(make_stack: MakeStack, tmp_path: Path) -> None:
    stack = make_stack(
        agent=agent(
            tmp_path,
            """\
        put("scripts/hello.sh", "#!/usr/bin/env bash\\nset -euo pipefail\\necho 'hello from track 1'\\n")
        put("app/hello.txt", "hello\\n")
        print("added scripts/hello.sh and app/hello.txt; what remains: nothing")
    """,
        )
    )
    run_track(stack)

    assert BRANCH in branches(stack)
    assert_one_trackbot_commit(stack)
    assert pushed_paths(stack) == ["app/hello.txt", "scripts/hello.sh"]

    [pr] = pulls(stack)
    assert (pr.number, pr.title, pr.head_ref, pr.base_ref) == (1, "Track 1: hello-endpoint", BRANCH, "main")
    assert not pr.draft
    assert pr.head_sha == git(stack, "rev-parse", BRANCH).strip()
    body = pr.body or ""
    for expected in (
        "Track: **1** (`hello-endpoint`), plan `v1`",
        f"- Doc: `{DOC}`",
        "- `A` `app/hello.txt`",
        "- `A` `scripts/hello.sh`",
        "script scripts/hello.sh: **passed** (`bash scripts/hello.sh` → exit 0",
        "`git push --quiet",
        "→ exit 0",
        "### What remains",
    ):
        assert expected in body, expected
    assert "[agent] `" in body and "agent.py` → exit 0" in body
    remains = body.split("### What remains", 1)[1].strip().splitlines()
    assert remains[0].startswith("- "), "the PR body says what remains"

    replies = thread(stack)
    progress, final = replies  # the progress message, then the report: nothing else
    assert progress.text.startswith(PROGRESS_HEADER) and progress.updates > 0
    assert [m for m in replies if m.text.startswith(PROGRESS_HEADER)] == [progress]
    assert "— PR open" in progress.text.splitlines()[0]
    assert final.text.startswith(REPORT_HEADER)
    assert f"PR #1: {pr_url(stack, 1)}" in final.text
    assert "`app/hello.txt`" in final.text and "`scripts/hello.sh`" in final.text


# -- guardrails --------------------------------------------------------------------------------------


def test_run_refuses_change_under_docs_api(make_stack: MakeStack, tmp_path: Path) -> None:
    stack = make_stack(
        agent=agent(
            tmp_path,
            """\
        put("app/hello.txt", "hello\\n")
        put("docs/api/openapi.yaml", "openapi: 3.1.0\\n")
        put("docs/api/cancel.yaml", "paths: {}\\n")
    """,
        )
    )
    run_track(stack)
    text = assert_stopped(stack, "forbidden", "`docs/api/openapi.yaml`", "`docs/api/cancel.yaml`")
    assert "`app/hello.txt`" not in text.split("*Changed files:*")[0]


def test_a_run_stopped_at_the_guardrails_says_its_gates_never_ran(make_stack: MakeStack, tmp_path: Path) -> None:
    stack = make_stack(
        agent=agent(
            tmp_path,
            """\
        put("app/main.go", "package main\\n")
        put("docs/api/openapi.yaml", "openapi: 3.1.0\\n")
    """,
        )
    )
    run_track(stack)
    text = assert_stopped(stack, "forbidden", "`docs/api/openapi.yaml`")
    assert "gates not run: the run stopped at the guardrails" in text
    assert "no gate applies" not in text


def test_run_refuses_change_under_docs_product_agentos_prs(make_stack: MakeStack, tmp_path: Path) -> None:
    stack = make_stack(
        agent=agent(
            tmp_path,
            """\
        put("docs/product/agentos-prs/0001-hello.md", "# decided\\n")
    """,
        )
    )
    run_track(stack)
    assert_stopped(stack, "forbidden", "`docs/product/agentos-prs/0001-hello.md`")


def test_run_refuses_change_to_the_knob(make_stack: MakeStack, tmp_path: Path) -> None:
    stack = make_stack(
        agent=agent(
            tmp_path,
            """\
        knob = json.loads(pathlib.Path("configs/NEXT_TRACK.json").read_text())
        knob["next_track"] = 2
        put("configs/NEXT_TRACK.json", json.dumps(knob, indent=2))
        put("app/hello.txt", "hello\\n")
    """,
        )
    )
    run_track(stack)
    text = assert_stopped(stack, "forbidden", "`configs/NEXT_TRACK.json`")
    assert "only by a maintainer's advance" in text


def test_run_refuses_rename_out_of_docs_api(make_stack: MakeStack, tmp_path: Path) -> None:
    stack = make_stack(
        agent=agent(
            tmp_path,
            """\
        pathlib.Path("app").mkdir(exist_ok=True)
        os.rename("docs/api/openapi.yaml", "app/openapi.yaml")
    """,
        )
    )
    run_track(stack)
    assert_stopped(stack, "forbidden", "`docs/api/openapi.yaml`")


def test_run_stops_when_the_agent_changed_nothing(make_stack: MakeStack, tmp_path: Path) -> None:
    stack = make_stack(
        agent=agent(
            tmp_path,
            """\
        print("I looked around and decided to change nothing.")
    """,
        )
    )
    run_track(stack)
    assert_stopped(stack, "the agent changed nothing")


# -- what the agent does to git -------------------------------------------------------------------


def test_run_folds_the_agents_own_commits_into_one(make_stack: MakeStack, tmp_path: Path) -> None:
    # The agent never sees trackbot's git: one that wants to commit makes a repository of its own in
    # the tree; trackbot removes it and keeps the files.
    stack = make_stack(
        agent=agent(
            tmp_path,
            """\
        ident = ["-c", "user.name=Agent", "-c", "user.email=agent@example.com", "-c", "commit.gpgsign=false"]
        subprocess.run(["git", "init", "-q"], check=True)
        put("app/one.txt", "1\\n")
        subprocess.run("git add -A", shell=True, check=True)
        subprocess.run(["git", *ident, "commit", "-q", "-m", "wip: one"], check=True)
        put("app/two.txt", "2\\n")
        subprocess.run("git add -A", shell=True, check=True)
        subprocess.run(["git", *ident, "commit", "-q", "-m", "wip: two"], check=True)
    """,
        )
    )
    run_track(stack)
    assert_one_trackbot_commit(stack)
    assert pushed_paths(stack) == ["app/one.txt", "app/two.txt"]
    assert "Agent" not in git(stack, "log", "--format=%an %cn %s", f"main..{BRANCH}")
    [pr] = pulls(stack)
    assert pr.head_ref == BRANCH


# -- gates ------------------------------------------------------------------------------------------


def test_run_opens_a_draft_when_an_added_script_fails(make_stack: MakeStack, tmp_path: Path) -> None:
    stack = make_stack(
        agent=agent(
            tmp_path,
            """\
        put("scripts/x.sh", "echo 'x: the smoke test is red'\\nexit 1\\n")
    """,
        )
    )
    run_track(stack)
    [pr] = pulls(stack)
    assert pr.draft
    assert "**failed** (`bash scripts/x.sh` → exit 1" in gate_line(pr.body or "", "script scripts/x.sh")
    assert "x: the smoke test is red" in (pr.body or "")
    text = report(stack)
    assert f"PR #1 (draft: a gate failed): {pr_url(stack, 1)}" in text
    line = gate_line(text, "script scripts/x.sh")
    assert "failed" in line and "exit 1" in line
    assert "Make `bash scripts/x.sh` pass" in text
    assert_one_trackbot_commit(stack)


def test_run_keeps_what_a_gate_writes_out_of_the_commit(make_stack: MakeStack, tmp_path: Path) -> None:
    stack = make_stack(
        agent=agent(
            tmp_path,
            """\
        put("scripts/x.sh", "echo 'gate ran' > gate-output.log\\nmkdir -p build && touch build/out\\n")
    """,
        )
    )
    run_track(stack)
    [pr] = pulls(stack)
    assert not pr.draft
    assert "passed" in gate_line(report(stack), "script scripts/x.sh")
    assert pushed_paths(stack) == ["scripts/x.sh"]
    assert "gate-output.log" not in git(stack, "ls-tree", "-r", "--name-only", BRANCH)
    assert "gate-output.log" not in (pr.body or "") and "gate-output.log" not in report(stack)


def test_run_reports_go_test_not_run_when_go_is_missing(make_stack: MakeStack, tmp_path: Path) -> None:
    if shutil.which("go") is not None:
        pytest.skip("go is installed here; this test is about a worker without it")
    stack = make_stack(
        agent=agent(
            tmp_path,
            """\
        put("app/greeting/greeting.go", "package greeting\\n\\nfunc Hello() string { return \\"hello\\" }\\n")
    """,
        )
    )
    run_track(stack)
    [pr] = pulls(stack)
    for text in (report(stack), pr.body or ""):
        line = gate_line(text, "go test")
        assert "not run" in line and "not installed" in line, line
        assert "passed" not in line, line
        assert "Run the gate `go test ./...` yourself" in text
    assert pushed_paths(stack) == ["app/greeting/greeting.go"]


# -- the agent's process -------------------------------------------------------------------------


def test_agent_sees_the_track_variables_and_none_of_trackbots_secrets(
    make_stack: MakeStack, tmp_path: Path, redis_url: str
) -> None:
    stack = make_stack(
        agent=agent(
            tmp_path,
            """\
        put("env.txt", json.dumps(dict(os.environ), indent=1, sort_keys=True))
    """,
        )
    )
    run_track(stack)
    text = pushed_file(stack, "env.txt")
    env = json.loads(text)
    assert env["TRACK_NUM"] == "1"
    assert env["TRACK_SLUG"] == "hello-endpoint"
    assert env["TRACK_DOC"] == DOC
    assert env["PLAN_VERSION"] == "v1"
    settings = services(stack).settings
    secrets = {
        "Slack bot token": settings.slack_bot_token.get_secret_value(),
        "Slack signing secret": settings.slack_signing_secret.get_secret_value(),
        "GitHub token": settings.github_token.get_secret_value(),
        "GitHub webhook secret": settings.github_webhook_secret.get_secret_value(),
    }
    for name, value in secrets.items():
        assert value not in text, f"the agent saw the {name}"
    assert "REDIS_URL" not in env and redis_url not in text
    assert not [name for name in env if name.startswith(("SLACK_", "GITHUB_"))]


def test_agent_reads_the_prompt_with_the_track_doc_on_stdin_until_eof(make_stack: MakeStack, tmp_path: Path) -> None:
    stack = make_stack(
        agent=agent(
            tmp_path,
            """\
        prompt = sys.stdin.read()  # returns only because trackbot closes stdin after the prompt
        put("prompt.txt", prompt)
    """,
        )
    )
    run_track(stack, wait=30)
    prompt = pushed_file(stack, "prompt.txt")
    doc = git(stack, "show", f"main:{DOC}")
    assert "Track 1 (hello-endpoint)" in prompt
    assert doc.strip() in prompt
    assert "docs/api/" in prompt and "configs/NEXT_TRACK.json" in prompt


def test_run_stops_when_the_agent_binary_is_missing(make_stack: MakeStack) -> None:
    stack = make_stack(agent="/nonexistent/agent")
    run_track(stack)
    assert_stopped(stack, "could not start", "TRACKBOT_AGENT_COMMAND")


def test_run_stops_when_the_agent_exits_non_zero(make_stack: MakeStack, tmp_path: Path) -> None:
    stack = make_stack(
        agent=agent(
            tmp_path,
            """\
        put("app/half-done.txt", "half\\n")
        print("I give up", file=sys.stderr)
        sys.exit(3)
    """,
        )
    )
    run_track(stack)
    assert_stopped(stack, "the agent exited 3")


# -- the knob --------------------------------------------------------------------------------------


def upstream_with_knob(tmp_path: Path, knob_text: str) -> Path:
    """The sample repository, with a maintainer's commit replacing the knob on main."""
    repo = create_sample_repo(tmp_path / "upstream.git")
    work = tmp_path / "maintainer"
    subprocess.run(["git", "clone", "-q", str(repo), str(work)], check=True)
    (work / "configs" / "NEXT_TRACK.json").write_text(knob_text)
    ident = ["-c", "user.name=Maintainer", "-c", "user.email=maintainer@example.com", "-c", "commit.gpgsign=false"]
    subprocess.run(["git", *ident, "commit", "-q", "-am", "Edit the knob by hand"], cwd=work, check=True)
    subprocess.run(["git", "push", "-q", "origin", "main"], cwd=work, check=True)
    return repo


def sample_knob() -> dict[str, Any]:
    from bot.local.sample import SAMPLE_KNOB

    return json.loads(json.dumps(SAMPLE_KNOB))


def assert_no_run_queued(stack: LocalStack) -> None:
    assert services(stack).queue.count == 0
    assert services(stack).store.runs(services(stack).settings.github_repository) == []
    assert parents(stack) == []
    assert branches(stack) == ["main"] and pulls(stack) == []


def test_run_stops_when_the_next_track_has_no_doc(make_stack: MakeStack, tmp_path: Path) -> None:
    knob = sample_knob()
    knob["next_track"] = 4
    stack = make_stack(repo=upstream_with_knob(tmp_path, json.dumps(knob, indent=2)))
    stack.handle("/track run")
    answer = answers(stack)[-1]
    assert answer.startswith(":octagonal_sign: STOP — No doc for track 4: looked in")
    assert 'no entry "4"' in answer and "docs/plan/v1/tracks" in answer
    assert "Tracks 1" in answer
    assert_no_run_queued(stack)


def test_run_names_the_problem_in_a_malformed_knob(make_stack: MakeStack, tmp_path: Path) -> None:
    knob = sample_knob()
    knob["next_track"] = "soon"
    stack = make_stack(repo=upstream_with_knob(tmp_path, json.dumps(knob, indent=2)))
    stack.handle("/track run")
    answer = answers(stack)[-1]
    assert "configs/NEXT_TRACK.json" in answer
    assert "next_track" in answer and '"soon"' in answer and "whole number" in answer
    assert_no_run_queued(stack)


# -- secrets ---------------------------------------------------------------------------------------


def test_a_leaked_token_is_redacted_in_the_thread_and_the_pr(make_stack: MakeStack, tmp_path: Path) -> None:
    command = agent(tmp_path, "")
    stack = make_stack(agent=command)
    token = services(stack).settings.github_token.get_secret_value()
    # The agent "knows" the token (as if it had leaked): it prints it, and its gate script does too.
    rewritten = agent(
        tmp_path,
        f"""\
        TOKEN = {token!r}
        print("found a token:", TOKEN, flush=True)
        put("scripts/leak.sh", "echo 'the token is {token}'\\nexit 1\\n")
        print("done; the token was", TOKEN)
    """,
    )
    assert rewritten == command  # the same script file, read when the run starts
    run_track(stack)

    [pr] = pulls(stack)
    body = pr.body or ""
    assert token not in body and token not in pr.title
    assert "found a token: [redacted]" in body  # the agent's summary
    assert "the token is [redacted]" in body  # the failed gate's output
    text = report(stack)
    assert "the token is [redacted]" in text
    for message in messages(stack):
        assert token not in message.text and token not in json.dumps(message.blocks)
    assert token not in cast(io.StringIO, stack.out).getvalue()  # every post and update, as the console printed them
    assert token not in (stack.work_dir / "worker.log").read_text(errors="replace")


# -- one run at a time -----------------------------------------------------------------------------


def test_a_second_run_while_one_is_active_links_to_the_first(make_stack: MakeStack, tmp_path: Path) -> None:
    stack = make_stack(
        agent=agent(
            tmp_path,
            """\
        time.sleep(2)
        put("app/slow.txt", "slow\\n")
    """,
        )
    )
    # Three at once: the lock lets exactly one through.
    racers = [threading.Thread(target=stack.slash, args=("/track", "run")) for _ in range(3)]
    for racer in racers:
        racer.start()
    for racer in racers:
        racer.join()
    await_answers(stack, 3)
    # And one more while the first is still queued or running.
    stack.slash("/track", "run")
    replies = await_answers(stack, 4)
    stack.handle(":wait 120")

    assert len(replies) == 4, replies
    queued = [a for a in replies if a.startswith("Queued ")]
    assert len(queued) == 1, replies
    [parent] = parents(stack)
    link = services(stack).poster.permalink(parent.channel, parent.ts)
    assert link and link in queued[0]
    refusals = [a for a in replies if a is not queued[0]]
    for refusal in refusals:
        assert "Track 1 is already" in refusal and link in refusal, refusal

    assert branches(stack) == ["main", BRANCH]
    assert_one_trackbot_commit(stack)
    assert len(pulls(stack)) == 1
    assert [m.text.startswith(REPORT_HEADER) for m in thread(stack)].count(True) == 1


def test_a_report_over_githubs_body_limit_opens_the_pr_and_goes_on_in_its_comments(
    make_stack: MakeStack, tmp_path: Path
) -> None:
    # 2,500 changed files: the Changed files list alone is well over GitHub's 65,536 characters.
    body = """\
    for n in range(2500):
        put(f"app/generated/some-rather-long-directory-name/file-{n:05d}.txt", f"{n}\\n")
    """
    stack = make_stack(agent=agent(tmp_path, body))
    run_track(stack, wait=240)
    [pr] = pulls(stack)
    assert pr.body is not None and len(pr.body) <= 65536
    assert "it goes on in" in pr.body and "comment(s) below" in pr.body
    comments = stack.github.comments[pr.number]
    assert comments and all(len(c) <= 65536 for c in comments)
    whole = pr.body + "".join(comments)
    listed = [line for line in whole.splitlines() if line.startswith("- `A` `app/generated/")]
    assert len(listed) == 2500 and listed == sorted(listed)  # every file, in order
    assert "PR body and its first" in report(stack)


def test_a_repository_without_drafts_gets_a_normal_pr_marked_as_failing(make_stack: MakeStack, tmp_path: Path) -> None:
    stack = make_stack(agent=agent(tmp_path, 'put("scripts/x.sh", "echo red\\nexit 1\\n")\n'))
    stack.github.drafts_supported = False
    run_track(stack)
    [pr] = pulls(stack)
    assert not pr.draft and pr.title.startswith("[gates failing] Track 1")
    assert "Gates failed** — do not merge" in (pr.body or "") and "this PR is a draft" not in (pr.body or "")
    text = report(stack)
    assert f"PR #1 (gates failing): {pr_url(stack, 1)}" in text and "draft:" not in text
    assert any("GitHub refused a draft" in m.text for m in thread(stack))  # the progress says why
