"""What trackbot adds to a run, against a plain clone + branch + commit + push, in the same run.

A generated upstream (about 10,000 files, 2,000 commits) and an agent that changes one file.
trackbot's overhead is the whole run minus the agent and the gates: preflight on the cached clone
(fetch, fresh branch, reset, clean), guardrails, format, the one commit, the push and the PR (over
HTTP to the local GitHub twin). The baseline is what a person's script would do: `git clone`,
branch, commit, push. Median of several runs each; the last line is machine-readable:

    overhead_s=<median> baseline_s=<median> ratio=<overhead/baseline>

Usage: .venv/bin/python bench/run_overhead.py [--files 10000] [--commits 2000] [--runs 5]
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pydantic import SecretStr

from bot.adapters.git import TrackClone
from bot.adapters.github import GitHubRepo
from bot.config import Settings
from bot.local.github_api import GitHubTwin
from bot.pipeline import RunContext, run_steps
from bot.redact import Redactor
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
        "p = pathlib.Path('src/d00/f0.txt'); p.write_text(p.read_text() + 'changed\\n')\n"
    )
    return f"{sys.executable} {script}"


def trackbot_run(upstream: Path, twin: GitHubTwin, work: Path, agent: str, n: int) -> float:
    """One run through trackbot's steps; returns its time minus the agent's and the gates'."""
    settings = Settings(
        slack_bot_token=SecretStr("xoxb-bench"),
        slack_signing_secret=SecretStr("bench-signing"),
        github_token=SecretStr("bench-token"),
        github_repository="bench/repo",
        github_api_url=twin.api_url,
        github_webhook_secret=SecretStr("bench-hook"),
        git_url=str(upstream),
        maintainers=["U0BENCH"],
        agent_command=agent,
        work_dir=work,
        github_write_interval_s=0,
    )
    branch = f"track-1-one-file-{n}"
    run = Run(
        repo="bench/repo", track=1, slug="one-file", doc="", branch=branch, requested_by="U0BENCH", channel="C0BENCH"
    )
    ctx = RunContext(
        run=run,
        settings=settings,
        rules=DEFAULT_RULES,
        clone=TrackClone(work / "clone", str(upstream), "main"),
        github=GitHubRepo("bench-token", "bench/repo", twin.api_url, write_interval_s=None),
        redact=Redactor(settings.secret_values()),
        holds_lock=lambda: True,
    )
    started = time.perf_counter()
    run_steps(ctx, RUN_STEPS, lambda _run: None)
    total = time.perf_counter() - started
    assert run.pr_number is not None, [s.summary for s in run.steps]
    excluded = sum(s.duration_s for s in run.steps if s.name in ("agent", "gates"))
    ctx.clone.clean()
    return total - excluded


def baseline_run(upstream: Path, tmp: Path, n: int) -> float:
    """What a plain script does: fresh clone, branch, one-file change, commit, push."""
    dest = tmp / f"baseline-{n}"
    started = time.perf_counter()
    git("clone", "--quiet", "--no-local", str(upstream), str(dest))
    git("checkout", "--quiet", "-b", f"baseline-{n}", cwd=dest)
    target = dest / "src/d00/f0.txt"
    target.write_text(target.read_text() + "changed\n")
    git("commit", "--quiet", "-am", f"baseline {n}", cwd=dest)
    git("push", "--quiet", "origin", f"baseline-{n}", cwd=dest)
    elapsed = time.perf_counter() - started
    shutil.rmtree(dest)
    return elapsed


def main() -> int:
    """Generate, warm the cache once, then time both ways alternately."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--commits", type=int, default=2_000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="trackbot-bench-") as tmp_name:
        tmp = Path(tmp_name)
        started = time.perf_counter()
        upstream = generate_upstream(tmp / "upstream.git", args.files, args.commits)
        print(f"generated {args.files} files in {args.commits} commits in {time.perf_counter() - started:.1f}s")
        agent = agent_command(tmp)
        work = tmp / "work"
        with GitHubTwin(upstream, full_name="bench/repo", token="bench-token") as twin:
            trackbot_run(upstream, twin, work, agent, 0)  # the first run makes the cached clone
            overheads, baselines = [], []
            for n in range(1, args.runs + 1):
                overheads.append(trackbot_run(upstream, twin, work, agent, n))
                baselines.append(baseline_run(upstream, tmp, n))
                print(f"run {n}: trackbot overhead {overheads[-1]:.3f}s, baseline {baselines[-1]:.3f}s")
        overhead, baseline = statistics.median(overheads), statistics.median(baselines)
        print(
            f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
            f"{git('--version').strip()}"
        )
        print(f"overhead_s={overhead:.3f} baseline_s={baseline:.3f} ratio={overhead / baseline:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
