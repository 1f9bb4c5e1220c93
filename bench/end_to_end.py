"""A run end to end, from the signed `/track run` to the PR opened and the report posted, by stage.

It starts what production runs, on one machine: an embedded Redis, the Slack and GitHub twins
(local HTTP servers), the bot's real HTTP app and real `trackbot worker` processes (the test
suite's multi-repository stack, tests/stacks.py). The repositories are generated: a plan of many
tracks, each allowing one new file, no gates; the agent writes that one file. Each run is driven
as users drive trackbot: a signed `/track run`, then (untimed) the PR merged on the GitHub twin
and `/track advance`, which lets the next track run.

Per run it splits the time from sending the command to the report being delivered:

- ack: until the HTTP answer to the slash command (Slack's 3-second budget);
- slack_work: from the ack until the worker's Slack-work thread has made the Run;
- queue_wait: from the Run made until its steps start (parent message, enqueue, RQ picks it up);
- each step, from the run's StepResults (the agent's own process beside it: agent_start);
- between_steps: the progress message updates between the steps;
- report: from the last step until Slack has the report (the final progress update, then the post);
- the Slack Web API and GitHub API calls the run made, counted by the twins.

The sandbox's cost: when the settings know TRACKBOT_SANDBOX, the same runs go once with the
sandbox ("bwrap") and once without ("off"), and `sandbox_added_s` is what the sandbox adds to the
agent's process (a trivial agent: its time is the cost of starting it); otherwise it says n/a.

`--scale`: 10 repositories (one channel each) and 4 workers, every repository running its tracks
one after another at the same time: runs per minute, queue wait p50/p99, memory per worker (RSS,
psutil: the worker's, and at its peak with the pages the RQ fork running a job adds, its USS).

The last line is key=value pairs (medians over the runs). Usage:
    .venv/bin/python bench/end_to_end.py [--runs 5] [--quick]
    .venv/bin/python bench/end_to_end.py --scale [--repos 10] [--workers 4] [--runs 3] [--quick]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # the multi-repository, multi-worker stack of the test suite

from stacks import Repo, Stack  # noqa: E402

from bot.adapters.redis_server import EmbeddedRedis  # noqa: E402
from bot.config import Settings  # noqa: E402
from bot.local.sample import create_sample_repo  # noqa: E402
from bot.outbox import Outbox  # noqa: E402
from bot.runs import Run, RunState  # noqa: E402

PLAN_DIR = "docs/plan/v1/tracks"
AGENT = """\
import os, pathlib, sys
sys.stdin.read()
track = os.environ["TRACK_NUM"]
target = pathlib.Path("app") / f"track-{track}.txt"
target.parent.mkdir(exist_ok=True)
target.write_text(f"track {track}\\n")
"""
STEPS = ("preflight", "agent", "guardrails", "format", "gates", "commit", "push", "pull_request")
POLL_S = 0.01


def plan_files(tracks: int) -> dict[str, str]:
    """A repository whose plan has `tracks` tracks; track N allows the one new file app/track-N.txt."""
    knob = {
        "version": 1,
        "mode": "sequential",
        "plan_version": "v1",
        "next_track": 1,
        "tracks": {
            str(n): {"slug": f"step-{n}", "doc": f"{PLAN_DIR}/track-{n:02d}-step-{n}.md"} for n in range(1, tracks + 1)
        },
    }
    files = {
        "README.md": "# A generated repository for trackbot's end-to-end benchmark\n",
        "configs/NEXT_TRACK.json": json.dumps(knob, indent=2) + "\n",
    }
    for n in range(1, tracks + 1):
        files[f"{PLAN_DIR}/track-{n:02d}-step-{n}.md"] = (
            f"# Track {n}: step {n}\n\n## Goal\n\nWrite `app/track-{n}.txt`.\n\n"
            f"## What you are allowed to change\n\n- `app/track-{n}.txt` (new)\n"
        )
    return files


def sandbox_setting() -> bool:
    """Whether this trackbot has the TRACKBOT_SANDBOX setting (the agent-sandbox issue)."""
    return any("TRACKBOT_SANDBOX" in str(f.validation_alias) for f in Settings.model_fields.values())


@dataclass
class RunFigures:
    """One run's time by stage (seconds) and the API calls it made."""

    stages: dict[str, float]
    queue_wait_s: float
    total_s: float
    agent_start_s: float
    github_calls: int | None = None
    slack_calls: int | None = None


@dataclass
class Driver:
    """Drives one repository's tracks on a running stack, one run after another."""

    stack: Stack
    repo: Repo
    count_calls: bool  # only when one repository runs at a time: the twins' logs are shared
    figures: list[RunFigures] = field(default_factory=list)
    error: str | None = None

    def run_track(self, track: int) -> RunFigures:
        """`/track run` for `track`, timed until its report is delivered; then merge and advance (untimed)."""
        stack, repo = self.stack, self.repo
        assert stack.services is not None and stack.slack is not None
        store = stack.services.store
        outbox = Outbox(stack.services.poster, store)
        github_before, slack_before = len(stack.host.requests), len(stack.slack.calls)
        sent = time.time()
        status = stack.send(repo.channel, "run")
        acked = time.time()
        if status != 200:
            raise RuntimeError(f"/track run answered HTTP {status}")
        deadline = time.monotonic() + 300
        run: Run | None = None
        while True:
            found = store.latest(repo.full_name, track)
            if found is not None and found.created_at >= sent - 1:
                run = found
                # The lock is released last: after it, the report is delivered or waits in the outbox.
                ended = run.finished_at is not None and store.lock_holder(repo.full_name) is None
                if ended and "report" in outbox.delivered(run.id):
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"track {track} of {repo.full_name} did not finish: {run and run.state}")
            for proc in stack.procs:
                if proc.poll() is not None:
                    raise RuntimeError(f"a worker exited ({proc.returncode}); see {stack.work_dir}/worker*")
            time.sleep(POLL_S)
        # The report's Slack ts is when the Slack twin took it (its clock is this machine's).
        done = min(time.time(), float(outbox.delivered(run.id)["report"]))
        if run.state is not RunState.PR_OPEN or run.pr_number is None:
            raise RuntimeError(f"track {track} ended {run.state.value}: {run.error or run.stop_reason}")
        assert run.started_at is not None and run.finished_at is not None
        steps = {s.name: s.duration_s for s in run.steps}
        agent = next(s for s in run.steps if s.name == "agent")
        stages = {
            "ack": acked - sent,
            "slack_work": run.created_at - acked,
            "queue_wait": run.started_at - run.created_at,
        }
        stages.update(steps)
        stages["between_steps"] = run.finished_at - run.started_at - sum(steps.values())
        stages["report"] = done - run.finished_at
        figures = RunFigures(
            stages=stages,
            queue_wait_s=run.started_at - run.created_at,
            total_s=done - sent,
            agent_start_s=agent.commands[0].duration_s if agent.commands else 0.0,
        )
        if self.count_calls:
            figures.github_calls = len(stack.host.requests) - github_before
            figures.slack_calls = len(stack.slack.calls) - slack_before
        repo.twin.merge_pull(run.pr_number, merged_by="alice")
        answer = stack.command(repo.channel, "advance")
        if f"to {track + 1}" not in answer and "advanced" not in answer.lower():
            raise RuntimeError(f"/track advance after track {track}: {answer}")
        return figures

    def run_tracks(self, first: int, count: int) -> None:
        """Tracks first..first+count-1, keeping each one's figures; a failure is kept in `error`."""
        try:
            for track in range(first, first + count):
                self.figures.append(self.run_track(track))
        except Exception as error:  # reported by the caller, with the worker logs' place
            self.error = f"{type(error).__name__}: {error}"


class MemorySampler:
    """Samples the workers' RSS (and their RQ work horses') every 0.2 s while a benchmark runs."""

    def __init__(self, procs: list[subprocess.Popen[bytes]]) -> None:
        self.procs = [psutil.Process(p.pid) for p in procs]
        self.worker_peak = [0] * len(procs)
        self.with_horse_peak = [0] * len(procs)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(0.2):
            for index, proc in enumerate(self.procs):
                try:
                    own = proc.memory_info().rss
                    # A job's fork shares the worker's pages: what it adds is its own (USS).
                    horses = sum(c.memory_full_info().uss for c in proc.children(recursive=False))
                except psutil.Error:
                    continue
                self.worker_peak[index] = max(self.worker_peak[index], own)
                self.with_horse_peak[index] = max(self.with_horse_peak[index], own + horses)

    def __enter__(self) -> MemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (nearest rank)."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def start_stack(work: Path, redis_url: str, repos: int, workers: int, tracks: int, sandbox: str | None) -> Stack:
    """The stack with `repos` generated repositories and `workers` workers, registered and answering."""
    work.mkdir(parents=True, exist_ok=True)
    script = work / "agent.py"
    script.write_text(AGENT)
    channels = {f"C0BENCH{n:02d}": f"bench/repo-{n:02d}" for n in range(repos)}
    stack = Stack(
        work / "stack",
        redis_url,
        f"{shlex.quote(sys.executable)} {shlex.quote(str(script))}",
        channels=channels,
        workers=workers,
        make_repo=lambda dest: create_sample_repo(dest, plan_files(tracks)),
        worker_env={} if sandbox is None else {"TRACKBOT_SANDBOX": sandbox},
    )
    stack.start()
    stack.wait_workers_registered(timeout=120)
    return stack


def worker_logs(stack: Stack) -> str:
    """The tail of every worker's log, for a benchmark that failed."""
    tails = []
    for log in sorted(stack.work_dir.glob("worker*/worker.log")):
        tails.append(f"--- {log}\n" + "\n".join(log.read_text(errors="replace").splitlines()[-30:]))
    return "\n".join(tails)


def median_of(runs: list[RunFigures], key: str) -> float:
    return statistics.median(r.stages.get(key, 0.0) for r in runs)


def end_to_end(args: argparse.Namespace, work: Path, redis_url: str) -> int:
    """One repository, one worker: `--runs` runs after a warm-up run, with and without the sandbox."""
    modes: list[str | None] = ["bwrap", "off"] if sandbox_setting() else [None]
    results: dict[str | None, list[RunFigures]] = {}
    for mode in modes:
        label = "the sandbox setting is not in this trackbot" if mode is None else f"TRACKBOT_SANDBOX={mode}"
        stack = start_stack(work / f"e2e-{mode or 'default'}", redis_url, 1, 1, args.runs + 1, mode)
        try:
            driver = Driver(stack, stack.repos[0], count_calls=True)
            driver.run_tracks(1, 1)  # the warm-up: the worker's first run clones the repository
            if driver.error is None:
                driver.figures.clear()
                driver.run_tracks(2, args.runs)
            if driver.error is not None:
                print(f"{label}: {driver.error}\n{worker_logs(stack)}")
                return 1
        finally:
            stack.stop()
        results[mode] = driver.figures
        runs = driver.figures
        print(f"{label}: {len(runs)} runs after a warm-up; medians by stage:")
        for key in ("ack", "slack_work", "queue_wait", *STEPS, "between_steps", "report"):
            print(f"  {key:14} {median_of(runs, key) * 1000:8.1f} ms")
        print(f"  {'total':14} {statistics.median(r.total_s for r in runs) * 1000:8.1f} ms")
        print(
            "  agent process (a trivial agent: its start) "
            f"{statistics.median(r.agent_start_s for r in runs) * 1000:.1f} ms; "
            f"calls per run: GitHub {statistics.median(r.github_calls or 0 for r in runs):.0f}, "
            f"Slack Web API {statistics.median(r.slack_calls or 0 for r in runs):.0f}"
        )
    main_mode = "bwrap" if "bwrap" in results else None
    runs = results[main_mode]
    agent_start = {m: statistics.median(r.agent_start_s for r in figures) for m, figures in results.items()}
    added = f"{agent_start['bwrap'] - agent_start['off']:.3f}" if "off" in agent_start else "n/a"
    print(machine())
    pairs = [
        f"runs={len(runs)}",
        f"total_s={statistics.median(r.total_s for r in runs):.3f}",
        *(f"{key}_s={median_of(runs, key):.3f}" for key in ("ack", "slack_work", "queue_wait", *STEPS)),
        f"between_steps_s={median_of(runs, 'between_steps'):.3f}",
        f"report_s={median_of(runs, 'report'):.3f}",
        f"github_calls={statistics.median(r.github_calls or 0 for r in runs):.0f}",
        f"slack_calls={statistics.median(r.slack_calls or 0 for r in runs):.0f}",
        f"agent_start_s={agent_start[main_mode]:.3f}",
        f"sandbox_added_s={added}",
    ]
    print(" ".join(pairs))
    return 0


def scale(args: argparse.Namespace, work: Path, redis_url: str) -> int:
    """`--repos` repositories at once on `--workers` workers, `--runs` tracks each."""
    stack = start_stack(work / "scale", redis_url, args.repos, args.workers, args.runs, None)
    try:
        drivers = [Driver(stack, repo, count_calls=False) for repo in stack.repos]
        threads = [threading.Thread(target=d.run_tracks, args=(1, args.runs)) for d in drivers]
        with MemorySampler(stack.procs) as memory:
            started = time.monotonic()
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            elapsed = time.monotonic() - started
        failed = [d for d in drivers if d.error is not None]
        if failed:
            for d in failed:
                print(f"{d.repo.full_name}: {d.error}")
            print(worker_logs(stack))
            return 1
    finally:
        stack.stop()
    runs = [f for d in drivers for f in d.figures]
    waits = [r.queue_wait_s for r in runs]
    mb = 1024 * 1024
    worker_rss = statistics.median(memory.worker_peak) / mb
    with_horse = max(memory.with_horse_peak) / mb
    print(
        f"{args.repos} repositories, {args.workers} workers, {len(runs)} runs in {elapsed:.1f} s (each repository "
        "runs its tracks one after another: run, merge, advance; all repositories at once)"
    )
    print(
        f"queue wait p50 {percentile(waits, 50):.2f} s, p99 {percentile(waits, 99):.2f} s; run total p50 "
        f"{percentile([r.total_s for r in runs], 50):.2f} s; worker RSS peaks (MB): "
        + ", ".join(f"{p / mb:.0f}" for p in memory.worker_peak)
        + f"; with the pages its job's fork adds (USS) at most {with_horse:.0f} MB"
    )
    print(machine())
    print(
        f"repos={args.repos} workers={args.workers} runs={len(runs)} runs_per_min={len(runs) / elapsed * 60:.1f} "
        f"queue_wait_p50_s={percentile(waits, 50):.3f} queue_wait_p99_s={percentile(waits, 99):.3f} "
        f"total_p50_s={percentile([r.total_s for r in runs], 50):.3f} worker_rss_mb={worker_rss:.0f} "
        f"worker_with_job_rss_mb={with_horse:.0f}"
    )
    return 0


def machine() -> str:
    """The machine the figures come from."""
    git = subprocess.run(["git", "--version"], capture_output=True, text=True).stdout.strip()
    return f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, {git}"


def main() -> int:
    """Parse the arguments, start Redis, run the benchmark, stop everything."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, help="measured runs (per repository with --scale); default 5, or 3")
    parser.add_argument("--scale", action="store_true", help="many repositories on several workers")
    parser.add_argument("--repos", type=int, default=10, help="--scale: repositories (default 10)")
    parser.add_argument("--workers", type=int, default=4, help="--scale: worker processes (default 4)")
    parser.add_argument(
        "--quick", action="store_true", help="a check that it works: 2 runs (--scale: 3 repos, 2 workers, 1 run each)"
    )
    args = parser.parse_args()
    if args.quick:
        args.runs = 1 if args.scale else 2
        if args.scale:
            args.repos, args.workers = 3, 2
    if args.runs is None:
        args.runs = 3 if args.scale else 5
    if min(args.runs, args.repos, args.workers) < 1:
        parser.error("--runs, --repos and --workers must be at least 1")
    work = Path(tempfile.mkdtemp(prefix="trackbot-e2e-"))
    redis = EmbeddedRedis(work / "redis")
    try:
        redis_url = redis.start()
        return scale(args, work, redis_url) if args.scale else end_to_end(args, work, redis_url)
    finally:
        redis.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.stdout = io.TextIOWrapper(sys.stdout.buffer, line_buffering=True)
    sys.exit(main())
