"""What trackbot adds to a run, against a fresh clone and against the warm-clone limit, in the same run.

A generated upstream (about 10,000 files, 2,000 commits) and an agent that changes one file.
trackbot's overhead is the whole run minus the agent's and the gates' own processes: preflight on
the cached clone (fetch, fresh branch, reset, clean), folding back what the agent did, guardrails,
format, the one commit, the push and the PR (over HTTP to the local GitHub twin). Two baselines, in
the same process on the same repository:

- fresh: what a person's script does from nothing: `git clone`, branch, commit, push;
- warm: the least any tool could do for a run, a shell script of plain git in a clone kept from
  the last run: `fetch`, branch from `origin/main`, the one-file change, commit, push.

Every run is a first run of the track: a new branch and a new PR (the bench deletes the branch
and closes the PR between runs, untimed). Median of several runs each; the last line is
machine-readable:

    overhead_s=<median> baseline_s=<fresh median> ratio=<overhead/fresh> warm_s=<warm median>
    warm_ratio=<overhead/warm> runs=<n> files=<n> commits=<n>

Usage: .venv/bin/python bench/run_overhead.py [--files 10000] [--commits 2000] [--runs 5]
       [--quick] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import platform
import pstats
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import defaultdict
from pathlib import Path

from pydantic import SecretStr

from bot.adapters.git import TrackClone
from bot.adapters.github import GitHubRepo
from bot.config import Settings
from bot.local.github_api import GitHubTwin
from bot.pipeline import RunContext, run_steps
from bot.redact import Redactor
from bot.repo_rules import DEFAULT_REPO_RULES
from bot.rules import DEFAULT_RULES
from bot.runs import Run
from bot.steps import RUN_STEPS

GIT_ENV = {
    **os.environ,
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_CONFIG_GLOBAL": os.devnull,
    "GIT_AUTHOR_NAME": "bench",
    "GIT_AUTHOR_EMAIL": "bench@example.com",
    "GIT_COMMITTER_NAME": "bench",
    "GIT_COMMITTER_EMAIL": "bench@example.com",
}
KNOB = '{\n  "plan_version": "v1",\n  "next_track": 1,\n  "tracks": {"1": {"slug": "one-file"}}\n}\n'
DOC = "# Track 1: one-file\n\nChange one file.\n"
TARGET = "src/d00/f0.txt"
TOKEN = "bench-token"
FULL_NAME = "bench/repo"
# The branch the repository's rules name for track 1 (preflight refuses any other).
BRANCH = DEFAULT_REPO_RULES.rules.branch(1, "one-file")
# The warm limit: plain git in a clone kept from the last run. $1 is the branch.
WARM_SCRIPT = f"""\
set -eu
git fetch --quiet origin
git checkout --quiet -f -B "$1" origin/main
echo changed >> {TARGET}
git commit --quiet -am "warm $1"
git push --quiet origin "$1"
"""


def git(*args: str, cwd: Path | None = None, stdin: bytes | None = None) -> str:
    """Run git, failing loudly."""
    return subprocess.run(
        ["git", *args], cwd=cwd, env=GIT_ENV, input=stdin, check=True, capture_output=True
    ).stdout.decode()


def generate_upstream(dest: Path, files: int, commits: int) -> Path:
    """A bare repository with `files` files spread over `commits` commits, via git fast-import."""
    git("init", "--quiet", "--bare", "--initial-branch=main", str(dest))
    chunks: list[bytes] = []
    per_commit = max(1, files // commits)
    written = 0
    for n in range(commits):
        lines = [f"commit refs/heads/main\nmark :{n + 1}\ncommitter bench <b@e.x> {1700000000 + n} +0000\n"]
        message = f"commit {n}"
        lines.append(f"data {len(message)}\n{message}\n")
        if n:
            lines.append(f"from :{n}\n")
        count = per_commit if n < commits - 1 else max(0, files - written)
        for i in range(count):
            content = f"file {written + i} of the generated repository\n" * 4
            lines.append(
                f"M 644 inline src/d{(written + i) % 100:02d}/f{written + i}.txt\ndata {len(content)}\n{content}\n"
            )
        written += count
        if n == 0:
            for path, text in (("configs/NEXT_TRACK.json", KNOB), ("docs/plan/v1/tracks/track-1-one-file.md", DOC)):
                lines.append(f"M 644 inline {path}\ndata {len(text.encode())}\n{text}\n")
        chunks.append("".join(lines).encode())
    git("fast-import", "--quiet", cwd=dest, stdin=b"".join(chunks))
    return dest


def agent_command(tmp: Path) -> str:
    """An agent that changes one file."""
    script = tmp / "agent.py"
    script.write_text(
        "import sys, pathlib\nsys.stdin.read()\n"
        f"p = pathlib.Path({TARGET!r}); p.write_text(p.read_text() + 'changed\\n')\n"
    )
    return f"{sys.executable} {script}"


def close_pull(twin: GitHubTwin, number: int) -> None:
    """Close a PR through the twin's API, as a person would, so the next run opens a new one."""
    request = urllib.request.Request(
        f"{twin.api_url}/repos/{FULL_NAME}/pulls/{number}",
        data=json.dumps({"state": "closed"}).encode(),
        method="PATCH",
        headers={"Authorization": f"token {TOKEN}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        response.read()


def delete_branch(upstream: Path, branch: str) -> None:
    """Remove a branch from the upstream (untimed), so the next run pushes a new one."""
    git("update-ref", "-d", f"refs/heads/{branch}", cwd=upstream)


def trackbot_run(upstream: Path, twin: GitHubTwin, work: Path, agent: str) -> tuple[float, dict[str, float]]:
    """One run through trackbot's steps: its time minus the agent's and the gates' processes, and
    what each step took (the agent's without its process)."""
    settings = Settings(
        slack_bot_token=SecretStr("xoxb-bench"),
        slack_signing_secret=SecretStr("bench-signing"),
        github_token=SecretStr(TOKEN),
        github_repository=FULL_NAME,
        github_api_url=twin.api_url,
        github_webhook_secret=SecretStr("bench-hook"),
        git_url=str(upstream),
        maintainers=["U0BENCH"],
        agent_command=agent,
        work_dir=work,
        github_write_interval_s=0,
    )
    run = Run(
        repo=FULL_NAME, track=1, slug="one-file", doc="", branch=BRANCH, requested_by="U0BENCH", channel="C0BENCH"
    )
    ctx = RunContext(
        run=run,
        settings=settings,
        rules=DEFAULT_RULES,
        clone=TrackClone(work / "clone", str(upstream), "main"),
        github=GitHubRepo(TOKEN, FULL_NAME, twin.api_url, write_interval_s=None),
        redact=Redactor(settings.secret_values()),
        holds_lock=lambda: True,
    )
    started = time.perf_counter()
    run_steps(ctx, RUN_STEPS, lambda _run: None)
    total = time.perf_counter() - started
    if run.pr_number is None:
        raise SystemExit(f"the run opened no PR: {[s.summary for s in run.steps]}")
    steps: dict[str, float] = {}
    excluded = 0.0
    for step in run.steps:
        own = step.duration_s
        if step.name == "agent":
            own -= step.commands[0].duration_s  # the agent's process; the rest is trackbot's git
        elif step.name == "gates":
            own = 0.0  # the repository's own checks (none here)
        excluded += step.duration_s - own
        steps[step.name] = own
    ctx.clone.clean()
    close_pull(twin, run.pr_number)
    delete_branch(upstream, BRANCH)
    return total - excluded, steps


def fresh_run(upstream: Path, tmp: Path, n: int) -> float:
    """What a plain script does from nothing: fresh clone, branch, one-file change, commit, push."""
    dest = tmp / f"fresh-{n}"
    branch = f"fresh-{n}"
    started = time.perf_counter()
    git("clone", "--quiet", "--no-local", str(upstream), str(dest))
    git("checkout", "--quiet", "-b", branch, cwd=dest)
    target = dest / TARGET
    target.write_text(target.read_text() + "changed\n")
    git("commit", "--quiet", "-am", f"fresh {n}", cwd=dest)
    git("push", "--quiet", "origin", branch, cwd=dest)
    elapsed = time.perf_counter() - started
    shutil.rmtree(dest)
    delete_branch(upstream, branch)
    return elapsed


def warm_run(clone: Path, script: Path, upstream: Path, n: int) -> float:
    """The warm limit: the shell script of plain git in a clone kept from the last run."""
    branch = f"warm-{n}"
    started = time.perf_counter()
    subprocess.run(["bash", str(script), branch], cwd=clone, env=GIT_ENV, check=True, capture_output=True)
    elapsed = time.perf_counter() - started
    delete_branch(upstream, branch)
    return elapsed


def main() -> int:
    """Generate, warm both clones once, then time the three ways in turn."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--commits", type=int, default=2_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="a check that it works: 2,000 files, 2 runs")
    parser.add_argument("--profile", action="store_true", help="cProfile trackbot's runs; print the top entries")
    args = parser.parse_args()
    if args.quick:
        args.files, args.commits, args.runs = 2_000, 200, 2
    if args.runs < 1 or args.files < 1 or args.commits < 1:
        parser.error("--files, --commits and --runs must be at least 1")
    with tempfile.TemporaryDirectory(prefix="trackbot-bench-") as tmp_name:
        tmp = Path(tmp_name)
        started = time.perf_counter()
        upstream = generate_upstream(tmp / "upstream.git", args.files, args.commits)
        print(f"generated {args.files} files in {args.commits} commits in {time.perf_counter() - started:.1f}s")
        agent = agent_command(tmp)
        work = tmp / "work"
        warm_clone = tmp / "warm"
        git("clone", "--quiet", "--no-local", str(upstream), str(warm_clone))
        script = tmp / "warm.sh"
        script.write_text(WARM_SCRIPT)
        profiler = cProfile.Profile() if args.profile else None
        with GitHubTwin(upstream, full_name=FULL_NAME, token=TOKEN) as twin:
            trackbot_run(upstream, twin, work, agent)  # the first run makes the cached clone
            warm_run(warm_clone, script, upstream, 0)  # and this one warms the script's
            overheads, fresh, warm = [], [], []
            steps: dict[str, list[float]] = defaultdict(list)
            for n in range(1, args.runs + 1):
                if profiler is not None:
                    profiler.enable()
                overhead, by_step = trackbot_run(upstream, twin, work, agent)
                if profiler is not None:
                    profiler.disable()
                overheads.append(overhead)
                for name, seconds in by_step.items():
                    steps[name].append(seconds)
                fresh.append(fresh_run(upstream, tmp, n))
                warm.append(warm_run(warm_clone, script, upstream, n))
                print(
                    f"run {n}: trackbot overhead {overheads[-1]:.3f}s, fresh clone {fresh[-1]:.3f}s, "
                    f"warm limit {warm[-1]:.3f}s"
                )
        if profiler is not None:
            pstats.Stats(profiler).sort_stats("cumulative").print_stats(30)
        overhead, baseline, warm_s = statistics.median(overheads), statistics.median(fresh), statistics.median(warm)
        print(
            "trackbot's steps (medians, the agent's and the gates' processes left out): "
            + ", ".join(f"{name} {statistics.median(seconds):.3f}s" for name, seconds in steps.items())
        )
        print(
            f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
            f"{git('--version').strip()}"
        )
        print(
            f"overhead_s={overhead:.3f} baseline_s={baseline:.3f} ratio={overhead / baseline:.3f} "
            f"warm_s={warm_s:.3f} warm_ratio={overhead / warm_s:.3f} runs={args.runs} files={args.files} "
            f"commits={args.commits}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
