"""Scale-out: three `trackbot worker` processes, each with its own work directory, on one Redis,
serving two repositories (two channels, one GitHub twin serving both).

The agent sleeps 2 s and appends when it started and ended, and where (its work tree, so which
worker and which repository), to a file outside every work tree. Three rounds, each driven the way
users drive trackbot: `/track run` in both channels at once (twice in one of them), then the
merge and `/track advance` that let the next track run. It shows:

- runs of different repositories overlap in time (they run on different workers);
- runs of one repository never overlap: the lock refuses a second run while one is active, and
  each next run starts after the previous one finished;
- every run ran exactly once and finished exactly once: one agent record each, each job in RQ's
  finished registry with the run's final state as its result, none failed, one report each.

Then the deployment files, read (Docker cannot run here): docker-compose.yml runs Redis with AOF
and no eviction, the web app and two workers that share nothing but Redis; the Dockerfile builds
one image, with git, as a non-root user, with a health check for either process.
"""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import threading
from pathlib import Path

from conftest import agent_script
from rq.registry import FailedJobRegistry, FinishedJobRegistry
from stacks import Stack

from bot.adapters.git import clone_dir
from bot.runs import RunState

A, B = "acme/widgets", "acme/gadgets"
CHANNEL_A, CHANNEL_B = "C0WIDGETS", "C0GADGETS"
# Each track's file, as its doc allows.
AGENT = """\
import json, os, pathlib, sys, time
timeline, worktree = sys.argv[1], sys.argv[2]
track = os.environ["TRACK_NUM"]
start = time.time()
time.sleep(2)
target = pathlib.Path({"1": "app/hello.txt", "2": "app/cancel.txt", "3": "app/greeting/greeting.go"}[track])
target.parent.mkdir(parents=True, exist_ok=True)
text = "package greeting\\n" if track == "3" else f"track {track}\\n"
target.write_text(text)
record = {"worktree": worktree, "track": int(track), "start": start, "end": time.time(), "pid": os.getpid()}
with open(timeline, "a") as out:  # one short append per run
    out.write(json.dumps(record) + "\\n")
"""


def overlap(x: dict[str, float], y: dict[str, float]) -> bool:
    return x["start"] < y["end"] and y["start"] < x["end"]


def test_three_workers_two_repositories(tmp_path: Path, redis_url: str) -> None:
    timeline = tmp_path / "timeline.jsonl"
    script = agent_script(tmp_path, AGENT)
    # The agents write a shared timeline on the host: unconfined (the sandbox: test_hostile_agent.py).
    stack = Stack(
        tmp_path / "stack",
        redis_url,
        f"{script} {timeline} {{worktree}}",
        channels={CHANNEL_A: A, CHANNEL_B: B},
        workers=3,
        sandbox="off",
    )
    try:
        stack.start()
        stack.wait_workers_registered()
        assert stack.services is not None
        store = stack.services.store
        accepted: dict[str, list[str]] = {A: [], B: []}
        for track in (1, 2, 3):
            if track > 1:
                for repo, channel in ((A, CHANNEL_A), (B, CHANNEL_B)):
                    stack.repo(repo).twin.merge_pull(track - 1, merged_by="alice")
                    answer = stack.command(channel, "advance")
                    assert f"from {track - 1} to {track}" in answer or "advanced" in answer.lower(), answer
            before = {c: len(stack.answers(c)) for c in (CHANNEL_A, CHANNEL_B)}
            # Both channels at once, and a second `/track run` racing in the first one.
            senders = [
                threading.Thread(target=stack.send, args=(channel, "run"))
                for channel in (CHANNEL_A, CHANNEL_A, CHANNEL_B)
            ]
            for sender in senders:
                sender.start()
            for sender in senders:
                sender.join()
            replies_a = stack.wait_answers(CHANNEL_A, before[CHANNEL_A] + 2)[before[CHANNEL_A] :]
            replies_b = stack.wait_answers(CHANNEL_B, before[CHANNEL_B] + 1)[before[CHANNEL_B] :]
            assert sorted(r.startswith("Queued ") for r in replies_a) == [False, True], replies_a
            refusal = next(r for r in replies_a if not r.startswith("Queued "))
            assert f"Track {track} is already" in refusal and "One run per repository at a time" in refusal
            assert replies_b[0].startswith("Queued "), replies_b
            stack.wait_idle()
            for repo in (A, B):
                run = store.latest(repo)
                assert run is not None and run.track == track
                assert run.state is RunState.PR_OPEN, (repo, run.state, run.error)
                accepted[repo].append(run.id)

        records = [json.loads(line) for line in timeline.read_text().splitlines()]
        by_repo: dict[str, list[dict[str, float]]] = {A: [], B: []}
        workers_used = set()
        for record in records:
            worktree = Path(record["worktree"])
            repo = next(r for r in (A, B) if worktree.parent.name == clone_dir(Path("."), r).name)
            by_repo[repo].append(record)
            workers_used.add(worktree.parents[2].name)  # .../stack/workerN/clones/<repo>/tree
        # Every run's agent ran exactly once: three tracks per repository, in order.
        for repo in (A, B):
            assert [r["track"] for r in by_repo[repo]] == [1, 2, 3], by_repo[repo]
        # Runs of one repository never overlap: each starts after the previous one ended.
        for repo in (A, B):
            runs = by_repo[repo]
            for earlier, later in itertools.pairwise(runs):
                assert earlier["end"] <= later["start"], (repo, earlier, later)
        # Runs of different repositories do: each round's two ran side by side, on different workers.
        for a, b in zip(by_repo[A], by_repo[B], strict=True):
            assert overlap(a, b), (a, b)
            assert Path(a["worktree"]).parents[2] != Path(b["worktree"]).parents[2]
        assert len(workers_used) >= 2 and workers_used <= {"worker0", "worker1", "worker2"}

        # Every run finished exactly once, as RQ and the store see it.
        queue = stack.services.queue
        finished = set(FinishedJobRegistry(queue=queue).get_job_ids())
        assert finished == set(accepted[A] + accepted[B])
        assert FailedJobRegistry(queue=queue).get_job_ids() == []
        for run_id in finished:
            job = queue.fetch_job(run_id)
            assert job is not None and job.return_value() == RunState.PR_OPEN.value
        assert len(store.runs(A, limit=50)) == 3 and len(store.runs(B, limit=50)) == 3
        for repo in (A, B):
            assert [p.number for p in stack.repo(repo).twin.pulls()] == [1, 2, 3]
            assert stack.repo(repo).twin.pulls()[-1].state == "open"
        assert stack.slack is not None
        reports = [m for m in stack.slack.snapshot() if m.kind == "message" and m.text.startswith("*Report — ")]
        assert len(reports) == 6
    finally:
        stack.stop()


# == the deployment files, read (Docker cannot run where these tests run) =======================

ROOT = Path(__file__).resolve().parent.parent


def test_compose_runs_web_and_two_workers_that_share_only_redis() -> None:
    import yaml

    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    redis = services["redis"]
    assert redis["image"] in ("redis:7", "valkey/valkey:8")
    flags = " ".join(redis["command"])
    for setting in ("--appendonly yes", "--appendfsync everysec", "--maxmemory-policy noeviction"):
        assert setting in flags
    assert any(volume.endswith(":/data") for volume in redis["volumes"])

    web, worker = services["web"], services["worker"]
    assert web["command"] == ["trackbot", "web"] and "3000:3000" in web["ports"]
    assert "/readyz" in " ".join(web["healthcheck"]["test"])
    assert worker["command"] == ["trackbot", "worker"] and worker["deploy"]["replicas"] == 2
    assert worker["healthcheck"]["test"] == ["CMD", "trackbot", "worker", "--check"]
    assert web["image"] == worker["image"]  # one image, both processes
    for service in (web, worker):
        assert service["env_file"] == ".env"
        assert service["environment"]["REDIS_URL"] == "redis://redis:6379/0"
    # A worker's work dir is its own: an anonymous volume (or tmpfs) per container, no named volume.
    assert worker["volumes"] == ["/data"] and "ports" not in worker


def test_the_image_has_git_runs_as_a_user_and_checks_health_for_both_processes() -> None:
    lines = (ROOT / "Dockerfile").read_text()
    assert "apt-get install" in lines and " git " in lines
    assert "\nUSER trackbot\n" in lines and "useradd" in lines
    healthcheck = lines[lines.index("HEALTHCHECK") :]
    assert "/readyz" in healthcheck and "trackbot worker --check" in healthcheck
    assert 'CMD ["trackbot", "web"]' in lines and "TRACKBOT_WORK_DIR=/data" in lines
    done = subprocess.run([sys.executable, "-m", "bot.cli", "worker", "--help"], capture_output=True, text=True)
    assert done.returncode == 0 and "--check" in done.stdout
    done = subprocess.run([sys.executable, "-m", "bot.cli", "doctor", "--help"], capture_output=True, text=True)
    assert done.returncode == 0 and "--only" in done.stdout
