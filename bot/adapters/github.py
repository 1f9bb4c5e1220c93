"""GitHub through PyGithub: the only module that imports `github`.

`base_url` points PyGithub at GitHub, GitHub Enterprise, or the local GitHub twin.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from github import Auth, Github, GithubException, UnknownObjectException
from github.ContentFile import ContentFile
from github.PullRequest import PullRequest


class GitHubError(Exception):
    """A GitHub call failed; the message says what was being done and what GitHub answered."""

    def __init__(self, doing: str, status: int | None, message: str) -> None:
        self.status = status
        super().__init__(f"calling GitHub to {doing}: {status or 'no answer'} {message}".strip())


class StaleFile(GitHubError):
    """The file changed since it was read (GitHub answered 409 to a contents update)."""


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


class GitHubRepo:
    """One repository on GitHub: files on a branch, pull requests."""

    def __init__(
        self,
        token: str,
        repository: str,
        base_url: str = "https://api.github.com",
        timeout: int = 15,
        retry: Any = None,
        write_interval_s: float | None = 1.0,
    ) -> None:
        self.repository = repository
        self._gh = Github(
            auth=Auth.Token(token),
            base_url=base_url,
            timeout=timeout,
            retry=retry,
            seconds_between_requests=None,
            seconds_between_writes=write_interval_s or None,
        )
        self._repo: Any = None

    def _call(self, doing: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            if self._repo is None:
                self._repo = self._gh.get_repo(self.repository)
            return fn(self._repo, *args, **kwargs)
        except GithubException as error:
            cls = StaleFile if error.status == 409 else GitHubError
            raise cls(doing, error.status, _message(error)) from None
        except OSError as error:  # connection refused, DNS, timeouts (requests' errors are OSErrors)
            raise GitHubError(doing, None, str(error)) from None

    def read_text(self, path: str, ref: str = "main") -> tuple[str, str] | None:
        """A file's text and blob sha on `ref`, or None if it does not exist."""

        def read(repo: Any) -> tuple[str, str] | None:
            try:
                content = repo.get_contents(path, ref=ref)
            except UnknownObjectException:
                return None
            if isinstance(content, list):
                return None
            return content.decoded_content.decode("utf-8"), content.sha

        return self._call(f"read {path}", read)

    def list_dir(self, path: str, ref: str = "main") -> list[str] | None:
        """Entry names of a folder on `ref`, or None if it does not exist."""

        def listing(repo: Any) -> list[str] | None:
            try:
                content = repo.get_contents(path, ref=ref)
            except UnknownObjectException:
                return None
            if isinstance(content, ContentFile):
                return None
            return [entry.name for entry in content]

        return self._call(f"list {path}", listing)

    def update_file(self, path: str, text: str, sha: str, message: str, branch: str = "main") -> str:
        """Commit new content for `path` if its blob is still `sha`; raise StaleFile otherwise."""

        def update(repo: Any) -> str:
            result = repo.update_file(path, message, text, sha, branch=branch)
            return str(result["commit"].sha)

        return self._call(f"update {path}", update)

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

    def update_pull(self, number: int, title: str, body: str) -> PullRef:
        """Replace an existing PR's title and body (a re-run of the same track)."""

        def update(repo: Any) -> PullRef:
            pr = repo.get_pull(number)
            pr.edit(title=title, body=body)
            return _pull_ref(pr)

        return self._call(f"update PR #{number}", update)

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
