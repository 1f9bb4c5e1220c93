"""The sandbox that everything running the repository's or the agent's code runs in: bubblewrap.

One sandbox per command (the agent, a gate, gofmt), gone when the command ends:

- its own user namespace (an unprivileged uid), pid namespace (every process it starts dies with
  it: a double-forked daemon cannot outlive the step), IPC, UTS and cgroup namespaces;
- its own mount view, an allowlist: the system folders read-only, the work tree and a per-run home
  writable, a private /tmp, /proc and /dev. trackbot's work directory, other clones, the Redis
  data, `.env` files and keys are simply not there (nothing is mounted that is not named here);
- its own network namespace, with nothing but its own loopback: no route to the host's loopback
  (Redis, the web app, metrics) or to anything else. With an egress allowlist, a proxy outside
  (bot.adapters.egress) is reached through a Unix socket bound into the sandbox, which socat
  exposes inside as 127.0.0.1:3128 (HTTP(S)_PROXY point there).

A thin adapter over bubblewrap rather than a wrapper that mounts the whole filesystem read-only and
then denies paths: an allowlist of mounts cannot forget a secret folder.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
import shlex
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bot.adapters.egress import EgressLog, egress_proxy
from bot.adapters.process import TAIL_LINES, ProcessResult, run_process

# The system, read-only. /etc is the system's configuration (resolv.conf, ld.so, certificates):
# trackbot's own secrets must not live under it (the README says so); key files named in the
# settings are masked anyway.
SYSTEM_PATHS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc", "/opt")
SANDBOX_UID = 1000
SANDBOX_GID = 1000
PROXY_PORT = 3128
PROXY_SOCKET = "/run/trackbot/egress.sock"
INSTALL_HINT = (
    "install bubblewrap (Debian/Ubuntu: apt-get install bubblewrap socat) and allow unprivileged user "
    "namespaces (sysctl kernel.unprivileged_userns_clone=1; in a container, run it with a seccomp "
    "profile that permits clone(CLONE_NEWUSER), e.g. --security-opt seccomp=unconfined), or set "
    "TRACKBOT_SANDBOX=off to run the agent unconfined (not for production)"
)


class SandboxUnavailable(Exception):
    """No sandbox can be made on this host; the message says what to install or enable."""


@dataclass(frozen=True)
class Confinement:
    """What one sandboxed command may see and reach."""

    tree: Path  # the work tree: writable, at the same path inside
    home: Path  # a per-run home: writable, at the same path inside, $HOME
    read_only: tuple[Path, ...] = ()  # more read-only paths (interpreters, the agent's install)
    masked: tuple[Path, ...] = ()  # never visible, even under a read-only path (key files)
    egress_socket: Path | None = None  # the egress proxy's Unix socket; None: no network at all
    writable: tuple[Path, ...] = field(default=())  # more writable paths (a per-run CODEX_HOME)


def wrap(confinement: Confinement, argv: Sequence[str], bwrap: str = "bwrap") -> list[str]:
    """The bubblewrap command line that runs `argv` confined (cwd: the tree)."""
    args = [
        bwrap,
        "--unshare-user",
        "--unshare-pid",
        "--unshare-ipc",
        "--unshare-uts",
        "--unshare-cgroup-try",
        "--unshare-net",
        "--uid",
        str(SANDBOX_UID),
        "--gid",
        str(SANDBOX_GID),
        "--hostname",
        "trackbot-sandbox",
        "--die-with-parent",
        "--new-session",  # no TIOCSTI into a terminal trackbot may have
        "--cap-drop",
        "ALL",
    ]
    for system in SYSTEM_PATHS:
        path = Path(system)
        if path.is_symlink():  # merged /usr: /bin -> usr/bin
            args += ["--symlink", os.readlink(path), system]
        elif path.is_dir():
            args += ["--ro-bind", system, system]
    # /tmp first: what is bound below may live under the host's /tmp.
    args += ["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp", "--tmpfs", "/run"]
    for extra in confinement.read_only:
        if extra.exists():
            args += ["--ro-bind", str(extra), str(extra)]
    # Masks before the writable binds: the tree may live inside a masked work directory.
    for hidden in confinement.masked:
        if hidden.is_file():
            args += ["--ro-bind", "/dev/null", str(hidden)]
        elif hidden.is_dir():
            args += ["--tmpfs", str(hidden)]
    for path in (confinement.home, *confinement.writable, confinement.tree):
        args += ["--bind", str(path), str(path)]
    command = list(argv)
    if confinement.egress_socket is not None:
        args += ["--ro-bind", str(confinement.egress_socket), PROXY_SOCKET]
        command = ["/bin/sh", "-c", _WITH_PROXY, "trackbot-sandbox", *command]
    args += ["--chdir", str(confinement.tree), "--", *command]
    return args


# Inside the sandbox: socat bridges 127.0.0.1:3128 to the proxy's socket; the command starts once
# it listens (read from /proc/net/tcp, so no probe connection reaches the proxy).
_WITH_PROXY = (
    f"socat TCP-LISTEN:{PROXY_PORT},bind=127.0.0.1,fork,reuseaddr UNIX-CONNECT:{PROXY_SOCKET} 2>/dev/null &"
    f" i=0; while ! grep -q ':{PROXY_PORT:04X} 00000000:0000 0A' /proc/net/tcp 2>/dev/null;"
    ' do i=$((i+1)); [ "$i" -gt 500 ] && break; sleep 0.01; done; exec "$@"'
)


def proxy_environment() -> dict[str, str]:
    """The variables that send a sandboxed command's HTTP(S) through the egress proxy."""
    url = f"http://127.0.0.1:{PROXY_PORT}"
    env = {name: url for name in ("HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY", "https_proxy", "http_proxy", "all_proxy")}
    env["NO_PROXY"] = env["no_proxy"] = ""
    return env


@functools.lru_cache(maxsize=4)
def probe(bwrap: str = "bwrap") -> str | None:
    """None when a sandbox can be made here (bubblewrap runs with every namespace), else why not.

    Cached: the answer does not change while the process lives.
    """
    found = shutil.which(bwrap)
    if found is None:
        return f"bubblewrap ({bwrap}) is not installed; {INSTALL_HINT}"
    home = Path("/tmp")
    confinement = Confinement(tree=home, home=home)
    try:
        result = subprocess.run(
            wrap(confinement, ["/bin/true"], bwrap=found),
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"bubblewrap could not start: {error}; {INSTALL_HINT}"
    if result.returncode != 0:
        why = (result.stderr.strip().splitlines() or ["no output"])[-1]
        return f"bubblewrap cannot make a sandbox here ({why}); {INSTALL_HINT}"
    if shutil.which("socat") is None:
        return f"socat is not installed (the agent's egress goes through it); {INSTALL_HINT}"
    return None


def describe(argv: Sequence[str]) -> str:
    """A command as the report shows it: what ran inside the sandbox, not bubblewrap's arguments."""
    return shlex.join(argv)


def run_confined(
    argv: Sequence[str],
    confinement: Confinement,
    env: Mapping[str, str],
    timeout_s: float,
    egress: Sequence[str] = (),
    stdin_text: str | None = None,
    on_line: Callable[[str], None] | None = None,
    tail_lines: int = TAIL_LINES,
    idle_timeout_s: float | None = None,
) -> tuple[ProcessResult, EgressLog | None]:
    """Run `argv` in a sandbox (cwd: the tree) with `env` (HOME is the confinement's home).

    With `egress`, the allowlisting proxy serves the command while it runs and what it refused comes
    back with the result; without, the command has no network at all. The result's `command` is the
    command as given, not bubblewrap's.
    """
    env = {**env, "HOME": str(confinement.home), "TMPDIR": "/tmp"}
    with contextlib.ExitStack() as stack:
        egress_log: EgressLog | None = None
        if egress:
            # A short path: a Unix socket's path is limited to 108 bytes; the folder is ours (0700).
            folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="trackbot-egress-")))
            socket_path = folder / "egress.sock"
            egress_log = stack.enter_context(egress_proxy(socket_path, egress))
            confinement = dataclasses.replace(confinement, egress_socket=socket_path)
            env.update(proxy_environment())
        result = run_process(
            wrap(confinement, argv),
            confinement.tree,
            env,
            timeout_s,
            stdin_text=stdin_text,
            on_line=on_line,
            tail_lines=tail_lines,
            idle_timeout_s=idle_timeout_s,
        )
    result.command = describe(argv)
    if result.missing:
        result.output_tail = f"bubblewrap could not start: {result.output_tail}"
    elif result.exit_code == 1 and result.output_tail.startswith("bwrap: execvp"):
        # The program is not there inside the sandbox (a path the sandbox does not show).
        result.missing = True
        result.output_tail = result.output_tail.removeprefix("bwrap: ") + " (inside the sandbox)"
    return result, egress_log
