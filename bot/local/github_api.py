"""A local stand-in for GitHub's REST API v3, backed by a real git repository on disk.

The local demo and the tests point the real PyGithub client at :class:`GitHubTwin`
(``Github(auth=Auth.Token(token), base_url=twin.api_url, retry=None, seconds_between_requests=None)``)
and it must work unmodified, so the JSON shapes, status codes and headers follow GitHub's
documented behaviour for the handful of endpoints trackbot uses.  Every piece of data comes from
the git repository at ``repo_path`` (its ``main`` branch is the upstream), read and written with
git plumbing only: a work tree, when there is one, belongs to the user and is only ever advanced
with a fast-forward that refuses to clobber local edits.

Only the standard library is used so the twin can run anywhere the bot runs (and PyJWT, which
PyGithub brings, to check a GitHub App's JWT when a test turns the App on with ``enable_app``).
Several repositories can share one twin's API URL (``serve``).
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import hashlib
import hmac
import json
import os
import re
import subprocess
import tempfile
import threading
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

__all__ = [
    "GitError",
    "GitHubTwin",
    "MergeError",
    "MergeResult",
    "PullRecord",
    "RecordedRequest",
    "TwinError",
    "WebhookDelivery",
    "sign_webhook",
]

DOCS_URL = "https://docs.github.com/rest"
# Headers copied into RecordedRequest: the ones tests want to assert on.  Authorization is
# deliberately excluded so a recorded request can be printed without leaking the token.
_RECORDED_HEADERS = ("If-None-Match", "If-Modified-Since", "Accept", "User-Agent", "Content-Type")
_BOT_LOGIN = "trackbot"
_FULL_SHA = re.compile(r"[0-9a-f]{40}")
_RATE_LIMIT = 5000
# GitHub refuses a pull request or comment body longer than this many characters (422).
MAX_BODY_CHARS = 65536


# --------------------------------------------------------------------------------------------
# Public records and errors
# --------------------------------------------------------------------------------------------


class TwinError(Exception):
    """Base class for errors raised by the twin's Python API."""


class GitError(TwinError):
    """A git command failed unexpectedly."""

    def __init__(self, args: list[str], returncode: int, stderr: str) -> None:
        super().__init__(f"git {' '.join(args)} failed ({returncode}): {stderr.strip()}")
        self.returncode = returncode
        self.stderr = stderr


class MergeError(TwinError):
    """A pull request cannot be merged; ``status`` is the HTTP status GitHub would answer."""

    def __init__(self, message: str, status: int = 405) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class RecordedRequest:
    """One request the twin answered, for tests to assert what the bot called."""

    method: str
    path: str  # path including the query string, e.g. "/repos/acme/widgets/pulls?state=open"
    headers: dict[str, str]
    status: int
    body: Any = None  # parsed JSON request body, if any


@dataclass
class PullRecord:
    """A pull request held in memory by the twin."""

    number: int
    title: str
    body: str | None
    head_ref: str
    base_ref: str
    head_sha: str
    base_sha: str
    draft: bool = False
    state: str = "open"
    merged: bool = False
    merged_at: str | None = None
    merged_by: str | None = None
    merge_commit_sha: str | None = None
    closed_at: str | None = None
    created_at: str = ""
    updated_at: str = ""
    user: str = _BOT_LOGIN


@dataclass(frozen=True)
class MergeResult:
    """Outcome of :meth:`GitHubTwin.merge_pull`; ``webhook_status`` is None when nothing was delivered."""

    number: int
    sha: str
    webhook_status: int | None


@dataclass(frozen=True)
class WebhookDelivery:
    """One attempted webhook delivery; ``status`` is None when the receiver was unreachable."""

    event: str
    action: str
    delivery_id: str
    status: int | None
    error: str | None = None


def sign_webhook(secret: str, body: bytes) -> str:
    """Return the ``X-Hub-Signature-256`` header value GitHub sends for ``body`` signed with ``secret``."""
    digest = hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


# --------------------------------------------------------------------------------------------
# Internals
# --------------------------------------------------------------------------------------------


class _HTTPError(Exception):
    """Raised inside request handling to answer with a GitHub-style JSON error."""

    def __init__(
        self,
        status: int,
        message: str,
        errors: list[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
        documentation: str = DOCS_URL,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.errors = errors
        self.headers = headers or {}
        self.documentation = documentation

    def payload(self) -> dict[str, Any]:
        data: dict[str, Any] = {"message": self.message, "documentation_url": self.documentation}
        if self.errors is not None:
            data["errors"] = self.errors
        if self.status in (409, 422):
            data["status"] = str(self.status)  # GitHub's error bodies repeat the status as a string
        return data


@dataclass
class _Response:
    status: int
    payload: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    # Work to do after the response is written (webhook deliveries), so a slow or re-entrant
    # receiver never delays or deadlocks the API caller.
    after: list[Callable[[], None]] = field(default_factory=list)


@dataclass
class _Fault:
    count: int
    status: int
    method: str | None
    path_prefix: str | None
    rate_limit: str = ""  # "primary" or "secondary": answer as GitHub's rate limits do
    wait_s: int = 1  # primary: seconds until x-ratelimit-reset; secondary: its retry-after


@dataclass
class _App:
    """A GitHub App known to the twin: its id, public key, one installation, the tokens it issued."""

    app_id: str
    public_key_pem: str
    installation_id: int
    permissions: dict[str, str]
    token_ttl_s: int
    tokens: dict[str, float] = field(default_factory=dict)  # token -> expiry (epoch seconds)

    def verify_jwt(self, text: str) -> None:
        """Check the App's JWT as GitHub does: RS256 with the App's key, issued by the App, short-lived."""
        import jwt  # PyJWT, which PyGithub needs anyway; only App tests get here

        try:
            claims = jwt.decode(
                text,
                self.public_key_pem,
                algorithms=["RS256"],
                options={"require": ["iat", "exp", "iss"]},
                leeway=60,
            )
        except jwt.PyJWTError as error:
            raise _HTTPError(401, f"A JSON web token could not be decoded ({error})") from error
        if str(claims["iss"]) != self.app_id:
            raise _HTTPError(401, "'Issuer' claim ('iss') must be the App's ID")
        if int(claims["exp"]) - int(claims["iat"]) > 660:
            raise _HTTPError(401, "'Expiration time' claim ('exp') is too far in the future")

    def issue(self) -> tuple[str, float]:
        token = "ghs_" + uuid.uuid4().hex + uuid.uuid4().hex[:4]
        expires = dt.datetime.now(dt.UTC).timestamp() + self.token_ttl_s
        self.tokens[token] = expires
        return token, expires

    def accepts(self, token: str) -> bool:
        expires = self.tokens.get(token)
        return expires is not None and expires > dt.datetime.now(dt.UTC).timestamp()


def _check_body(body: Any, resource: str) -> None:
    """GitHub's 422 for a body over its limit."""
    if isinstance(body, str) and len(body) > MAX_BODY_CHARS:
        raise _HTTPError(
            422,
            "Validation Failed",
            [
                {
                    "resource": resource,
                    "code": "custom",
                    "field": "body",
                    "message": f"body is too long (maximum is {MAX_BODY_CHARS} characters)",
                }
            ],
        )


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _wrap_base64(data: bytes) -> str:
    # GitHub wraps base64 content at 60 characters per line; clients must cope with the newlines.
    encoded = base64.b64encode(data).decode("ascii")
    return "".join(encoded[i : i + 60] + "\n" for i in range(0, len(encoded), 60))


def _scrubbed_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    # Drop any inherited GIT_* (e.g. GIT_DIR from a hook) and ignore system/global config so the
    # twin behaves the same on every machine and no user hook or alias can interfere.
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env.update(
        {
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_CONFIG_GLOBAL": os.devnull,
            "GIT_TERMINAL_PROMPT": "0",
            "LC_ALL": "C",
        }
    )
    if extra:
        env.update(extra)
    return env


class _Handler(BaseHTTPRequestHandler):
    """HTTP front end; all logic lives in :meth:`GitHubTwin._handle`."""

    protocol_version = "HTTP/1.1"  # keep-alive, as PyGithub's requests session expects
    server_version = "GitHubTwin/1.0"
    timeout = 60  # idle keep-alive connections must not pin handler threads forever
    # Headers and body go out in separate writes; without TCP_NODELAY, Nagle plus the client's
    # delayed ACK adds ~40 ms to every response.
    disable_nagle_algorithm = True
    twin: GitHubTwin

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        # Header names are case-insensitive; hand the twin a plain dict keyed in lower case.
        headers = {k.lower(): v for k, v in self.headers.items()}
        resp = self.twin._handle(self.command, self.path, headers, raw)
        body = b""
        if resp.status not in (204, 304) and resp.payload is not None:
            body = json.dumps(resp.payload).encode("utf-8")
        self.send_response(resp.status)
        for name, value in resp.headers.items():
            self.send_header(name, value)
        if body:
            self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if body:
            self.wfile.write(body)
        self.wfile.flush()
        for job in resp.after:
            self.twin._spawn(job)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve

    def log_message(self, format: str, *args: Any) -> None:
        # The console prints on_event lines instead; per-request access logs are noise.
        return


class GitHubTwin:
    """A local GitHub REST API over a local git repository (bare or non-bare).

    Use as a context manager or call :meth:`start` / :meth:`stop`.  ``api_url`` is the
    PyGithub ``base_url``.  ``on_event`` receives short human-readable lines for the console.
    """

    def __init__(
        self,
        repo_path: Path,
        full_name: str = "acme/widgets",
        token: str = "twin-token",
        webhook_url: str | None = None,
        webhook_secret: str | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        on_event: Callable[[str], None] | None = None,
    ) -> None:
        self.repo_path = Path(repo_path).resolve()
        self.full_name = full_name
        self.owner, _, self.name = full_name.partition("/")
        if not self.owner or not self.name:
            raise ValueError(f"full_name must look like 'owner/name', got {full_name!r}")
        self.token = token
        self.webhook_url = webhook_url
        self.webhook_secret = webhook_secret
        self.host = host
        self.port = port
        self.on_event = on_event
        self.requests: list[RecordedRequest] = []
        self.deliveries: list[WebhookDelivery] = []

        # One lock for every read-check-write on refs and PR state: concurrent PUTs must not
        # both pass the sha check, and two merges must not race on main.
        self._lock = threading.RLock()
        # Git objects never change, so what a full sha names is read from git once. Refs do change
        # (trackbot's worker pushes with plain git): they are read on every request.
        self._objects: dict[tuple[str, ...], Any] = {}
        self._pulls: dict[int, PullRecord] = {}
        self._faults: list[_Fault] = []
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._jobs: list[threading.Thread] = []
        # Several repositories behind one API URL (see serve()), a GitHub App (see enable_app()), and
        # the `permissions` the repository reports (tests make read-only credentials with it).
        self._started_at = _now()
        self._host: GitHubTwin | None = None
        self._others: dict[str, GitHubTwin] = {}
        self._app: _App | None = None
        self.repo_permissions: dict[str, bool] = {
            "admin": True,
            "maintain": True,
            "push": True,
            "triage": True,
            "pull": True,
        }

        # True: the twin's credentials cannot see this repository, and GitHub answers 404 for it.
        self.hidden = False
        # Some plans refuse drafts in private repositories; tests turn this off to be that repository.
        self.drafts_supported = True
        # Comments on pull requests (the issues API), by PR number.
        self.comments: dict[int, list[str]] = {}
        # Branches a ruleset protects (see protect()): name -> approving reviews a merge needs.
        self._protected: dict[str, int] = {}

        self.git_dir, self.work_tree = self._locate_repo()
        if self._rev("refs/heads/main") is None:
            raise TwinError(f"{self.repo_path} has no 'main' branch")

    # ---------------------------------------------------------------- lifecycle

    @property
    def api_url(self) -> str:
        """Root URL of the API (PyGithub ``base_url``), available once started."""
        if self._host is not None:
            return self._host.api_url
        if self._server is None:
            raise TwinError("GitHubTwin is not started")
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def html_url(self) -> str:
        """Root of the browser-style URLs (``{html_url}/acme/widgets/pull/1``)."""
        return self.api_url

    def start(self) -> GitHubTwin:
        """Bind the HTTP server and serve it from a daemon thread."""
        if self._server is not None:
            return self
        handler = type("_BoundHandler", (_Handler,), {"twin": self})
        server = ThreadingHTTPServer((self.host, self.port), handler)
        server.daemon_threads = True
        self._server = server
        # A short poll interval keeps stop() quick (tests start and stop many twins).
        self._thread = threading.Thread(target=server.serve_forever, args=(0.05,), name="github-twin", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, after letting in-flight webhook deliveries finish (bounded wait)."""
        self.wait_for_webhooks(timeout=10)
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = None
        self._thread = None

    def __enter__(self) -> GitHubTwin:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def wait_for_webhooks(self, timeout: float = 10.0) -> None:
        """Block until webhooks triggered by HTTP requests (delivered in the background) are sent."""
        with self._lock:
            jobs = list(self._jobs)
        for job in jobs:
            job.join(timeout=timeout)

    # ---------------------------------------------------------------- public Python API

    def pulls(self) -> list[PullRecord]:
        """Pull requests held in memory, ordered by number (copies; mutate via the API)."""
        with self._lock:
            return [PullRecord(**vars(p)) for _, p in sorted(self._pulls.items())]

    def fail_next(
        self, count: int = 1, status: int = 503, method: str | None = None, path_prefix: str | None = None
    ) -> None:
        """Make the next ``count`` matching requests fail with ``status`` and a GitHub-style error.

        ``path_prefix`` matches the request path (e.g. ``"/repos/acme/widgets/pulls"``).  For 403
        and 429 the rate-limit headers GitHub sends are included, so clients take their
        rate-limit code path.
        """
        with self._lock:
            self._faults.append(_Fault(count, status, method.upper() if method else None, path_prefix))

    def protect(self, branch: str = "main", required_approvals: int = 1) -> None:
        """Protect `branch` the way a ruleset with "Require a pull request before merging" does: the
        contents API's writes to it are refused (409, GitHub's rule-violation body), and an API merge
        into it needs `required_approvals` approving reviews (405 until then). :meth:`merge_pull` is a
        maintainer merging in the browser: it is allowed."""
        with self._lock:
            self._protected[branch] = required_approvals

    def rate_limit_next(
        self,
        kind: str = "primary",
        count: int = 1,
        wait_s: int = 1,
        status: int | None = None,
        method: str | None = None,
        path_prefix: str | None = None,
    ) -> None:
        """Answer the next `count` matching requests as GitHub's rate limits do.

        `primary`: 403 "API rate limit exceeded for user ID 1." with `x-ratelimit-remaining: 0` and
        `x-ratelimit-reset` `wait_s` seconds from now (no retry-after). `secondary`: `status` 403
        (or 429) "You have exceeded a secondary rate limit..." with `retry-after: wait_s`.
        """
        if kind not in ("primary", "secondary"):
            raise ValueError("kind is primary or secondary")
        answer = status or 403
        with self._lock:
            self._faults.append(_Fault(count, answer, method.upper() if method else None, path_prefix, kind, wait_s))

    def serve(self, other: GitHubTwin) -> GitHubTwin:
        """Serve `other`'s repository from this twin's server too: several repositories, one API URL.

        `other` is not started; its API calls, credentials and recorded requests are this twin's.
        """
        other._host = self
        self._others[other.full_name.lower()] = other
        return other

    def enable_app(
        self,
        app_id: str,
        public_key_pem: str,
        installation_id: int,
        permissions: dict[str, str] | None = None,
        token_ttl_s: int = 3600,
    ) -> None:
        """Act as GitHub for a GitHub App: `POST /app/installations/{id}/access_tokens`, authenticated
        with a JWT the App signed with its private key (RS256, checked against `public_key_pem`),
        issues an installation token (`ghs_…`, valid `token_ttl_s`) that the API then accepts."""
        self._app = _App(
            str(app_id),
            public_key_pem,
            int(installation_id),
            dict(permissions or {"contents": "write", "pull_requests": "write", "metadata": "read"}),
            token_ttl_s,
        )

    @property
    def installation_tokens(self) -> list[str]:
        """Every installation token issued so far, oldest first."""
        return [] if self._app is None else list(self._app.tokens)

    def merge_pull(self, number: int, merged_by: str = "alice") -> MergeResult:
        """Merge PR ``number`` into its base (the ``:merge N`` console command) and send the webhook.

        Raises :class:`MergeError` if the PR is not open or does not merge cleanly.  The
        ``pull_request``/``closed`` webhook is delivered before this returns.
        """
        sha, payload = self._merge(number, merged_by)
        status = self._deliver("pull_request", payload)
        return MergeResult(number=number, sha=sha, webhook_status=status)

    # ---------------------------------------------------------------- git helpers

    def _git(
        self,
        *args: str,
        input: bytes | None = None,
        env: Mapping[str, str] | None = None,
        check: bool = True,
        work_tree: bool = False,
    ) -> subprocess.CompletedProcess[bytes]:
        cmd = ["git", "-c", f"core.hooksPath={os.devnull}", f"--git-dir={self.git_dir}"]
        if work_tree and self.work_tree is not None:
            cmd.append(f"--work-tree={self.work_tree}")
        cmd.extend(args)
        cwd = self.work_tree if (work_tree and self.work_tree is not None) else self.git_dir
        proc = subprocess.run(cmd, input=input, capture_output=True, env=_scrubbed_env(env), cwd=cwd, check=False)
        if check and proc.returncode != 0:
            raise GitError(list(args), proc.returncode, proc.stderr.decode("utf-8", "replace"))
        return proc

    def _out(self, *args: str, **kw: Any) -> str:
        return self._git(*args, **kw).stdout.decode("utf-8", "replace").strip()

    def _locate_repo(self) -> tuple[Path, Path | None]:
        env = _scrubbed_env()

        def ask(*args: str) -> str:
            proc = subprocess.run(
                ["git", "-C", str(self.repo_path), "rev-parse", *args],
                capture_output=True,
                env=env,
                check=False,
            )
            if proc.returncode != 0:
                raise TwinError(f"{self.repo_path} is not a git repository: {proc.stderr.decode().strip()}")
            return proc.stdout.decode().strip()

        git_dir = Path(ask("--absolute-git-dir"))
        if ask("--is-bare-repository") == "true":
            return git_dir, None
        return git_dir, Path(ask("--show-toplevel"))

    def _rev(self, ref: str) -> str | None:
        """Resolve ``ref`` to a commit sha, or None."""
        target = self._loose_ref(ref) or ref
        if _FULL_SHA.fullmatch(target):
            return self._object(("commit", target), lambda: self._peel_commit(target))
        return self._peel_commit(ref)

    def _peel_commit(self, name: str) -> str | None:
        proc = self._git("rev-parse", "--verify", "-q", f"{name}^{{commit}}", check=False)
        return proc.stdout.decode().strip() if proc.returncode == 0 else None

    def _loose_ref(self, ref: str) -> str | None:
        """The sha a loose ref file holds (git writes them whole, by rename), else None: git is asked."""
        if not ref.startswith("refs/") or ".." in ref:
            return None
        try:
            text = (self.git_dir / ref).read_text().strip()
        except (OSError, UnicodeDecodeError):
            return None
        return text if _FULL_SHA.fullmatch(text) else None

    def _object(self, key: tuple[str, ...], read: Callable[[], Any]) -> Any:
        """What `read` says of a git object named by its full sha, remembered (None is not: it may come)."""
        if key in self._objects:
            return self._objects[key]
        value = read()
        if value is not None:
            if len(self._objects) > 4096:
                self._objects.clear()
            self._objects[key] = value
        return value

    def _blob(self, sha: str) -> bytes | None:
        """A blob's bytes, or None."""

        def read() -> bytes | None:
            proc = self._git("cat-file", "blob", sha, check=False)
            return proc.stdout if proc.returncode == 0 else None

        return self._object(("blob", sha), read) if _FULL_SHA.fullmatch(sha) else read()

    def _resolve_ref(self, ref: str) -> str | None:
        # A branch name wins over an ambiguous sha-like string, as on GitHub.
        if ref.startswith("refs/"):
            return self._rev(ref)
        return (
            self._rev(f"refs/heads/{ref}")
            or self._rev(f"refs/tags/{ref}")
            or (self._rev(ref) if all(c in "0123456789abcdefABCDEF" for c in ref) and len(ref) >= 4 else None)
        )

    def _ls_entry(self, commit: str, path: str) -> tuple[str, str, str, int] | None:
        """(mode, type, sha, size) of ``path`` in ``commit``, or None."""
        if _FULL_SHA.fullmatch(commit):
            found = self._object(("ls-entry", commit, path), lambda: self._read_ls_entry(commit, path) or ())
            return found or None
        return self._read_ls_entry(commit, path)

    def _read_ls_entry(self, commit: str, path: str) -> tuple[str, str, str, int] | None:
        out = self._git("ls-tree", "-l", "-z", "--full-tree", commit, "--", path).stdout
        for rec in out.split(b"\0"):
            if not rec:
                continue
            meta, _, name = rec.partition(b"\t")
            if name.decode("utf-8", "replace") != path:
                continue
            mode, typ, sha, size = meta.decode().split()
            return mode, typ, sha, int(size) if size != "-" else 0
        return None

    def _ls_tree(self, tree: str) -> list[tuple[str, str, str, int, str]]:
        if _FULL_SHA.fullmatch(tree):
            return list(self._object(("ls-tree", tree), lambda: self._read_ls_tree(tree)))
        return self._read_ls_tree(tree)

    def _read_ls_tree(self, tree: str) -> list[tuple[str, str, str, int, str]]:
        out = self._git("ls-tree", "-l", "-z", tree).stdout
        entries = []
        for rec in out.split(b"\0"):
            if not rec:
                continue
            meta, _, name = rec.partition(b"\t")
            mode, typ, sha, size = meta.decode().split()
            entries.append((mode, typ, sha, int(size) if size != "-" else 0, name.decode("utf-8", "replace")))
        return entries

    def _identity_env(self, author: tuple[str, str], committer: tuple[str, str]) -> dict[str, str]:
        return {
            "GIT_AUTHOR_NAME": author[0],
            "GIT_AUTHOR_EMAIL": author[1],
            "GIT_COMMITTER_NAME": committer[0],
            "GIT_COMMITTER_EMAIL": committer[1],
        }

    def _advance_branch(self, branch: str, old: str, new: str, reason: str) -> None:
        """Move ``branch`` from ``old`` to ``new`` atomically and keep a checked-out work tree in step."""
        proc = self._git("update-ref", "-m", reason, f"refs/heads/{branch}", new, old, check=False)
        if proc.returncode != 0:
            # The compare-and-swap lost: someone (e.g. a real `git push`) moved the branch meanwhile.
            raise _HTTPError(409, f"Reference refs/heads/{branch} was updated concurrently; try again.")
        if self.work_tree is None:
            return
        head = self._git("symbolic-ref", "-q", "HEAD", check=False).stdout.decode().strip()
        if head != f"refs/heads/{branch}":
            return
        # Refresh stat info first so an untouched file is not mistaken for a local edit, then do a
        # two-tree fast-forward: it updates only paths that changed between old and new and refuses
        # (leaving everything alone) if one of them has local modifications.
        self._git("update-index", "-q", "--refresh", work_tree=True, check=False)
        sync = self._git("read-tree", "-m", "-u", old, new, work_tree=True, check=False)
        if sync.returncode != 0:
            self._emit(
                f"github: warning: {branch} moved to {new[:7]} but the work tree at {self.work_tree} "
                f"was left alone (local changes?): {sync.stderr.decode('utf-8', 'replace').strip()}"
            )

    # ---------------------------------------------------------------- JSON builders

    def _owner_json(self) -> dict[str, Any]:
        return {
            "login": self.owner,
            "id": 1000,
            "node_id": "O_twin",
            "type": "Organization",
            "url": f"{self.api_url}/users/{self.owner}",
            "html_url": f"{self.html_url}/{self.owner}",
            "site_admin": False,
        }

    def _user_json(self, login: str) -> dict[str, Any]:
        bot = login == _BOT_LOGIN
        return {
            "login": login,
            "id": 2000 + (sum(login.encode()) % 1000),
            "node_id": f"U_{login}",
            "type": "Bot" if bot else "User",
            "site_admin": False,
            "url": f"{self.api_url}/users/{login}",
            "html_url": f"{self.html_url}/{login}",
        }

    def _repo_api(self) -> str:
        return f"{self.api_url}/repos/{self.full_name}"

    def _repo_json(self) -> dict[str, Any]:
        api = self._repo_api()
        return {
            "id": 4242,
            "node_id": "R_twin",
            "name": self.name,
            "full_name": self.full_name,
            "owner": self._owner_json(),
            "private": True,
            "visibility": "private",
            "fork": False,
            "archived": False,
            "disabled": False,
            "description": "local GitHub twin",
            "html_url": f"{self.html_url}/{self.full_name}",
            "url": api,
            "pulls_url": f"{api}/pulls{{/number}}",
            "contents_url": f"{api}/contents/{{+path}}",
            "default_branch": "main",
            "clone_url": self.repo_path.as_uri(),
            "git_url": self.repo_path.as_uri(),
            "ssh_url": str(self.repo_path),
            "permissions": dict(self.repo_permissions),
            "allow_merge_commit": True,
            "allow_squash_merge": True,
            "allow_rebase_merge": False,
            "created_at": "2024-01-01T00:00:00Z",
            # Fixed, so a response changes (and its ETag with it) only when its data does.
            "updated_at": self._started_at,
            "pushed_at": self._started_at,
        }

    def _content_links(self, path: str, ref: str, sha: str, kind: str) -> dict[str, Any]:
        api = self._repo_api()
        qpath = urllib.parse.quote(path)
        url = f"{api}/contents/{qpath}?ref={urllib.parse.quote(ref, safe='')}"
        git_url = f"{api}/git/{'blobs' if kind == 'file' else 'trees'}/{sha}"
        html = f"{self.html_url}/{self.full_name}/{'blob' if kind == 'file' else 'tree'}/{ref}/{qpath}"
        return {
            "url": url,
            "git_url": git_url,
            "html_url": html,
            "download_url": f"{self.html_url}/raw/{self.full_name}/{ref}/{qpath}" if kind == "file" else None,
            "_links": {"self": url, "git": git_url, "html": html},
        }

    def _entry_json(self, mode: str, typ: str, sha: str, size: int, path: str, ref: str) -> dict[str, Any]:
        kind = {"tree": "dir", "commit": "submodule"}.get(typ, "symlink" if mode == "120000" else "file")
        return {
            "type": kind,
            "name": path.rsplit("/", 1)[-1],
            "path": path,
            "sha": sha,
            "size": size if kind != "dir" else 0,
            **self._content_links(path, ref, sha, kind),
        }

    def _commit_json(self, sha: str) -> dict[str, Any]:
        fmt = "%T%x00%P%x00%an%x00%ae%x00%aI%x00%cn%x00%ce%x00%cI%x00%B"
        fields = self._git("show", "-s", f"--format={fmt}", sha).stdout.decode("utf-8", "replace").split("\0")
        tree, parents, an, ae, ad, cn, ce, cd, msg = fields[:9]
        api = self._repo_api()
        html_root = f"{self.html_url}/{self.full_name}"
        html = f"{html_root}/commit/{sha}"
        return {
            "sha": sha,
            "node_id": f"C_{sha}",
            "url": f"{api}/git/commits/{sha}",
            "html_url": html,
            "author": {"name": an, "email": ae, "date": ad},
            "committer": {"name": cn, "email": ce, "date": cd},
            "message": msg.rstrip("\n"),
            "tree": {"sha": tree, "url": f"{api}/git/trees/{tree}"},
            "parents": [
                {"sha": p, "url": f"{api}/commits/{p}", "html_url": f"{html_root}/commit/{p}"} for p in parents.split()
            ],
            "verification": {"verified": False, "reason": "unsigned", "signature": None, "payload": None},
        }

    def _rest_commit_json(self, sha: str) -> dict[str, Any]:
        # The /commits/{ref} shape: git data nested under "commit".
        git = self._commit_json(sha)
        api = self._repo_api()
        return {
            "sha": sha,
            "node_id": git["node_id"],
            "url": f"{api}/commits/{sha}",
            "html_url": git["html_url"],
            "commit": {k: git[k] for k in ("author", "committer", "message", "tree", "url", "verification")},
            "author": None,
            "committer": None,
            "parents": git["parents"],
        }

    def _pr_json(self, pr: PullRecord, with_mergeable: bool = False) -> dict[str, Any]:
        api = self._repo_api()
        url = f"{api}/pulls/{pr.number}"
        html = f"{self.html_url}/{self.full_name}/pull/{pr.number}"
        head_sha = pr.head_sha
        base_sha = pr.base_sha
        if pr.state == "open":
            # Branches get force-pushed: an open PR always shows the branch's current tip.
            head_sha = self._rev(f"refs/heads/{pr.head_ref}") or pr.head_sha
            base_sha = self._rev(f"refs/heads/{pr.base_ref}") or pr.base_sha
        mergeable: bool | None = None
        mergeable_state = "unknown"
        if with_mergeable and pr.state == "open":
            probe = self._git("merge-tree", "--write-tree", base_sha, head_sha, check=False)
            mergeable = probe.returncode == 0
            mergeable_state = "clean" if mergeable else "dirty"
        commits = 0
        if pr.state == "open" or pr.merged:
            count = self._git("rev-list", "--count", f"{base_sha}..{head_sha}", check=False)
            commits = int(count.stdout or 0) if count.returncode == 0 else 0
        repo = self._repo_json()
        return {
            "id": 100000 + pr.number,
            "node_id": self._pull_node_id(pr.number),
            "number": pr.number,
            "url": url,
            "html_url": html,
            "diff_url": f"{html}.diff",
            "patch_url": f"{html}.patch",
            "issue_url": f"{api}/issues/{pr.number}",
            "commits_url": f"{url}/commits",
            "comments_url": f"{api}/issues/{pr.number}/comments",
            "statuses_url": f"{api}/statuses/{head_sha}",
            "state": pr.state,
            "locked": False,
            "title": pr.title,
            "body": pr.body,
            "draft": pr.draft,
            "user": self._user_json(pr.user),
            "labels": [],
            "milestone": None,
            "assignee": None,
            "assignees": [],
            "requested_reviewers": [],
            "requested_teams": [],
            "created_at": pr.created_at,
            "updated_at": pr.updated_at,
            "closed_at": pr.closed_at,
            "merged_at": pr.merged_at,
            "merge_commit_sha": pr.merge_commit_sha,
            "merged": pr.merged,
            "mergeable": mergeable,
            "rebaseable": False,
            "mergeable_state": mergeable_state,
            "merged_by": self._user_json(pr.merged_by) if pr.merged_by else None,
            "comments": 0,
            "review_comments": 0,
            "commits": commits,
            "additions": 0,
            "deletions": 0,
            "changed_files": 0,
            "maintainer_can_modify": False,
            "author_association": "MEMBER",
            "auto_merge": None,
            "active_lock_reason": None,
            "head": {
                "label": f"{self.owner}:{pr.head_ref}",
                "ref": pr.head_ref,
                "sha": head_sha,
                "user": self._owner_json(),
                "repo": repo,
            },
            "base": {
                "label": f"{self.owner}:{pr.base_ref}",
                "ref": pr.base_ref,
                "sha": base_sha,
                "user": self._owner_json(),
                "repo": repo,
            },
            "_links": {
                "self": {"href": url},
                "html": {"href": html},
                "issue": {"href": f"{api}/issues/{pr.number}"},
                "commits": {"href": f"{url}/commits"},
            },
        }

    # ---------------------------------------------------------------- webhooks

    def _emit(self, text: str) -> None:
        if self.on_event is not None:
            # A broken console printer must not break the API.
            with contextlib.suppress(Exception):
                self.on_event(text)

    def _spawn(self, job: Callable[[], None]) -> None:
        t = threading.Thread(target=job, name="github-twin-webhook", daemon=True)
        with self._lock:  # handler threads spawn concurrently
            self._jobs = [j for j in self._jobs if j.is_alive()] + [t]
            t.start()  # under the lock: wait_for_webhooks must never see a thread not yet started

    def _hook_payload(self, action: str, pr: PullRecord, sender: str) -> dict[str, Any]:
        return {
            "action": action,
            "number": pr.number,
            "pull_request": self._pr_json(pr),
            "repository": self._repo_json(),
            "sender": self._user_json(sender),
        }

    def _deliver(self, event: str, payload: dict[str, Any]) -> int | None:
        """POST one webhook the way GitHub does; never raises.  Returns the receiver's status."""
        url = self.webhook_url
        if not url:
            return None
        body = json.dumps(payload, separators=(",", ":")).encode("utf-8")
        delivery_id = str(uuid.uuid4())
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "GitHub-Hookshot/twin",
            "X-GitHub-Event": event,
            "X-GitHub-Delivery": delivery_id,
            "X-GitHub-Hook-ID": "1",
            "X-GitHub-Hook-Installation-Target-Type": "repository",
            "X-GitHub-Hook-Installation-Target-ID": "4242",
        }
        if self.webhook_secret is not None:
            headers["X-Hub-Signature-256"] = sign_webhook(self.webhook_secret, body)
            sha1 = hmac.new(self.webhook_secret.encode("utf-8"), body, hashlib.sha1).hexdigest()
            headers["X-Hub-Signature"] = f"sha1={sha1}"
        action = str(payload.get("action", ""))
        status: int | None = None
        error: str | None = None
        try:
            req = urllib.request.Request(url, data=body, headers=headers, method="POST")
            with urllib.request.urlopen(req, timeout=15) as resp:
                status = int(resp.status)
        except urllib.error.HTTPError as exc:
            status = exc.code
            error = f"HTTP {exc.code}"
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
        self.deliveries.append(WebhookDelivery(event, action, delivery_id, status, error))
        if error is not None:
            self._emit(f"github: webhook {event}/{action} to {url} failed: {error}")
        return status

    # ---------------------------------------------------------------- operations

    def _merge(
        self,
        number: int,
        merged_by: str,
        expected_sha: str | None = None,
        method: str = "merge",
        title: str | None = None,
        message: str | None = None,
    ) -> tuple[str, dict[str, Any]]:
        with self._lock:
            pr = self._pulls.get(number)
            if pr is None:
                raise MergeError(f"PR #{number} does not exist", status=404)
            if pr.state != "open":
                raise MergeError(f"PR #{number} is not open (state: {pr.state})", status=405)
            base_old = self._rev(f"refs/heads/{pr.base_ref}")
            head = self._rev(f"refs/heads/{pr.head_ref}")
            if base_old is None or head is None:
                raise MergeError(f"PR #{number}: branch {pr.head_ref} or {pr.base_ref} is gone", status=405)
            if expected_sha is not None and expected_sha != head:
                raise MergeError("Head branch was modified. Review and try the merge again.", status=409)
            probe = self._git("merge-tree", "--write-tree", "--no-messages", base_old, head, check=False)
            if probe.returncode != 0:
                raise MergeError(f"PR #{number} has conflicts with {pr.base_ref}; merge refused", status=405)
            tree = probe.stdout.decode().split()[0]
            if method == "squash":
                # GitHub uses a given commit_title as it is; its default is the PR's title and number.
                msg = f"{title or f'{pr.title} (#{number})'}\n\n{message or ''}".rstrip() + "\n"
                parents = ["-p", base_old]
            else:
                msg = (
                    f"{title or f'Merge pull request #{number} from {self.owner}/{pr.head_ref}'}"
                    f"\n\n{message if message is not None else pr.title}"
                ).rstrip() + "\n"
                parents = ["-p", base_old, "-p", head]
            env = self._identity_env(
                (merged_by, f"{merged_by}@users.noreply.github.com"), ("GitHub", "noreply@github.com")
            )
            new = self._out("commit-tree", tree, *parents, input=msg.encode("utf-8"), env=env)
            try:
                self._advance_branch(pr.base_ref, base_old, new, f"merge PR #{number}")
            except _HTTPError as exc:
                raise MergeError(exc.message, status=409) from exc
            now = _now()
            pr.state, pr.merged, pr.merged_at, pr.closed_at, pr.updated_at = "closed", True, now, now, now
            pr.merged_by, pr.merge_commit_sha, pr.head_sha, pr.base_sha = merged_by, new, head, base_old
            payload = self._hook_payload("closed", pr, merged_by)
        # Emitted and delivered outside the lock: the receiver (the bot) typically calls straight
        # back into the API, e.g. to update NEXT_TRACK.json.
        self._emit(f"github: PR #{number} merged into {pr.base_ref} by {merged_by} ({new[:7]})")
        return new, payload

    def _put_contents(self, path: str, data: dict[str, Any]) -> _Response:
        message = data.get("message")
        content_b64 = data.get("content")
        if not isinstance(message, str) or not isinstance(content_b64, str):
            raise _HTTPError(422, 'Invalid request.\n\n"message" and "content" are required.')
        try:
            content = base64.b64decode(content_b64, validate=False)
        except ValueError as exc:
            raise _HTTPError(422, "content is not valid Base64") from exc
        branch = data.get("branch") or "main"
        sha = data.get("sha")
        who = data.get("committer") or {}
        author_in = data.get("author") or who
        committer = (
            who.get("name") or _BOT_LOGIN,
            who.get("email") or f"{_BOT_LOGIN}@users.noreply.github.com",
        )
        author = (author_in.get("name") or committer[0], author_in.get("email") or committer[1])
        with self._lock:
            old = self._rev(f"refs/heads/{branch}")
            if old is None:
                raise _HTTPError(404, f"Branch {branch} not found")
            if branch in self._protected:
                # GitHub's answer when a ruleset refuses a direct write (the same status as a stale sha).
                raise _HTTPError(
                    409,
                    "Repository rule violations found\n\nChanges must be made through a pull request.\n\n",
                    headers={},
                    documentation="https://docs.github.com/rest/repos/contents#create-or-update-file-contents",
                )
            entry = self._ls_entry(old, path)
            if entry is not None and entry[1] != "blob":
                raise _HTTPError(422, f"{path} is a directory")
            mode = entry[0] if entry else "100644"
            if entry is not None and not sha:
                raise _HTTPError(422, 'Invalid request.\n\n"sha" wasn\'t supplied.')
            if entry is not None and sha != entry[2]:
                raise _HTTPError(409, f"{path} does not match {sha}")
            blob = self._out("hash-object", "-w", "--no-filters", "--stdin", input=content)
            with tempfile.TemporaryDirectory(prefix="twin-index-") as tmp:
                # A private index: the repository's own index (if any) belongs to the user.
                idx = {"GIT_INDEX_FILE": str(Path(tmp) / "index")}
                self._git("read-tree", old, env=idx)
                self._git("update-index", "--add", "--cacheinfo", f"{mode},{blob},{path}", env=idx)
                tree = self._out("write-tree", env=idx)
            new = self._out(
                "commit-tree",
                tree,
                "-p",
                old,
                input=message.encode("utf-8"),
                env=self._identity_env(author, committer),
            )
            self._advance_branch(branch, old, new, f"contents: {message.splitlines()[0] if message else ''}")
            content_json = self._entry_json(mode, "blob", blob, len(content), path, branch)
            commit_json = self._commit_json(new)
        self._emit(f"github: {branch}/{path} updated: {message.splitlines()[0] if message else ''}")
        return _Response(201 if entry is None else 200, {"content": content_json, "commit": commit_json})

    def _create_pull(self, data: dict[str, Any]) -> _Response:
        title = data.get("title")
        head_in = data.get("head")
        base = data.get("base")
        if not isinstance(title, str) or not isinstance(head_in, str) or not isinstance(base, str):
            raise _HTTPError(422, 'Invalid request.\n\n"title", "head" and "base" are required.')
        owner, sep, head = head_in.partition(":")
        if not sep:
            owner, head = self.owner, head_in
        with self._lock:
            base_sha = self._rev(f"refs/heads/{base}")
            if base_sha is None:
                raise _HTTPError(
                    422,
                    "Validation Failed",
                    [{"resource": "PullRequest", "field": "base", "code": "invalid"}],
                )
            head_sha = self._rev(f"refs/heads/{head}") if owner.lower() == self.owner.lower() else None
            if head_sha is None:
                raise _HTTPError(
                    422,
                    "Validation Failed",
                    [
                        {
                            "resource": "PullRequest",
                            "field": "head",
                            "code": "invalid",
                            "message": f"No commits between {base} and {head}",
                        }
                    ],
                )
            ahead = int(self._out("rev-list", "--count", f"{base_sha}..{head_sha}") or 0)
            if ahead == 0:
                raise _HTTPError(
                    422,
                    "Validation Failed",
                    [
                        {
                            "resource": "PullRequest",
                            "code": "custom",
                            "message": f"No commits between {base} and {head}",
                        }
                    ],
                )
            for other in self._pulls.values():
                if other.state == "open" and other.head_ref == head and other.base_ref == base:
                    raise _HTTPError(
                        422,
                        "Validation Failed",
                        [
                            {
                                "resource": "PullRequest",
                                "code": "custom",
                                "message": f"A pull request already exists for {self.owner}:{head}.",
                            }
                        ],
                    )
            _check_body(data.get("body"), "PullRequest")
            if data.get("draft") and not self.drafts_supported:
                raise _HTTPError(
                    422,
                    "Validation Failed",
                    [
                        {
                            "resource": "PullRequest",
                            "code": "custom",
                            "message": "Draft pull requests are not supported in this repository.",
                        }
                    ],
                )
            now = _now()
            number = max(self._pulls, default=0) + 1
            pr = PullRecord(
                number=number,
                title=title,
                body=data.get("body"),
                head_ref=head,
                base_ref=base,
                head_sha=head_sha,
                base_sha=base_sha,
                draft=bool(data.get("draft") or False),
                created_at=now,
                updated_at=now,
            )
            self._pulls[number] = pr
            body = self._pr_json(pr, with_mergeable=True)
            payload = self._hook_payload("opened", pr, _BOT_LOGIN)
        self._emit(f"github: PR #{number} opened: {title} ({head} → {base})")
        resp = _Response(201, body, {"Location": body["url"]})
        resp.after.append(lambda: self._deliver_quiet("pull_request", payload))
        return resp

    def _deliver_quiet(self, event: str, payload: dict[str, Any]) -> None:
        self._deliver(event, payload)

    def _edit_pull(self, pr: PullRecord, data: dict[str, Any]) -> _Response:
        with self._lock:
            if "title" in data and isinstance(data["title"], str):
                pr.title = data["title"]
            if "body" in data:
                _check_body(data["body"], "PullRequest")
                pr.body = data["body"]
            state = data.get("state")
            action = "edited"
            if state == "closed" and pr.state == "open":
                pr.state, pr.closed_at, action = "closed", _now(), "closed"
                pr.head_sha = self._rev(f"refs/heads/{pr.head_ref}") or pr.head_sha
            elif state == "open" and pr.state == "closed":
                if pr.merged:
                    raise _HTTPError(
                        422,
                        "Validation Failed",
                        [
                            {
                                "resource": "PullRequest",
                                "code": "custom",
                                "message": "Cannot reopen a merged pull request",
                            }
                        ],
                    )
                pr.state, pr.closed_at, action = "open", None, "reopened"
            pr.updated_at = _now()
            body = self._pr_json(pr, with_mergeable=True)
            payload = self._hook_payload(action, pr, _BOT_LOGIN)
        if action != "edited":
            self._emit(f"github: PR #{pr.number} {action}")
        resp = _Response(200, body)
        resp.after.append(lambda: self._deliver_quiet("pull_request", payload))
        return resp

    # ---------------------------------------------------------------- HTTP dispatch

    def _handle(self, method: str, raw_path: str, headers: Mapping[str, str], raw: bytes) -> _Response:
        """Answer one HTTP request; records it and applies auth, fault injection and ETags."""
        parsed: Any = None
        try:
            if raw:
                try:
                    parsed = json.loads(raw)
                except ValueError as exc:
                    raise _HTTPError(400, "Problems parsing JSON") from exc
            resp = self._authorized(method, raw_path, headers, parsed)
        except _HTTPError as exc:
            resp = _Response(exc.status, exc.payload(), dict(exc.headers))
        except MergeError as exc:
            resp = _Response(exc.status, {"message": str(exc), "documentation_url": DOCS_URL})
        except Exception as exc:
            self._emit(f"github: internal error on {method} {raw_path}: {type(exc).__name__}: {exc}")
            resp = _Response(500, {"message": f"Server Error: {type(exc).__name__}: {exc}"})

        resp.headers.setdefault("X-GitHub-Media-Type", "github.v3; format=json")
        resp.headers.setdefault("X-GitHub-Request-Id", uuid.uuid4().hex[:16].upper())
        if resp.status != 401:
            for name, value in self._rate_headers(resp.status).items():
                resp.headers.setdefault(name, value)
        if method == "GET" and resp.status == 200:
            body = json.dumps(resp.payload).encode("utf-8")
            etag = f'"{hashlib.sha256(body).hexdigest()[:40]}"'
            resp.headers["ETag"] = etag
            wanted = [t.strip().removeprefix("W/") for t in (headers.get("if-none-match") or "").split(",")]
            if etag in wanted or "*" in wanted:
                resp = _Response(
                    304, None, {"ETag": etag, **{k: v for k, v in resp.headers.items() if k.startswith("X-")}}
                )
        recorded = {h: headers[h.lower()] for h in _RECORDED_HEADERS if headers.get(h.lower()) is not None}
        self.requests.append(RecordedRequest(method, raw_path, recorded, resp.status, parsed))
        return resp

    def _app_route(self, method: str, path: str, scheme: str, jwt_text: str) -> _Response:
        assert self._app is not None
        parts = path.strip("/").split("/")
        if not (method == "POST" and len(parts) == 4 and parts[:2] == ["app", "installations"]):
            raise _HTTPError(404, "Not Found")
        if parts[3] != "access_tokens" or not parts[2].isdigit():
            raise _HTTPError(404, "Not Found")
        if scheme.lower() != "bearer":
            raise _HTTPError(401, "A JSON web token could not be decoded")
        self._app.verify_jwt(jwt_text)
        if int(parts[2]) != self._app.installation_id:
            raise _HTTPError(404, "Not Found")
        token, expires = self._app.issue()
        self._emit(f"github: installation token issued for installation {parts[2]}")
        return _Response(
            201,
            {
                "token": token,
                "expires_at": dt.datetime.fromtimestamp(expires, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                "permissions": dict(self._app.permissions),
                "repository_selection": "selected",
            },
        )

    def _rate_headers(self, status: int) -> dict[str, str]:
        # Only a rate limit's own answer says 0 remaining (it sets the header itself): GitHub's other
        # 403s ("Resource not accessible by integration") leave plenty.
        reset = str(int(dt.datetime.now(dt.UTC).timestamp()) + 3600)
        remaining = str(_RATE_LIMIT - 1)
        return {
            "X-RateLimit-Limit": str(_RATE_LIMIT),
            "X-RateLimit-Remaining": remaining,
            "X-RateLimit-Reset": reset,
            "X-RateLimit-Used": "1",
            "X-RateLimit-Resource": "core",
        }

    def _take_fault(self, method: str, path: str) -> _Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.method is not None and fault.method != method:
                    continue
                if fault.path_prefix is not None and not path.startswith(fault.path_prefix):
                    continue
                fault.count -= 1
                if fault.count <= 0:
                    self._faults.remove(fault)
                return fault
        return None

    def _authorized(self, method: str, raw_path: str, headers: Mapping[str, str], data: Any) -> _Response:
        auth = headers.get("authorization") or ""
        scheme, _, given = auth.partition(" ")
        split = urllib.parse.urlsplit(raw_path)
        path = split.path
        if self._app is not None and path.startswith("/app/"):
            return self._app_route(method, path, scheme, given.strip())
        installation = self._app is not None and self._app.accepts(given.strip())
        if scheme.lower() not in ("token", "bearer") or not (
            installation or hmac.compare_digest(given.strip().encode(), self.token.encode())
        ):
            raise _HTTPError(401, "Bad credentials")
        if installation and path.rstrip("/") == "/user":
            raise _HTTPError(403, "Resource not accessible by integration")
        fault = self._take_fault(method, path)
        if fault is not None and fault.rate_limit == "primary":
            reset = int(dt.datetime.now(dt.UTC).timestamp()) + fault.wait_s
            raise _HTTPError(
                fault.status,
                "API rate limit exceeded for user ID 1. If you reach out to GitHub Support for help, please "
                "include the request ID.",
                headers={"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": str(reset)},
                documentation="https://docs.github.com/rest/overview/rate-limits-for-the-rest-api",
            )
        if fault is not None and fault.rate_limit == "secondary":
            raise _HTTPError(
                fault.status,
                "You have exceeded a secondary rate limit. Please wait a few minutes before you try again.",
                headers={"Retry-After": str(fault.wait_s)},
                documentation="https://docs.github.com/rest/overview/rate-limits-for-the-rest-api#about-secondary-rate-limits",
            )
        if fault is not None:
            extra: dict[str, str] = {}
            message = {500: "Server Error", 502: "Server Error", 503: "Service Unavailable"}.get(
                fault.status, f"Injected failure ({fault.status})"
            )
            if fault.status in (403, 429):
                message = "API rate limit exceeded for installation ID 1."
                extra = {"Retry-After": "1", "X-RateLimit-Remaining": "0"}
            raise _HTTPError(fault.status, message, headers=extra)
        query = {k: v[-1] for k, v in urllib.parse.parse_qs(split.query).items()}
        parts = [urllib.parse.unquote(p) for p in path.strip("/").split("/")] if path.strip("/") else []
        return self._route(method, parts, query, data if isinstance(data, dict) else {})

    def _pull_node_id(self, number: int) -> str:
        return f"PR_{self.full_name.replace('/', '_')}_{number}"

    def _graphql(self, data: dict[str, Any]) -> _Response:
        """GitHub's GraphQL API, as far as pull requests' draft state goes (REST cannot change it).

        `markPullRequestReadyForReview` and `convertPullRequestToDraft`, in the shape PyGithub sends
        (`Requester.graphql_named_mutation`); anything else gets GraphQL's error answer (HTTP 200)."""
        query = str(data.get("query") or "")
        found = re.search(r"\bmutation\b[^{]*\{\s*(\w+)\s*\(", query)
        mutation = found.group(1) if found else ""
        if mutation not in ("markPullRequestReadyForReview", "convertPullRequestToDraft"):
            return _Response(200, {"errors": [{"message": f"the twin does not serve this GraphQL: {query[:80]}"}]})
        node_id = str(((data.get("variables") or {}).get("input") or {}).get("pullRequestId") or "")
        for twin in (self, *self._others.values()):
            with twin._lock:
                for pr in twin._pulls.values():
                    if twin._pull_node_id(pr.number) != node_id:
                        continue
                    if pr.state != "open":
                        return _Response(200, {"errors": [{"message": "Pull request is closed"}]})
                    if mutation == "convertPullRequestToDraft" and not twin.drafts_supported:
                        message = "Draft pull requests are not supported in this repository."
                        return _Response(200, {"errors": [{"type": "UNPROCESSABLE", "message": message}]})
                    pr.draft = mutation == "convertPullRequestToDraft"
                    pr.updated_at = _now()
                    twin._emit(f"PR #{pr.number} {'is a draft again' if pr.draft else 'is ready for review'}")
                    answer = {"clientMutationId": None, "pullRequest": {"isDraft": pr.draft}}
                    return _Response(200, {"data": {mutation: answer}})
        message = f"Could not resolve to a node with the global id of '{node_id}'"
        return _Response(200, {"errors": [{"type": "NOT_FOUND", "message": message}]})

    def _route(self, method: str, parts: list[str], query: dict[str, str], data: dict[str, Any]) -> _Response:
        if parts == ["graphql"] and method == "POST":
            return self._graphql(data)
        if parts == ["user"] and method == "GET":
            return _Response(200, self._user_json(_BOT_LOGIN))
        if parts == ["rate_limit"] and method == "GET":
            core = {
                "limit": _RATE_LIMIT,
                "remaining": _RATE_LIMIT - 1,
                "used": 1,
                "reset": int(dt.datetime.now(dt.UTC).timestamp()) + 3600,
            }
            resources = {"core": core, "search": core, "graphql": core}
            return _Response(200, {"resources": resources, "rate": core})
        if len(parts) < 3 or parts[0] != "repos":
            raise _HTTPError(404, "Not Found")
        name = f"{parts[1]}/{parts[2]}".lower()
        target = self if name == self.full_name.lower() else self._others.get(name)
        if target is None or target.hidden:
            raise _HTTPError(404, "Not Found")
        rest = parts[3:]
        with target._lock:
            return target._route_repo(method, rest, query, data)

    def _route_repo(self, method: str, rest: list[str], query: dict[str, str], data: dict[str, Any]) -> _Response:
        if not rest and method == "GET":
            return _Response(200, self._repo_json())
        head, tail = (rest[0], rest[1:]) if rest else ("", [])
        if head == "contents":
            path = "/".join(tail).strip("/")
            if method == "GET":
                return self._get_contents(path, query.get("ref") or "main")
            if method == "PUT" and path:
                return self._put_contents(path, data)
        elif head == "pulls":
            if not tail:
                if method == "GET":
                    return self._list_pulls(query)
                if method == "POST":
                    return self._create_pull(data)
            else:
                pr = self._pulls.get(int(tail[0])) if tail[0].isdigit() else None
                if pr is None:
                    raise _HTTPError(404, "Not Found")
                if len(tail) == 1 and method == "GET":
                    return _Response(200, self._pr_json(pr, with_mergeable=True))
                if len(tail) == 1 and method == "PATCH":
                    return self._edit_pull(pr, data)
                if tail[1:] == ["merge"] and method == "GET":
                    if pr.merged:
                        return _Response(204)
                    raise _HTTPError(404, "Not Found")
                if tail[1:] == ["merge"] and method == "PUT":
                    return self._http_merge(pr, data)
        elif head == "issues" and len(tail) == 2 and tail[1] == "comments" and method == "POST":
            return self._comment(tail[0], data)
        elif head == "branches" and method == "GET":
            if not tail:
                return _Response(200, [self._branch_json(b) for b in self._branches()])
            name = "/".join(tail)
            if self._rev(f"refs/heads/{name}") is None:
                raise _HTTPError(404, "Branch not found")
            return _Response(200, self._branch_json(name))
        elif head == "commits" and method == "GET" and tail:
            sha = self._resolve_ref("/".join(tail))
            if sha is None:
                raise _HTTPError(422, f"No commit found for SHA: {'/'.join(tail)}")
            return _Response(200, self._rest_commit_json(sha))
        elif head == "git" and method == "GET" and len(tail) >= 2:
            return self._git_data(tail)
        elif head == "git" and method == "POST" and tail == ["refs"]:
            return self._create_ref(data)
        raise _HTTPError(404, "Not Found")

    def _http_merge(self, pr: PullRecord, data: dict[str, Any]) -> _Response:
        method = data.get("merge_method") or "merge"
        if method not in ("merge", "squash"):
            raise _HTTPError(405, f"{method} merges are not allowed on this repository.")
        needed = self._protected.get(pr.base_ref, 0)
        if needed:
            reviews = "review is" if needed == 1 else "reviews are"
            raise _HTTPError(
                405,
                f"Repository rule violations found\n\nAt least {needed} approving {reviews} required by "
                "reviewers with write access.\n\n",
            )
        sha, payload = self._merge(
            pr.number,
            _BOT_LOGIN,
            expected_sha=data.get("sha"),
            method=method,
            title=data.get("commit_title"),
            message=data.get("commit_message"),
        )
        resp = _Response(200, {"sha": sha, "merged": True, "message": "Pull Request successfully merged"})
        resp.after.append(lambda: self._deliver_quiet("pull_request", payload))
        return resp

    def _get_contents(self, path: str, ref: str) -> _Response:
        commit = self._resolve_ref(ref)
        if commit is None:
            raise _HTTPError(404, f"No commit found for the ref {ref}")
        if not path:
            tree = self._object(("tree", commit), lambda: self._out("rev-parse", f"{commit}^{{tree}}"))
            items = [self._entry_json(m, t, s, z, n, ref) for m, t, s, z, n in self._ls_tree(tree)]
            return _Response(200, items)
        entry = self._ls_entry(commit, path)
        if entry is None:
            raise _HTTPError(404, "Not Found")
        mode, typ, sha, size = entry
        if typ == "tree":
            items = [self._entry_json(m, t, s, z, f"{path}/{n}", ref) for m, t, s, z, n in self._ls_tree(sha)]
            return _Response(200, items)
        info = self._entry_json(mode, typ, sha, size, path, ref)
        if typ == "blob":
            blob = self._blob(sha)
            if blob is None:
                raise _HTTPError(404, "Not Found")
            info.update({"encoding": "base64", "content": _wrap_base64(blob)})
        return _Response(200, info)

    def _branches(self) -> list[str]:
        out = self._out("for-each-ref", "--format=%(refname:lstrip=2)", "refs/heads/")
        return [b for b in out.splitlines() if b]

    def _branch_json(self, name: str) -> dict[str, Any]:
        sha = self._rev(f"refs/heads/{name}") or ""
        api = self._repo_api()
        return {
            "name": name,
            "commit": {"sha": sha, "url": f"{api}/commits/{sha}"},
            "protected": name in self._protected,
            "_links": {
                "self": f"{api}/branches/{name}",
                "html": f"{self.html_url}/{self.full_name}/tree/{name}",
            },
        }

    def _git_data(self, tail: list[str]) -> _Response:
        api = self._repo_api()
        kind, rest = tail[0], "/".join(tail[1:])
        if kind in ("ref", "refs"):
            sha = self._rev(f"refs/{rest}")
            if sha is None:
                raise _HTTPError(404, "Not Found")
            return _Response(
                200,
                {
                    "ref": f"refs/{rest}",
                    "node_id": f"REF_{rest}",
                    "url": f"{api}/git/refs/{rest}",
                    "object": {"sha": sha, "type": "commit", "url": f"{api}/git/commits/{sha}"},
                },
            )
        if kind == "commits" and self._rev(rest) is not None:
            return _Response(200, self._commit_json(self._rev(rest) or ""))
        if kind == "blobs":
            blob = self._blob(rest)
            if blob is not None:
                return _Response(
                    200,
                    {
                        "sha": rest,
                        "node_id": f"B_{rest}",
                        "size": len(blob),
                        "url": f"{api}/git/blobs/{rest}",
                        "content": _wrap_base64(blob),
                        "encoding": "base64",
                    },
                )
        raise _HTTPError(404, "Not Found")

    def _comment(self, number_text: str, data: dict[str, Any]) -> _Response:
        pr = self._pulls.get(int(number_text)) if number_text.isdigit() else None
        if pr is None:
            raise _HTTPError(404, "Not Found")
        body = data.get("body")
        if not isinstance(body, str) or not body:
            raise _HTTPError(422, 'Invalid request.\n\n"body" is required.')
        _check_body(body, "IssueComment")
        comments = self.comments.setdefault(pr.number, [])
        comments.append(body)
        now, api = _now(), self._repo_api()
        comment_id = pr.number * 1000 + len(comments)
        return _Response(
            201,
            {
                "id": comment_id,
                "node_id": f"IC_{comment_id}",
                "url": f"{api}/issues/comments/{comment_id}",
                "html_url": f"{self.html_url}/{self.full_name}/pull/{pr.number}#issuecomment-{comment_id}",
                "issue_url": f"{api}/issues/{pr.number}",
                "body": body,
                "user": self._user_json(_BOT_LOGIN),
                "created_at": now,
                "updated_at": now,
                "author_association": "NONE",
            },
        )

    def _create_ref(self, data: dict[str, Any]) -> _Response:
        ref, sha = data.get("ref"), data.get("sha")
        if not isinstance(ref, str) or not isinstance(sha, str):
            raise _HTTPError(422, 'Invalid request.\n\n"ref" and "sha" are required.')
        if not ref.startswith("refs/") or ref.count("/") < 2:
            raise _HTTPError(422, "Reference name must start with 'refs/' and have at least two slashes.")
        if not _FULL_SHA.fullmatch(sha) or self._peel_commit(sha) is None:
            raise _HTTPError(422, "Object does not exist")
        if self._rev(ref) is not None:
            raise _HTTPError(422, "Reference already exists")
        self._git("update-ref", ref, sha, "0" * 40)
        self._emit(f"github: {ref} created at {sha[:7]}")
        rest = ref.removeprefix("refs/")
        api = self._repo_api()
        return _Response(
            201,
            {
                "ref": ref,
                "node_id": f"REF_{rest}",
                "url": f"{api}/git/refs/{rest}",
                "object": {"sha": sha, "type": "commit", "url": f"{api}/git/commits/{sha}"},
            },
        )

    def _list_pulls(self, query: dict[str, str]) -> _Response:
        # Single page only: the twin never holds more PRs than fit one page.
        if int(query.get("page", "1") or 1) > 1:
            return _Response(200, [])
        state = query.get("state", "open")
        head_filter = query.get("head")
        base_filter = query.get("base")
        result = []
        for pr in sorted(self._pulls.values(), key=lambda p: p.number, reverse=True):
            if state != "all" and pr.state != state:
                continue
            if base_filter and pr.base_ref != base_filter:
                continue
            if head_filter:
                owner, sep, ref = head_filter.partition(":")
                if not sep:
                    owner, ref = self.owner, head_filter
                if owner.lower() != self.owner.lower() or pr.head_ref != ref:
                    continue
            result.append(self._pr_json(pr))
        return _Response(200, result)
