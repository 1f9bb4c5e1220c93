"""GitHub through PyGithub: the only module that imports `github`.

`base_url` points PyGithub at GitHub, GitHub Enterprise, or the local GitHub twin.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from github import Auth, Github, GithubException, GithubIntegration, GithubRetry
from github.GithubException import RateLimitExceededExceedsMaxWait
from github.GithubObject import NotSet
from github.PullRequest import PullRequest

CONTENTS_CACHE_SIZE = 256


class GitHubError(Exception):
    """A GitHub call failed; the message says what was being done and what GitHub answered."""

    def __init__(self, doing: str, status: int | None, message: str) -> None:
        self.status = status
        super().__init__(f"calling GitHub to {doing}: {status or 'no answer'} {message}".strip())


class StaleFile(GitHubError):
    """The file changed since it was read (GitHub answered 409 to a contents update)."""


class RuleViolation(GitHubError):
    """A branch rule (a ruleset, or classic branch protection) refused the write: also a 409, but
    writing again will not help; `reason` is GitHub's own words, without the headline."""

    def __init__(self, doing: str, status: int | None, message: str) -> None:
        super().__init__(doing, status, message)
        lines = [line.strip() for line in message.splitlines() if line.strip()]
        self.reason = " ".join(lines[1:]) if len(lines) > 1 else (lines[0] if lines else "a branch rule")


# How GitHub words a 409 that is a rule, not a stale sha: rulesets ("Repository rule violations
# found\n\nChanges must be made through a pull request.") and classic branch protection.
_RULE_VIOLATION_STARTS = ("repository rule violations found", "protected branch update failed")


def _error_class(status: int | None, message: str) -> type[GitHubError]:
    if status in (405, 409, 422) and message.lower().startswith(_RULE_VIOLATION_STARTS):
        return RuleViolation
    if status == 409:
        return StaleFile
    return GitHubError


@dataclass(frozen=True)
class PullRef:
    """What trackbot needs to know about a PR."""

    number: int
    url: str
    state: str
    merged: bool
    head: str
    draft: bool
    merged_by: str | None = None  # the merger's GitHub login (filled by pull_if_changed)


class RepoNotVisible(GitHubError):
    """GitHub answers 404 for the repository itself: the token or App cannot see it (GitHub hides
    a private repository it does not share, rather than answering 403)."""

    def __init__(self, repository: str) -> None:
        Exception.__init__(
            self,
            f"the GitHub credentials cannot see {repository}: check the repository name, and that the token "
            "(or the App's installation) has access to it",
        )
        self.status = 404


class RateLimited(GitHubError):
    """GitHub's rate limit (primary: 403 with x-ratelimit-remaining 0; secondary: 403/429 with
    retry-after) outlasted the bounded wait; the message says until when."""


class _BoundedRetry(GithubRetry):
    """PyGithub's GithubRetry, for rate limits only (5xx are the run's own retries, bot.jobs), with
    a bound on `Retry-After` too: GithubRetry bounds the waits it computes, urllib3 sleeps any
    `Retry-After` it is given."""

    def increment(self, method: Any = None, url: Any = None, response: Any = None, *args: Any, **kwargs: Any) -> Any:
        if response is not None and self.max_rate_limit_wait is not None:
            wait = self.parse_retry_after(response.headers.get("Retry-After") or "0")
            if wait > self.max_rate_limit_wait:
                body = {"message": f"GitHub asks to wait {wait:.0f}s (Retry-After), longer than trackbot waits"}
                raise RateLimitExceededExceedsMaxWait(response.status, body, dict(response.headers), wait=wait)
        return super().increment(method, url, response, *args, **kwargs)


def rate_limit_retry(max_wait_s: float, attempts: int = 3) -> GithubRetry:
    """A retry for GitHubRepo: GitHub's rate limits are waited out (at most `max_wait_s` each,
    `attempts` times), through PyGithub's own GithubRetry; other failures are not retried here."""
    return _BoundedRetry(
        total=attempts,
        secondary_rate_wait=min(60.0, max_wait_s),
        max_rate_limit_wait=max_wait_s,
        status_forcelist=[429],  # GithubRetry adds 403, and retries it only for a rate limit
        allowed_methods=frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"}),
        raise_on_status=False,  # the last answer, not urllib3's MaxRetryError: GitHub's words reach the user
        backoff_factor=0,
        connect=0,
        read=0,
        other=0,
    )


def _rate_limited(error: GithubException) -> bool:
    headers = {str(k).lower(): str(v) for k, v in (error.headers or {}).items()}
    if error.status == 429 or (error.status == 403 and "retry-after" in headers):
        return True
    return error.status == 403 and headers.get("x-ratelimit-remaining") == "0"


def _rate_limit_words(error: GithubException) -> str:
    headers = {str(k).lower(): str(v) for k, v in (error.headers or {}).items()}
    reset = headers.get("x-ratelimit-reset", "")
    when = ""
    if reset.isdigit() and headers.get("x-ratelimit-remaining") == "0":
        when = f"; it resets at {dt.datetime.fromtimestamp(int(reset), dt.UTC):%H:%M} UTC"
    elif headers.get("retry-after"):
        when = f"; GitHub asks to wait {headers['retry-after']}s"
    return f" (GitHub's rate limit, still hit after waiting{when})"


def _message(error: GithubException) -> str:
    data: Any = error.data
    if isinstance(data, dict):
        text = str(data.get("message", ""))
        for item in data.get("errors", []) or []:
            if isinstance(item, dict) and item.get("message"):
                text += f" ({item['message']})"
        return text
    return str(data or "")


def _pull_ref(pr: PullRequest) -> PullRef:
    return PullRef(pr.number, pr.html_url, pr.state, bool(pr.merged), pr.head.ref, bool(pr.draft))


def error_kind(status: int | None) -> str:
    """The label an API error is counted under: GitHub's HTTP status, or `connection`."""
    return str(status) if status else "connection"


@dataclass(frozen=True)
class RepoAccess:
    """What the credentials may do on a repository, as GitHub reports it."""

    full_name: str
    # The repository's `permissions` (pull, push, admin...); None when GitHub gives none, as for an
    # App installation's token, whose permissions are the installation's.
    permissions: dict[str, bool] | None


class GitHubAuth:
    """How trackbot signs in to GitHub: a token, or a GitHub App installation.

    An installation's tokens last an hour; PyGithub mints a new one when the current one is about
    to expire, both for API calls and for `token()` (what git pushes with).
    """

    def __init__(
        self,
        token: str | None = None,
        *,
        app_id: str | None = None,
        private_key: str | None = None,
        installation_id: int | None = None,
        base_url: str = "https://api.github.com",
        timeout: int = 15,
    ) -> None:
        self.base_url = base_url
        self.timeout = timeout
        self.installation_id = installation_id
        self.app: Auth.AppAuth | None = None
        self.auth: Auth.Auth
        if token:
            self.auth = Auth.Token(token)
            return
        if not (app_id and private_key and installation_id):
            raise ValueError("GitHubAuth needs a token, or an App's id, private key and installation id")
        self.app = Auth.AppAuth(app_id, private_key)
        self.auth = self.app.get_installation_auth(installation_id)
        # A client binds the installation auth to a requester, so token() works before any API call.
        Github(auth=self.auth, base_url=base_url, timeout=timeout, retry=None, seconds_between_requests=None)

    @property
    def kind(self) -> str:
        """`token` or `app`."""
        return "token" if self.app is None else "app"

    def token(self) -> str:
        """A token for git over HTTPS: the configured one, or a current installation token."""
        try:
            return str(self.auth.token)
        except GithubException as error:
            raise GitHubError("get an installation token", error.status, _message(error)) from None
        except OSError as error:
            raise GitHubError("get an installation token", None, str(error)) from None

    def installation_permissions(self) -> dict[str, str]:
        """The permissions an App installation grants (`{"contents": "write", ...}`), from a fresh token."""
        if self.app is None or self.installation_id is None:
            raise ValueError("not a GitHub App")
        integration = GithubIntegration(auth=self.app, base_url=self.base_url, timeout=self.timeout, retry=None)
        try:
            granted = integration.get_access_token(self.installation_id)
        except GithubException as error:
            raise GitHubError("get an installation token", error.status, _message(error)) from None
        except OSError as error:
            raise GitHubError("get an installation token", None, str(error)) from None
        return {str(k): str(v) for k, v in (granted.permissions or {}).items()}


class GitHubRepo:
    """One repository on GitHub: files on a branch, pull requests."""

    def __init__(
        self,
        token: str | GitHubAuth,
        repository: str,
        base_url: str = "https://api.github.com",
        timeout: int = 15,
        retry: Any = None,
        write_interval_s: float | None = 1.0,
        on_error: Callable[[str], None] | None = None,
    ) -> None:
        self.repository = repository
        self._on_error = on_error  # told the kind of every failed call (metrics)
        auth = token.auth if isinstance(token, GitHubAuth) else Auth.Token(token)
        self._gh = Github(
            auth=auth,
            base_url=base_url,
            timeout=timeout,
            retry=retry,
            seconds_between_requests=None,
            seconds_between_writes=write_interval_s or None,
        )
        self._repo: Any = None
        self._visible = False  # GitHub has answered for this repository once: a later 404 is a missing file
        self._repo_url = f"{base_url.rstrip('/')}/repos/{repository}"
        # Contents read before, by (path, ref): their ETag and JSON. A conditional GET answered 304
        # costs no rate limit, so a warm `/track status` spends none.
        self._contents_cache: OrderedDict[tuple[str, str], tuple[str, Any]] = OrderedDict()
        self._cache_lock = threading.Lock()

    def _call(self, doing: str, fn: Any, *args: Any, needs_repo: bool = True, **kwargs: Any) -> Any:
        try:
            if self._repo is None and needs_repo:
                self._repo = self._gh.get_repo(self.repository)
                self._visible = True
            return fn(self._repo, *args, **kwargs)
        except RepoNotVisible:
            self._count_error(404)
            raise
        except GithubException as error:
            self._count_error(error.status)
            if error.status == 404 and self._repo is None and needs_repo:
                raise RepoNotVisible(self.repository) from None
            message = _message(error)
            if _rate_limited(error):
                # urllib3 hands back the last answer after GithubRetry has read its body: it may be gone.
                words = message or "the rate limit is spent"
                raise RateLimited(doing, error.status, words + _rate_limit_words(error)) from None
            raise _error_class(error.status, message)(doing, error.status, message) from None
        except OSError as error:  # connection refused, DNS, timeouts (requests' errors are OSErrors)
            self._count_error(None)
            raise GitHubError(doing, None, str(error)) from None

    def _count_error(self, status: int | None) -> None:
        if self._on_error is not None:
            self._on_error(error_kind(status))

    def access(self) -> RepoAccess:
        """The repository as the credentials see it: readable at all, and with which permissions."""

        def read(repo: Any) -> RepoAccess:
            raw = repo.raw_data.get("permissions")
            permissions = {str(k): bool(v) for k, v in raw.items()} if isinstance(raw, dict) else None
            return RepoAccess(str(repo.full_name), permissions)

        return self._call("read the repository", read)

    def _contents(self, path: str, ref: str) -> Any:
        """The contents API's JSON for `path` on `ref` (None when missing), by conditional GET."""
        key = (path, ref)
        with self._cache_lock:
            cached = self._contents_cache.get(key)
        headers = {"If-None-Match": cached[0]} if cached else {}
        url = f"{self._repo_url}/contents/{quote(path)}?ref={quote(ref, safe='')}"
        status, answer_headers, body = self._gh.requester.requestJson("GET", url, headers=headers)
        if status == 304 and cached is not None:
            return cached[1]
        if status == 404:
            if not self._visible and self._hidden():
                raise RepoNotVisible(self.repository)
            return None
        if status < 400:
            self._visible = True
        try:
            data: Any = json.loads(body) if body else None
        except ValueError:
            data = None
        if status >= 400 or data is None:
            raise GithubException(status, data, answer_headers)
        etag = answer_headers.get("etag")
        if etag:
            with self._cache_lock:
                self._contents_cache[key] = (etag, data)
                self._contents_cache.move_to_end(key)
                while len(self._contents_cache) > CONTENTS_CACHE_SIZE:
                    self._contents_cache.popitem(last=False)
        return data

    def _hidden(self) -> bool:
        """Whether GitHub answers 404 for the repository itself (asked once, after a 404 for a file)."""
        status, _headers, _body = self._gh.requester.requestJson("GET", self._repo_url)
        self._visible = status < 400
        return status == 404

    def read_text(self, path: str, ref: str = "main") -> tuple[str, str] | None:
        """A file's text and blob sha on `ref`, or None if it does not exist."""

        def read(_repo: Any) -> tuple[str, str] | None:
            data = self._contents(path, ref)
            if not isinstance(data, dict) or data.get("type") != "file":
                return None
            text = base64.b64decode(str(data.get("content") or "")).decode("utf-8")
            return text, str(data["sha"])

        return self._call(f"read {path}", read, needs_repo=False)

    def list_dir(self, path: str, ref: str = "main") -> list[str] | None:
        """Entry names of a folder on `ref`, or None if it does not exist."""

        def listing(_repo: Any) -> list[str] | None:
            data = self._contents(path, ref)
            if not isinstance(data, list):
                return None
            return [str(entry.get("name")) for entry in data if isinstance(entry, dict)]

        return self._call(f"list {path or 'the repository root'}", listing, needs_repo=False)

    def update_file(self, path: str, text: str, sha: str, message: str, branch: str = "main") -> str:
        """Commit new content for `path` if its blob is still `sha`; raise StaleFile otherwise."""

        def update(repo: Any) -> str:
            result = repo.update_file(path, message, text, sha, branch=branch)
            return str(result["commit"].sha)

        return self._call(f"update {path}", update)

    def branch_sha(self, branch: str) -> str:
        """The commit `branch` points at."""
        return self._call(f"read branch {branch}", lambda repo: str(repo.get_branch(branch).commit.sha))

    def create_branch(self, branch: str, sha: str) -> None:
        """Create `branch` at commit `sha` (the git refs API)."""
        self._call(f"create branch {branch}", lambda repo: repo.create_git_ref(f"refs/heads/{branch}", sha))

    def merge_pull(self, number: int, title: str, sha: str | None = None) -> str:
        """Merge a PR (squash, its commit titled `title`); the merge commit's sha. A rule that asks for
        reviews or checks first answers 405, raised as a GitHubError."""

        def merge(repo: Any) -> str:
            status = repo.get_pull(number).merge(
                commit_title=title, commit_message="", merge_method="squash", sha=sha or NotSet
            )
            return str(status.sha)

        return self._call(f"merge PR #{number}", merge)

    def find_open_pull(self, head: str, base: str = "main") -> PullRef | None:
        """The open PR from branch `head`, if any."""
        owner = self.repository.split("/", 1)[0]

        def find(repo: Any) -> PullRef | None:
            for pr in repo.get_pulls(state="open", head=f"{owner}:{head}", base=base):
                return _pull_ref(pr)
            return None

        return self._call(f"look for an open PR from {head}", find)

    def open_pull(self, head: str, base: str, title: str, body: str, draft: bool) -> PullRef:
        """Open a PR."""

        def create(repo: Any) -> PullRef:
            return _pull_ref(repo.create_pull(base, head, title=title, body=body, draft=draft))

        return self._call(f"open a PR from {head}", create)

    def update_pull(self, number: int, title: str, body: str, draft: bool) -> PullRef:
        """Replace an existing PR's title and body, and make it a draft or ready for review (a re-run of
        the same track). REST cannot change the draft state: GitHub's GraphQL mutations do."""

        def update(repo: Any) -> PullRef:
            pr = repo.get_pull(number)
            pr.edit(title=title, body=body)
            if bool(pr.draft) != draft:
                if draft:
                    pr.convert_to_draft()
                else:
                    pr.mark_ready_for_review()
            return _pull_ref(pr)

        return self._call(f"update PR #{number}", update)

    def comment(self, number: int, body: str) -> None:
        """Add a comment to PR `number` (the issues API: a PR is an issue)."""

        def post(_repo: Any) -> None:
            self._gh.requester.requestJsonAndCheck(
                "POST", f"{self._repo_url}/issues/{number}/comments", input={"body": body}
            )

        self._call(f"comment on PR #{number}", post, needs_repo=False)

    def get_pull(self, number: int) -> PullRef:
        """A PR by number."""
        return self._call(f"read PR #{number}", lambda repo: _pull_ref(repo.get_pull(number)))

    def pull_if_changed(self, number: int, etag: str | None) -> tuple[PullRef | None, str | None]:
        """A PR by number with a conditional GET: `(None, etag)` when unchanged since `etag`, else `(PR, new ETag)`.

        GitHub answers `If-None-Match` with 304 when nothing changed, and a 304 costs no rate limit,
        so polling open PRs this way is free until one changes. PyGithub's `get_pull` sends no
        conditional headers, hence its requester directly.
        """

        def fetch(repo: Any) -> tuple[PullRef | None, str | None]:
            headers = {"If-None-Match": etag} if etag else {}
            status, answer_headers, body = self._gh.requester.requestJson(
                "GET", f"{repo.url}/pulls/{number}", headers=headers
            )
            new_etag = answer_headers.get("etag") or etag
            if status == 304:
                return None, new_etag
            try:
                data: Any = json.loads(body) if body else None
            except ValueError:
                data = None
            if status >= 400 or not isinstance(data, dict):
                raise GithubException(status, data, answer_headers)
            pull = PullRef(
                int(data.get("number") or number),
                str(data.get("html_url") or ""),
                str(data.get("state") or ""),
                bool(data.get("merged")),
                str((data.get("head") or {}).get("ref") or ""),
                bool(data.get("draft")),
                (data.get("merged_by") or {}).get("login"),
            )
            return pull, new_etag

        return self._call(f"check PR #{number}", fetch)


class GitHubFiles:
    """A repository's files on a branch as `plan.RepoFiles`, read through the contents API."""

    def __init__(self, github: GitHubRepo, ref: str = "main") -> None:
        self.github = github
        self.ref = ref

    def list_dir(self, path: str) -> list[str] | None:
        """Entry names in `path`, None if missing."""
        return self.github.list_dir(path, self.ref)

    def read_text(self, path: str) -> str | None:
        """Text of `path`, None if missing."""
        found = self.github.read_text(path, self.ref)
        return None if found is None else found[0]
