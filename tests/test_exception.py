"""Guardrail exceptions, through the real worker: a STOP whose forbidden paths the doc explicitly allows
keeps its change and offers `approve_exception`; granting it runs the held change (no agent), lets
exactly those paths through, and opens the PR with the exception at the top. Everything else STOPs.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from test_rules_run import track_doc, upstream_with
from test_run import BRANCH, DOC, MakeStack, agent, branches, git, parents, pulls, report, run_track, services

from bot.exception import ExceptionRefused, grant_exception
from bot.local.console import LocalStack
from bot.local.slack_api import SlackMessage
from bot.runs import Run, RunState

# The sandbox hides the host from agents and gates; here the agent counts its calls in a file on the host.
pytestmark = pytest.mark.unconfined

DOC_ALLOWING_THE_SPEC = track_doc("- `test -s app/hello.txt`\n", allowed="- `app/`\n- `docs/api/openapi.yaml`\n")
SPEC_AGENT = """\
calls = pathlib.Path({calls!r})
calls.write_text(calls.read_text() + "x" if calls.exists() else "x")
with open("docs/api/openapi.yaml", "a") as spec:
    spec.write("  /hello:\\n    get:\\n      summary: Say hello\\n")
put("app/hello.txt", "hello\\n")
pathlib.Path("app/logo.bin").write_bytes(bytes(range(256)) * 4)  # binary: NULs, not UTF-8
pathlib.Path("app/crlf.txt").write_bytes(b"one\\r\\ntwo\\r\\n")
{more}"""
ALICE = "U0ALICE"


def start(make_stack: MakeStack, tmp_path: Path, more: str = "", doc: str = DOC_ALLOWING_THE_SPEC) -> LocalStack:
    body = SPEC_AGENT.format(calls=str(tmp_path / "agent-calls"), more=more)
    return make_stack(repo=upstream_with(tmp_path, {DOC: doc}), agent=agent(tmp_path, body))


def latest(stack: LocalStack) -> Run:
    svc = services(stack)
    run = svc.store.latest(svc.settings.repositories[0], 1)
    assert run is not None
    return run


def reports(stack: LocalStack) -> list[SlackMessage]:
    """The runs' reports in the thread, oldest first."""
    assert stack.slack is not None
    return [m for m in stack.slack.snapshot() if m.text.startswith("*Report —")]


def blob(stack: LocalStack, ref: str) -> bytes:
    """A file of the upstream repository, byte for byte."""
    return subprocess.run(["git", "--git-dir", str(stack.repo), "show", ref], capture_output=True, check=True).stdout


def test_a_stop_the_doc_allows_is_kept_and_a_granted_exception_opens_the_pr(
    make_stack: MakeStack, tmp_path: Path
) -> None:
    stack = start(make_stack, tmp_path)
    run_track(stack)

    stopped = latest(stack)
    assert stopped.state is RunState.STOPPED
    assert stopped.exception_paths == ["docs/api/openapi.yaml"]
    assert stopped.held_base == git(stack, "rev-parse", "main").strip()
    assert branches(stack) == ["main"] and pulls(stack) == []
    svc = services(stack)
    held = svc.store.held_change(stopped.id)
    assert held is not None and held[0] == stopped.held_base and b"GIT binary patch" in held[1]
    ttl = svc.redis.ttl(f"trackbot:held:{stopped.id}")
    assert 13 * 86400 < ttl <= 14 * 86400

    [message] = reports(stack)
    text = message.text
    assert message.buttons() == [("approve_exception", "Approve exception", stopped.id)]
    assert "*STOP* — the change touches forbidden paths: `docs/api/openapi.yaml`. Nothing was pushed." in text
    assert "*Guardrail exception possible:*" in text
    conflict = "the doc allows `docs/api/openapi.yaml`, the procedure forbids `docs/api/` (`docs/api/openapi.yaml`)"
    assert conflict in text
    assert "A maintainer may approve the guardrail exception" in text

    granted = grant_exception(svc, stopped.id, ALICE)
    assert granted.state is RunState.QUEUED and granted.exception_of == stopped.id
    assert (granted.branch, granted.thread_ts, granted.channel) == (stopped.branch, stopped.thread_ts, stopped.channel)
    stack.handle(":wait 120")

    done = svc.store.get(granted.id)
    assert done is not None and done.state is RunState.PR_OPEN, done
    [pr] = pulls(stack)
    body = pr.body or ""
    assert body.startswith(f"> **Guardrail exception** granted by `@{ALICE}` for `docs/api/openapi.yaml`")
    assert "held from run" in body and stopped.id in body
    # Exactly the held change, byte for byte, in one commit on the held base; the agent ran once only.
    assert (tmp_path / "agent-calls").read_text() == "x"
    assert git(stack, "rev-list", "--count", f"main..{BRANCH}").strip() == "1"
    assert git(stack, "rev-parse", f"{BRANCH}^").strip() == stopped.held_base
    assert blob(stack, f"{BRANCH}:app/logo.bin") == bytes(range(256)) * 4
    assert blob(stack, f"{BRANCH}:app/crlf.txt") == b"one\r\ntwo\r\n"
    assert blob(stack, f"{BRANCH}:docs/api/openapi.yaml").endswith(b"      summary: Say hello\n")
    assert git(stack, "diff", "--name-only", "main", BRANCH).split() == [
        "app/crlf.txt",
        "app/hello.txt",
        "app/logo.bin",
        "docs/api/openapi.yaml",
    ]
    # In the same thread, with the exception at the top of its report; the STOP's button is spent.
    assert len(parents(stack)) == 1
    first, second = reports(stack)
    assert second.thread_ts == first.thread_ts and second.buttons() == []
    assert (
        second.text.splitlines()[1]
        == f":unlock: *Guardrail exception* granted by <@{ALICE}> for `docs/api/openapi.yaml`"
    )
    assert svc.store.get(stopped.id).exception_run == granted.id  # type: ignore[union-attr]

    with pytest.raises(ExceptionRefused, match="already granted"):
        grant_exception(svc, stopped.id, ALICE)


PROSE_DOC = track_doc(
    "- `test -s app/hello.txt`\n- Update OpenAPI with the hello endpoint\n",
    allowed="- `app/` hello handler\n- OpenAPI spec for the cancel endpoint\n- README sections **only if needed**\n",
)


def test_a_stop_on_a_file_the_docs_words_name_offers_the_exception_and_the_pr_quotes_them(
    make_stack: MakeStack, tmp_path: Path
) -> None:
    body = 'put("docs/api/runs/openapi.yaml", "openapi: 3.1.0\\n")\nput("app/hello.txt", "hello\\n")\n'
    stack = make_stack(repo=upstream_with(tmp_path, {DOC: PROSE_DOC}), agent=agent(tmp_path, body))
    run_track(stack)
    stopped = latest(stack)
    assert stopped.state is RunState.STOPPED and stopped.exception_paths == ["docs/api/runs/openapi.yaml"]
    [message] = reports(stack)
    assert message.buttons() == [("approve_exception", "Approve exception", stopped.id)]
    words = 'the doc\'s line 10 ("OpenAPI spec for the cancel endpoint") names `docs/api/runs/openapi.yaml`'
    assert words in message.text and "the procedure forbids `docs/api/`" in message.text
    assert "gates not run: the run stopped at the guardrails" in message.text

    granted = grant_exception(services(stack), stopped.id, ALICE)
    stack.handle(":wait 120")
    done = services(stack).store.get(granted.id)
    assert done is not None and done.state is RunState.PR_OPEN, done
    [pr] = pulls(stack)
    head = (pr.body or "").splitlines()[0]
    assert head == (
        f"> **Guardrail exception** granted by `@{ALICE}` for `docs/api/runs/openapi.yaml`, as the doc's words "
        'name them (line 10: "OpenAPI spec for the cancel endpoint")'
    )
    assert '- `app/hello.txt` — line 9: "`app/` hello handler" (`app/`)'.replace("`app/` hello", "app/ hello") in (
        pr.body or ""
    )


def test_a_stop_with_any_path_the_doc_does_not_allow_offers_no_exception(make_stack: MakeStack, tmp_path: Path) -> None:
    stack = start(make_stack, tmp_path, more='put("docs/product/agentos-prs/0002.md", "# decided\\n")\n')
    run_track(stack)
    stopped = latest(stack)
    assert stopped.state is RunState.STOPPED and stopped.exception_paths == [] and stopped.held_base is None
    assert services(stack).store.held_change(stopped.id) is None
    text = report(stack)
    assert "`docs/product/agentos-prs/0002.md`" in text and "Guardrail exception possible" not in text
    assert [m.buttons() for m in reports(stack)] == [[]]
    with pytest.raises(ExceptionRefused, match="did not stop on forbidden paths its doc allows"):
        grant_exception(services(stack), stopped.id, ALICE)


def test_the_rules_file_is_never_an_exception_even_when_the_doc_names_it(make_stack: MakeStack, tmp_path: Path) -> None:
    doc = track_doc("- `test -s app/hello.txt`\n", allowed="- `app/`\n- `.trackbot.toml`\n")
    stack = start(make_stack, tmp_path, doc=doc, more='put(".trackbot.toml", "[gates]\\n")\n')
    run_track(stack)
    stopped = latest(stack)
    assert stopped.state is RunState.STOPPED and stopped.exception_paths == []
    assert "`.trackbot.toml`" in report(stack)


def test_grant_checks_the_run_and_refuses_what_it_cannot_grant(make_stack: MakeStack, tmp_path: Path) -> None:
    stack = start(make_stack, tmp_path)
    run_track(stack)
    stopped = latest(stack)
    svc = services(stack)

    with pytest.raises(ExceptionRefused, match="There is no run"):
        grant_exception(svc, "run-nope", ALICE)

    # Another run holds the repository: refused, and it can be granted once that run is done.
    other = Run(repo=stopped.repo, track=1, slug="x", doc=DOC, branch="b", requested_by=ALICE, channel="C1")
    svc.store.save(other)
    assert svc.store.try_lock(other.repo, other.id) is None
    with pytest.raises(ExceptionRefused, match="one run per repository"):
        grant_exception(svc, stopped.id, ALICE)
    assert svc.store.release_lock(other.repo, other.id)

    # The held change expired.
    held = svc.store.held_change(stopped.id)
    assert held is not None
    svc.redis.delete(f"trackbot:held:{stopped.id}")
    with pytest.raises(ExceptionRefused, match="no longer kept"):
        grant_exception(svc, stopped.id, ALICE)
    svc.store.hold_change(stopped.id, *held)

    # A newer run of the track (here: still queued) makes the exception moot.
    newer = Run(repo=stopped.repo, track=1, slug="x", doc=DOC, branch="b", requested_by=ALICE, channel="C1")
    svc.store.add(newer)
    with pytest.raises(ExceptionRefused, match="has a newer run"):
        grant_exception(svc, stopped.id, ALICE)


def test_any_other_forbidden_change_in_the_held_patch_still_stops(make_stack: MakeStack, tmp_path: Path) -> None:
    stack = start(make_stack, tmp_path)
    run_track(stack)
    stopped = latest(stack)
    svc = services(stack)
    held = svc.store.held_change(stopped.id)
    assert held is not None
    sneaky = (
        b"diff --git a/docs/product/agentos-prs/0003.md b/docs/product/agentos-prs/0003.md\n"
        b"new file mode 100644\n"
        b"--- /dev/null\n"
        b"+++ b/docs/product/agentos-prs/0003.md\n"
        b"@@ -0,0 +1 @@\n"
        b"+# sneaked in\n"
    )
    svc.store.hold_change(stopped.id, held[0], held[1] + sneaky)

    granted = grant_exception(svc, stopped.id, ALICE)
    stack.handle(":wait 120")
    done = svc.store.get(granted.id)
    assert done is not None and done.state is RunState.STOPPED, done
    assert done.stop_reason == "the change touches forbidden paths: `docs/product/agentos-prs/0003.md`"
    assert done.exception_paths == ["docs/api/openapi.yaml"]  # no new exception is offered by an exception
    assert branches(stack) == ["main"] and pulls(stack) == []
    assert (tmp_path / "agent-calls").read_text() == "x"
    assert [m.buttons() != [] for m in reports(stack)] == [True, False]
    with pytest.raises(ExceptionRefused, match="already granted"):
        grant_exception(svc, stopped.id, ALICE)
    with pytest.raises(ExceptionRefused, match="no exception to grant"):
        grant_exception(svc, granted.id, ALICE)
