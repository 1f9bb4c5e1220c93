"""The embedded Redis: a real valkey-server that survives restarts, crashes of its parent, and races."""

from __future__ import annotations

import os
import signal
import socket
import stat
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
import redis

from bot.adapters.redis_server import EmbeddedRedis, RedisUnavailable, _valkey_executable, redis_url_or_embedded

REPO = Path(__file__).resolve().parents[1]


def running(pid: int) -> bool:
    """True while pid is a live process (an exited, unreaped daemon counts as gone)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def valkeys_in(data_dir: Path) -> list[int]:
    """Pids of every live valkey-server working in data_dir."""
    found = []
    for proc in psutil.process_iter(["name", "cmdline"]):
        try:
            names = [proc.info["name"] or "", *(proc.info["cmdline"] or [])[:1]]
            is_valkey = any("valkey-server" in n for n in names) and running(proc.pid)
            if is_valkey and Path(proc.cwd()).resolve() == data_dir.resolve():
                found.append(proc.pid)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


@pytest.fixture
def data_dir(tmp_path: Path) -> Iterator[Path]:
    """A data dir whose valkey servers are all gone once the test ends."""
    d = tmp_path / "redis"
    yield d
    for pid in valkeys_in(d):
        os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while valkeys_in(d) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert valkeys_in(d) == [], "a valkey-server outlived its test"


def client(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, decode_responses=True)


def test_data_survives_stop_and_start(data_dir: Path) -> None:
    server = EmbeddedRedis(data_dir)
    url = server.start()
    assert url.startswith(f"unix://{data_dir.resolve()}/valkey.sock?") and "password=" in url
    assert (data_dir / "valkey.url").read_text().strip() == url
    pid = server.pid
    assert pid is not None and running(pid)
    conf = (data_dir / "valkey.conf").read_text()
    assert "appendonly yes" in conf and 'save ""' in conf and "port 0" in conf

    r = client(url)
    r.set("track:1", "queued")
    r.rpush("rq:queue:default", "job-a", "job-b")
    r.close()
    server.stop()

    assert not running(pid)
    assert not (data_dir / "valkey.pid").exists()
    assert not (data_dir / "valkey.url").exists()
    assert server.url is None and server.pid is None

    with EmbeddedRedis(data_dir) as again:
        assert again.url is not None and again.pid != pid
        r = client(again.url)
        assert r.get("track:1") == "queued"
        assert r.lrange("rq:queue:default", 0, -1) == ["job-a", "job-b"]
        r.close()


def test_server_outlives_a_sigkilled_parent_and_is_reused(data_dir: Path) -> None:
    script = textwrap.dedent(
        f"""
        import sys, time
        from pathlib import Path
        sys.path.insert(0, {str(REPO)!r})
        from bot.adapters.redis_server import EmbeddedRedis
        server = EmbeddedRedis(Path({str(data_dir)!r}))
        url = server.start()
        print(server.pid, url, flush=True)
        time.sleep(600)
        """
    )
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        pid_text, url = child.stdout.readline().split()
        client(url).rpush("rq:queue:default", "job-from-crashed-run")
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=10)
    assert child.returncode == -signal.SIGKILL

    pid = int(pid_text)
    assert running(pid), "the daemon should outlive the process that started it"

    server = EmbeddedRedis(data_dir)
    assert server.start() == url
    assert server.pid == pid and server.reused
    assert valkeys_in(data_dir) == [pid]
    assert client(url).lrange("rq:queue:default", 0, -1) == ["job-from-crashed-run"]
    server.stop()
    assert not running(pid)


def test_data_written_a_second_before_the_server_is_sigkilled_survives(data_dir: Path) -> None:
    server = EmbeddedRedis(data_dir)
    url = server.start()
    client(url).rpush("rq:queue:default", "job-1")
    time.sleep(1.1)  # appendfsync everysec
    assert server.pid is not None
    os.kill(server.pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while running(server.pid) and time.monotonic() < deadline:
        time.sleep(0.05)

    with EmbeddedRedis(data_dir) as fresh:
        assert fresh.url is not None and not fresh.reused
        assert client(fresh.url).lrange("rq:queue:default", 0, -1) == ["job-1"]


def test_stale_pidfile_is_replaced_by_a_fresh_server(data_dir: Path) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    data_dir.mkdir(parents=True)
    (data_dir / "valkey.pid").write_text(f"{dead.pid}\n")
    (data_dir / "valkey.url").write_text(f"unix://{data_dir}/gone.sock?password=x\n")

    with EmbeddedRedis(data_dir) as server:
        assert server.pid is not None and server.pid != dead.pid and not server.reused
        assert (data_dir / "valkey.pid").read_text().strip() == str(server.pid)
        assert server.url is not None and client(server.url).ping()


def test_pidfile_naming_a_live_non_valkey_process_is_stale(data_dir: Path) -> None:
    data_dir.mkdir(parents=True)
    (data_dir / "valkey.pid").write_text(f"{os.getpid()}\n")  # pytest itself: alive, not valkey
    with EmbeddedRedis(data_dir) as server:
        assert server.pid != os.getpid() and not server.reused
        assert server.url is not None and client(server.url).ping()


def test_concurrent_starts_in_threads_share_one_server(data_dir: Path) -> None:
    servers = [EmbeddedRedis(data_dir) for _ in range(4)]
    urls: list[str] = []
    threads = [threading.Thread(target=lambda s=s: urls.append(s.start())) for s in servers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert len(urls) == 4 and len(set(urls)) == 1
    assert len({s.pid for s in servers}) == 1
    assert len(valkeys_in(data_dir)) == 1
    servers[0].stop()


def test_concurrent_starts_in_processes_share_one_server(data_dir: Path) -> None:
    script = textwrap.dedent(
        f"""
        import sys
        from pathlib import Path
        sys.path.insert(0, {str(REPO)!r})
        from bot.adapters.redis_server import EmbeddedRedis
        server = EmbeddedRedis(Path({str(data_dir)!r}))
        print(server.start(), server.pid, flush=True)
        """
    )
    children = [subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True) for _ in range(3)]
    outputs = [c.communicate(timeout=30)[0].strip() for c in children]
    assert all(c.returncode == 0 for c in children)
    assert len(set(outputs)) == 1, outputs
    url, pid = outputs[0].split()
    assert valkeys_in(data_dir) == [int(pid)]

    server = EmbeddedRedis(data_dir)
    assert server.start() == url
    server.stop()
    assert not running(int(pid))


def test_failure_to_start_says_what_to_do(data_dir: Path) -> None:
    data_dir.mkdir(parents=True)
    (data_dir / "valkey.log").mkdir()  # valkey cannot open its log file
    with pytest.raises(RedisUnavailable) as excinfo:
        EmbeddedRedis(data_dir).start(timeout=5)
    message = str(excinfo.value)
    assert str(data_dir / "valkey.log") in message
    assert "REDIS_URL" in message
    assert valkeys_in(data_dir) == []


def test_redis_url_is_used_untouched(tmp_path: Path) -> None:
    url, server = redis_url_or_embedded("redis://127.0.0.1:6379/0", tmp_path / "unused")
    assert (url, server) == ("redis://127.0.0.1:6379/0", None)
    assert not (tmp_path / "unused").exists()


def test_no_redis_url_starts_the_embedded_server(data_dir: Path) -> None:
    url, server = redis_url_or_embedded(None, data_dir)
    assert server is not None
    try:
        assert client(url).ping()
    finally:
        server.stop()


def test_the_embedded_redis_refuses_a_client_without_the_password_and_has_no_tcp_port(data_dir: Path) -> None:
    with EmbeddedRedis(data_dir) as server:
        assert server.url is not None and server.pid is not None
        sock = data_dir / "valkey.sock"
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(unix_socket_path=str(sock)).ping()
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(unix_socket_path=str(sock), password="guessed").ping()
        assert client(server.url).ping()
        assert client(server.url).config_get("port") == {"port": "0"}
        assert psutil.Process(server.pid).net_connections(kind="inet") == []  # nothing listens on TCP
        # Only this user may open the folder, the socket, or read the password and the URL.
        assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700
        for name in ("valkey.sock", "valkey.password", "valkey.url", "valkey.conf"):
            assert stat.S_IMODE((data_dir / name).stat().st_mode) & 0o077 == 0, name
        password = (data_dir / "valkey.password").read_text().strip()
        assert len(password) >= 32 and f"password={password}" in server.url


def test_a_restarted_embedded_redis_keeps_its_password_and_url(data_dir: Path) -> None:
    first = EmbeddedRedis(data_dir)
    url = first.start()
    client(url).set("k", "v")
    first.stop()
    with EmbeddedRedis(data_dir) as again:
        assert again.url == url and not again.reused  # a worker that knew the URL reconnects by itself
        assert client(url).get("k") == "v"


def test_a_leftover_server_without_a_password_is_replaced_and_its_data_kept(data_dir: Path) -> None:
    """An older trackbot left its server on TCP with no password: it is stopped, not reused."""
    exe = _valkey_executable()
    data_dir.mkdir(parents=True)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    old = EmbeddedRedis(data_dir)
    (data_dir / "valkey.conf").write_text(
        f'daemonize yes\npidfile "{old.pidfile}"\ndir "{data_dir.resolve()}"\nappendonly yes\n'
        f'bind 127.0.0.1\nport {port}\nlogfile "{old.log_file}"\n'
    )
    subprocess.run([exe, str(data_dir / "valkey.conf")], cwd=data_dir, check=True)
    old_url = f"redis://127.0.0.1:{port}/0"
    deadline = time.monotonic() + 10
    while not (data_dir / "valkey.pid").exists():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    (data_dir / "valkey.url").write_text(old_url + "\n")
    for _ in range(100):
        try:
            client(old_url).set("queued", "run-1")
            break
        except redis.ConnectionError:
            time.sleep(0.05)
    client(old_url).bgrewriteaof()
    time.sleep(1.1)
    old_pid = int((data_dir / "valkey.pid").read_text())

    with EmbeddedRedis(data_dir) as server:
        assert server.url is not None and server.url.startswith("unix://") and not server.reused
        assert not running(old_pid)
        assert client(server.url).get("queued") == "run-1"
        with pytest.raises(redis.ConnectionError):
            client(old_url).ping()


def test_a_redis_url_is_shown_without_its_password() -> None:
    from bot.adapters.redis_server import masked_url

    assert (
        masked_url("unix:///w/redis/valkey.sock?db=0&password=abc123")
        == "unix:///w/redis/valkey.sock?db=0&password=***"
    )
    assert masked_url("rediss://:abc123@redis.example:6380/0") == "rediss://:***@redis.example:6380/0"
    assert masked_url("redis://redis:6379/0") == "redis://redis:6379/0"
