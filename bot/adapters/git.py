"""The git CLI: the cached clone of a repository, the track branch, the one commit, the push.

The clone's git directory is kept apart from its work tree (`<clone>/git` and `<clone>/tree`):
the agent and the gates are given the tree alone, so nothing they do reaches trackbot's git.
trackbot's git names both explicitly (GIT_DIR, GIT_WORK_TREE) and switches off everything a tree
could smuggle in: the user's and system's config, hooks, fsmonitor, replace objects, attributes
(`info/attributes` overrides any `.gitattributes`: no filter, eol, ident or encoding turns what is
in the tree into something else in the commit), external diff and textconv. Pushes authenticate
through environment-only config so no token lands in a remote URL, the git config or a log.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

import psutil

from bot.adapters.process import ProcessResult, run_process
from bot.guardrails import SYMLINK_MODE, TreeEntry
from bot.runs import ChangedFile, CommandRecord

GIT_TIMEOUT_S = 600
STALE_GIT_WAIT_S = 30.0  # how long prepare waits for a dead run's git command before killing it
BOT_NAME = "trackbot"
BOT_EMAIL = "trackbot@users.noreply.github.com"


class GitError(Exception):
    """A git command failed; the message says what was being done."""

    def __init__(self, doing: str, result: ProcessResult) -> None:
        self.result = result
        detail = result.output_tail.strip().splitlines()[-3:] if result.output_tail.strip() else []
        super().__init__(f"running {doing}: exit {result.exit_code}: {' / '.join(detail) or 'no output'}")


def git_env(token: str | None = None, url: str | None = None) -> dict[str, str]:
    """An environment for trackbot's git: no user/system config, no prompts, the bot's identity.

    A token becomes an `http.<origin>.extraHeader` given through GIT_CONFIG_* variables: it exists
    only in this process's environment, scoped to the repository's host.
    """
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": os.environ.get("HOME", "/tmp"),
        "LANG": "C.UTF-8",
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_AUTHOR_NAME": BOT_NAME,
        "GIT_AUTHOR_EMAIL": BOT_EMAIL,
        "GIT_COMMITTER_NAME": BOT_NAME,
        "GIT_COMMITTER_EMAIL": BOT_EMAIL,
        "GIT_NO_REPLACE_OBJECTS": "1",
        "GIT_ATTR_NOSYSTEM": "1",
    }
    config = dict(SAFE_CONFIG)
    if token and url and url.startswith(("http://", "https://")):
        parts = urlsplit(url)
        basic = base64.b64encode(f"x-access-token:{token}".encode()).decode()
        config[f"http.{parts.scheme}://{parts.netloc}/.extraHeader"] = f"Authorization: Basic {basic}"
    env["GIT_CONFIG_COUNT"] = str(len(config))
    for i, (key, value) in enumerate(config.items()):
        env[f"GIT_CONFIG_KEY_{i}"] = key
        env[f"GIT_CONFIG_VALUE_{i}"] = value
    return env


# Config that wins over anything in a repository's config (GIT_CONFIG_* is read last).
SAFE_CONFIG = {
    "core.hooksPath": os.devnull,
    "core.fsmonitor": "false",
    "core.attributesFile": os.devnull,
    "core.autocrlf": "false",
    "core.safecrlf": "false",
    "core.symlinks": "true",
    "core.untrackedCache": "false",
    "core.sparseCheckout": "false",
    "diff.external": "",
    "protocol.file.allow": "always",
    "submodule.recurse": "false",
}
# Written into the git dir's info/attributes, which outranks every `.gitattributes` in the tree:
# the commit holds the tree's bytes exactly, and whether a file diffs as binary is git's own call
# (`!diff`: the tree's `-diff` is ignored; the invariants read every diff with --text anyway).
NEUTRAL_ATTRIBUTES = "* -text -eol -filter -ident -working-tree-encoding -export-subst !diff !merge\n"


class TrackClone:
    """A persistent clone of one repository, reset to `origin/<base>` for each run.

    Reusing the clone makes a run cost a fetch, not a clone; the repository's lock guarantees
    one run at a time uses it.
    """

    def __init__(self, root: Path, url: str, base: str = "main", token: str | Callable[[], str] | None = None) -> None:
        self.root = root
        self.path = root / "tree"  # the work tree: all the agent and the gates get
        self.git_dir = root / "git"  # trackbot's: never inside the tree, never in a sandbox
        self.url = url
        self.base = base
        # A callable token is asked before each git command: a GitHub App's installation token
        # expires after an hour, and a run (agent and gates) may last longer than that.
        self._token = token if callable(token) else None
        self.env = git_env(token if isinstance(token, str) else None, url)
        self.records: list[CommandRecord] = []

    def git(self, *args: str, doing: str | None = None, check: bool = True, cwd: Path | None = None) -> str:
        """Run one git command in the clone, record it, return its output."""
        env = self.env if self._token is None else git_env(self._token(), self.url)
        if cwd is None:
            env = {**env, "GIT_DIR": str(self.git_dir), "GIT_WORK_TREE": str(self.path)}
        result = run_process(["git", *args], cwd or self.path, env, GIT_TIMEOUT_S, tail_lines=100000)
        self.records.append(
            CommandRecord(command=result.command, exit_code=result.exit_code, duration_s=round(result.duration_s, 3))
        )
        if check and not result.ok:
            raise GitError(doing or f"git {args[0]}", result)
        return result.output_tail

    def take_records(self) -> list[CommandRecord]:
        """The commands run since the last call."""
        records, self.records = self.records, []
        return records

    def prepare(self, branch: str) -> str:
        """Clone or fetch, then put a fresh `branch` at `origin/<base>` with a pristine work tree.

        A clone a dead run left mid-command is made usable first: once no git process works in it
        any more, stale `*.lock` files and an unfinished rebase are removed. A clone whose checkout
        still fails is cloned afresh. Returns the base commit's sha.
        """
        if not (self.git_dir / "HEAD").is_file():
            self._clone()
        else:
            self._unstick()
            self.git("fetch", "--prune", "--quiet", "origin", doing="git fetch")
        try:
            self._reset_to_base(branch)
        except GitError:
            if not (self.git_dir / "HEAD").is_file():
                raise
            self._clone()  # a clone git cannot even check out is not worth saving
            self._reset_to_base(branch)
        return self.git("rev-parse", "HEAD").strip()

    def _clone(self) -> None:
        if self.root.exists():
            shutil.rmtree(self.root)  # also a clone of the old layout (the git dir inside the tree)
        self.root.mkdir(parents=True)
        self.git(
            "clone",
            "--quiet",
            "--no-checkout",
            "--origin",
            "origin",
            f"--separate-git-dir={self.git_dir}",
            self.url,
            str(self.path),
            cwd=self.root,
            doing="git clone",
        )
        (self.path / ".git").unlink()  # the pointer to the git dir: the tree must not name it

    def _reset_to_base(self, branch: str) -> None:
        info = self.git_dir / "info"
        info.mkdir(exist_ok=True)
        (info / "attributes").write_text(NEUTRAL_ATTRIBUTES)
        self._remove_tree_git()
        # `checkout -f -B` already throws away every change to the index and the tracked files (a
        # `reset --hard` after it only rewrote the index again: a sixth of a run's time on 10,000 files).
        self.git("checkout", "--quiet", "-f", "-B", branch, f"origin/{self.base}", doing="git checkout")
        self.git("clean", "-ffdxq", doing="git clean")

    def _remove_tree_git(self) -> bool:
        """Remove a `.git` the tree holds at its root (git itself never tracks one); True if there was one."""
        planted = self.path / ".git"
        if planted.is_symlink() or planted.is_file():
            planted.unlink()
        elif planted.is_dir():
            shutil.rmtree(planted)
        else:
            return False
        return True

    def git_processes(self) -> list[psutil.Process]:
        """git processes working in this clone (a dead run's orphaned fetch, an agent's git...)."""
        root = self.path.resolve()
        found = []
        for proc in psutil.process_iter(["name", "cwd", "status"]):
            name, cwd = proc.info["name"] or "", proc.info["cwd"]
            if not name.startswith("git") or not cwd or proc.info["status"] == psutil.STATUS_ZOMBIE:
                continue
            where = Path(cwd)
            if where == root or root in where.parents:
                found.append(proc)
        return found

    def _unstick(self, wait_s: float = STALE_GIT_WAIT_S) -> None:
        """Remove what a git command killed mid-way leaves behind: `*.lock` files, rebase state."""
        git_dir = self.git_dir
        locks = [*git_dir.glob("*.lock"), *(git_dir / "refs").rglob("*.lock")]
        unfinished = [git_dir / name for name in ("rebase-merge", "rebase-apply") if (git_dir / name).exists()]
        if not locks and not unfinished:
            return
        deadline = time.monotonic() + wait_s
        busy = self.git_processes()
        while busy and time.monotonic() < deadline:
            time.sleep(0.5)
            busy = self.git_processes()
        for proc in busy:  # still there: a dead run's git, stuck; the repository lock says no live run uses it
            with contextlib.suppress(psutil.Error):
                proc.kill()
        for lock in locks:
            lock.unlink(missing_ok=True)
        for path in unfinished:
            shutil.rmtree(path, ignore_errors=True)

    def remote_branch_sha(self, branch: str) -> str | None:
        """The sha of `origin/<branch>` as last fetched, or None if it does not exist."""
        out = self.git("rev-parse", "--verify", "--quiet", f"refs/remotes/origin/{branch}", check=False).strip()
        return out or None

    def restore_after_agent(self, branch: str, base_sha: str) -> list[str]:
        """Make sure trackbot's git reads the tree as the agent left it, from the base commit.

        The agent never sees the git dir, so its branch, index and history are trackbot's alone; a
        `.git` the agent made in the tree (its own repository, its commits) is removed, its files
        kept. Returns notes for the report.
        """
        notes: list[str] = []
        if self._remove_tree_git():
            notes.append("the agent made a `.git` in the work tree; trackbot removed it and kept the files")
        self.git("symbolic-ref", "HEAD", f"refs/heads/{branch}")
        # --mixed keeps every file as the agent left it; only the index moves back to the base.
        self.git("reset", "--quiet", "--mixed", base_sha, doing="git reset")
        return notes

    def changes(self, base_sha: str) -> list[ChangedFile]:
        """Stage everything in the work tree and list what differs from the base commit."""
        self.git("add", "--all", doing="git add")
        out = self.git(
            "diff", "--cached", "--no-ext-diff", "--name-status", "-z", "-M", base_sha, doing="git diff"
        )
        fields = out.split("\0")
        changes: list[ChangedFile] = []
        i = 0
        while i < len(fields) and fields[i]:
            status = fields[i]
            if status.startswith(("R", "C")):
                changes.append(ChangedFile(status=status[0], old_path=fields[i + 1], path=fields[i + 2]))
                i += 3
            else:
                changes.append(ChangedFile(status=status[0], path=fields[i + 1]))
                i += 2
        return changes

    def entries(self, base_sha: str) -> list[TreeEntry]:
        """The files the staged change adds or modifies, with their modes and symlink targets."""
        out = self.git(
            "diff", "--cached", "--raw", "-z", "--no-renames", "--no-ext-diff", base_sha, doing="git diff --raw"
        )
        fields = out.split("\0")
        found: list[TreeEntry] = []
        for meta, path in zip(fields[0::2], fields[1::2], strict=False):
            parts = meta.lstrip(":").split()
            if len(parts) < 5 or parts[4].startswith("D"):
                continue
            mode, sha = parts[1], parts[3]
            target = None
            if mode == SYMLINK_MODE:
                target = self.git("cat-file", "blob", sha, doing="git cat-file (symlink)")
            found.append(TreeEntry(path=path, mode=mode, link_target=target))
        return found

    def snapshot(self, stage: bool = True) -> str:
        """Stage the work tree (unless `stage` is False: it is staged already) and return its tree sha:
        the change the commit will hold."""
        if stage:
            self.git("add", "--all", doing="git add")
        return self.git("write-tree", doing="git write-tree").strip()

    def commit(self, tree: str, parent: str, message: str, branch: str) -> str:
        """Make the one commit from `tree`, whatever the gates left in the work tree."""
        sha = self.git("commit-tree", tree, "-p", parent, "-m", message, doing="git commit-tree").strip()
        self.git("update-ref", f"refs/heads/{branch}", sha, doing="git update-ref")
        return sha

    def diff_stat(self, base: str, commit: str) -> str:
        """`git diff --stat` of the one commit, for dry-run reports."""
        return self.git("diff", "--stat", base, commit, doing="git diff --stat").strip()

    def push(self, branch: str, sha: str, expected_remote: str | None) -> None:
        """Push `sha` to `branch`, refusing to overwrite anything but what we last saw there."""
        lease = f"--force-with-lease=refs/heads/{branch}:{expected_remote or ''}"
        self.git("push", "--quiet", "--porcelain", lease, "origin", f"{sha}:refs/heads/{branch}", doing="git push")

    def clean(self) -> None:
        """Leave the work tree pristine for the next run."""
        self.git("reset", "--quiet", "--hard", check=False)
        self.git("clean", "-ffdxq", check=False)


def clone_dir(work_dir: Path, repository: str) -> Path:
    """Where a repository's cached clone lives under the work directory."""
    digest = hashlib.sha1(repository.encode()).hexdigest()[:8]
    safe = repository.replace("/", "__")
    return work_dir / "clones" / f"{safe}-{digest}"


def elapsed(started: float) -> float:
    """Seconds since `started` (monotonic), rounded for reports."""
    return round(time.monotonic() - started, 3)


class WorkTreeFiles:
    """A checked-out work tree as `plan.RepoFiles` (paths never leave the tree, symlinks included)."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()

    def _inside(self, path: str) -> Path | None:
        target = (self.root / path).resolve()
        return target if target == self.root or self.root in target.parents else None

    def list_dir(self, path: str) -> list[str] | None:
        """Entry names in a folder, None if missing."""
        target = self._inside(path)
        if target is None or not target.is_dir():
            return None
        return sorted(p.name for p in target.iterdir())

    def read_text(self, path: str) -> str | None:
        """A file's text, None if missing."""
        target = self._inside(path)
        if target is None or not target.is_file():
            return None
        return target.read_text(encoding="utf-8", errors="replace")
