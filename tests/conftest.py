"""Shared fixtures: a real Redis (REDIS_URL when set, else the embedded server), the local stack."""

from __future__ import annotations

import io
import os
import shlex
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from redis import Redis

from bot.adapters.redis_server import EmbeddedRedis
from bot.local.console import LocalStack


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real Redis server for the whole session. Tests flush it: never point REDIS_URL at real data."""
    url = os.environ.get("REDIS_URL")
    if url:
        yield url
        return
    server = EmbeddedRedis(tmp_path_factory.mktemp("redis"))
    yield server.start()
    server.stop()


@pytest.fixture
def redis(redis_url: str) -> Iterator[Redis]:
    """A connection to an empty database."""
    connection = Redis.from_url(redis_url)
    connection.flushdb()
    yield connection
    connection.flushdb()
    connection.close()


def agent_script(tmp_path: Path, body: str, name: str = "agent.py") -> str:
    """Write a Python agent script and return the command that runs it."""
    path = tmp_path / name
    path.write_text(body)
    return f"{shlex.quote(sys.executable)} {shlex.quote(str(path))}"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "unconfined: the test's agent or fake tools record what they saw in files on the host, so its "
        "stacks run with TRACKBOT_SANDBOX=off (the sandbox itself is tested in test_hostile_agent.py)",
    )


@pytest.fixture
def make_stack(
    tmp_path: Path, redis_url: str, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> Iterator[Callable[..., LocalStack]]:
    """Start the whole local stack (twins, bot HTTP app, a real worker process) on demand."""
    monkeypatch.setenv("REDIS_URL", redis_url)
    stacks: list[LocalStack] = []
    unconfined = request.node.get_closest_marker("unconfined") is not None

    def start(repo: Path | None = None, agent: str | None = None, **settings: Any) -> LocalStack:
        """`settings`: Settings fields for every process of the stack (the web app and the worker)."""
        if unconfined:
            settings.setdefault("sandbox", "off")
        Redis.from_url(redis_url).flushdb()
        stack = LocalStack(
            io.StringIO(), repo=repo, agent=agent, work_dir=tmp_path / f"stack{len(stacks)}", settings=settings
        )
        stacks.append(stack)
        stack.start()
        return stack

    yield start
    for stack in stacks:
        stack.stop()


@pytest.fixture
def workers() -> Iterator[Callable[[LocalStack], subprocess.Popen[bytes]]]:
    """Start extra `trackbot worker` processes for a stack (`LocalStack.spawn_worker`); stopped at the end."""
    started: list[subprocess.Popen[bytes]] = []

    def start(stack: LocalStack) -> subprocess.Popen[bytes]:
        proc = stack.spawn_worker(f"worker{len(started) + 2}.log")
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
