"""The local GitHub twin, exercised with the real PyGithub client over a real git repository."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import subprocess
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import github
import pytest
from github import Auth, Github

from bot.adapters.github import GitHubRepo, RateLimited, RuleViolation, StaleFile, rate_limit_retry
from bot.local.github_api import GitHubTwin, MergeError, sign_webhook

TOKEN = "test-token"
SECRET = "hook-secret"
NEXT_TRACK = '{"next_track": 1}\n'


def git(cwd: Path, *args: str) -> str:
    """Run git in ``cwd`` with a fixed identity and no user/system config."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env.update(
        GIT_CONFIG_NOSYSTEM="1",
        GIT_CONFIG_GLOBAL=os.devnull,
        GIT_AUTHOR_NAME="Dev",
        GIT_AUTHOR_EMAIL="dev@example.com",
        GIT_COMMITTER_NAME="Dev",
        GIT_COMMITTER_EMAIL="dev@example.com",
    )
    proc = subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, text=True, check=True)
    return proc.stdout.strip()


def seed_clone(clone: Path) -> None:
    """Initial commit on main: configs/NEXT_TRACK.json, docs/, README."""
    git(clone, "init", "-q", "-b", "main")
    (clone / "configs").mkdir()
    (clone / "configs" / "NEXT_TRACK.json").write_text(NEXT_TRACK)
    (clone / "docs").mkdir()
    (clone / "docs" / "intro.md").write_text("# Intro\n")
    (clone / "docs" / "guide.md").write_text("# Guide\n")
    (clone / "README.md").write_text("widgets\n")
    git(clone, "add", "-A")
    git(clone, "commit", "-q", "-m", "initial")


def add_track_branch(clone: Path) -> None:
    """Push branch track-1-hello with one commit adding hello.py."""
    git(clone, "checkout", "-q", "-b", "track-1-hello")
    (clone / "hello.py").write_text("print('hello')\n")
    git(clone, "add", "hello.py")
    git(clone, "commit", "-q", "-m", "Track 1: hello")
    git(clone, "push", "-q", "origin", "track-1-hello")
    git(clone, "checkout", "-q", "main")


@pytest.fixture
def bare(tmp_path: Path) -> Path:
    """A bare upstream with main and a pushed track-1-hello branch."""
    seed = tmp_path / "seed"
    seed.mkdir()
    seed_clone(seed)
    upstream = tmp_path / "upstream.git"
    git(tmp_path, "clone", "-q", "--bare", str(seed), str(upstream))
    work = tmp_path / "work"
    git(tmp_path, "clone", "-q", str(upstream), str(work))
    add_track_branch(work)
    return upstream


class Receiver:
    """A tiny webhook receiver recording (headers, raw body) of each POST."""

    def __init__(self) -> None:
        self.hits: list[tuple[dict[str, str], bytes]] = []
        self.got = threading.Event()
        outer = self

        class H(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                outer.hits.append(({k.lower(): v for k, v in self.headers.items()}, body))
                outer.got.set()
                self.send_response(202)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/github/webhook"
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    def events(self) -> list[dict[str, Any]]:
        return [json.loads(body) for _, body in self.hits]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.server.shutdown()
    r.server.server_close()


@pytest.fixture
def twin(bare: Path, receiver: Receiver) -> Iterator[GitHubTwin]:
    events: list[str] = []
    t = GitHubTwin(bare, token=TOKEN, webhook_url=receiver.url, webhook_secret=SECRET, on_event=events.append)
    t.events = events  # type: ignore[attr-defined]
    with t:
        yield t


def client(twin: GitHubTwin, token: str = TOKEN) -> Github:
    # seconds_between_writes defaults to 1 s in PyGithub: every write after the first would sleep.
    return Github(
        auth=Auth.Token(token),
        base_url=twin.api_url,
        retry=None,
        seconds_between_requests=None,
        seconds_between_writes=None,
    )


def test_repo_and_user(twin: GitHubTwin) -> None:
    gh = client(twin)
    repo = gh.get_repo("acme/widgets")
    assert repo.full_name == "acme/widgets"
    assert repo.default_branch == "main"
    assert repo.owner.login == "acme"
    assert gh.get_user().login == "trackbot"
    with pytest.raises(github.UnknownObjectException):
        gh.get_repo("acme/other")


def test_get_contents_file_and_directory(twin: GitHubTwin, bare: Path) -> None:
    repo = client(twin).get_repo("acme/widgets")
    f = repo.get_contents("configs/NEXT_TRACK.json")
    assert not isinstance(f, list)
    assert f.decoded_content.decode() == NEXT_TRACK
    assert f.sha == git(bare, "rev-parse", "main:configs/NEXT_TRACK.json")  # the git blob sha
    listing = repo.get_contents("docs")
    assert isinstance(listing, list)
    assert sorted((c.name, c.type, c.path) for c in listing) == [
        ("guide.md", "file", "docs/guide.md"),
        ("intro.md", "file", "docs/intro.md"),
    ]
    # A branch ref and a file that only exists there.
    on_branch = repo.get_contents("hello.py", ref="track-1-hello")
    assert not isinstance(on_branch, list)
    assert on_branch.decoded_content == b"print('hello')\n"
    with pytest.raises(github.UnknownObjectException):
        repo.get_contents("hello.py")  # not on main


def test_update_file_commits_to_main_and_stale_sha_is_409(twin: GitHubTwin, bare: Path) -> None:
    repo = client(twin).get_repo("acme/widgets")
    f = repo.get_contents("configs/NEXT_TRACK.json")
    assert not isinstance(f, list)
    result = repo.update_file(f.path, "Update next_track value from 1 to 2", '{"next_track": 2}\n', f.sha)
    new_sha = result["commit"].sha
    assert git(bare, "rev-parse", "main") == new_sha
    assert git(bare, "log", "-1", "--format=%s", "main") == "Update next_track value from 1 to 2"
    assert git(bare, "show", "main:configs/NEXT_TRACK.json") == '{"next_track": 2}'
    assert result["content"].sha == git(bare, "rev-parse", "main:configs/NEXT_TRACK.json")
    assert "github: main/configs/NEXT_TRACK.json updated: Update next_track value from 1 to 2" in twin.events  # type: ignore[attr-defined]

    with pytest.raises(github.GithubException) as exc:
        repo.update_file(f.path, "stale write", '{"next_track": 99}\n', f.sha)  # the old sha
    assert exc.value.status == 409
    assert "does not match" in exc.value.data["message"]
    assert git(bare, "rev-parse", "main") == new_sha  # unchanged


def test_concurrent_updates_with_same_sha_only_one_wins(twin: GitHubTwin, bare: Path) -> None:
    repo = client(twin).get_repo("acme/widgets")
    f = repo.get_contents("configs/NEXT_TRACK.json")
    assert not isinstance(f, list)
    outcomes: list[int] = []

    def write(n: int) -> None:
        try:
            client(twin).get_repo("acme/widgets").update_file(f.path, f"w{n}", f"{n}\n", f.sha)
            outcomes.append(200)
        except github.GithubException as e:
            outcomes.append(e.status)

    threads = [threading.Thread(target=write, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == [200, 409, 409, 409, 409, 409]
    assert git(bare, "rev-list", "--count", "main") == "2"


def test_pull_request_lifecycle_and_signed_merge_webhook(twin: GitHubTwin, bare: Path, receiver: Receiver) -> None:
    repo = client(twin).get_repo("acme/widgets")
    pr = repo.create_pull(title="Track 1: hello", body="first", head="track-1-hello", base="main")
    assert pr.number == 1
    assert pr.html_url.endswith("/acme/widgets/pull/1")
    assert pr.head.sha == git(bare, "rev-parse", "track-1-hello")
    assert "github: PR #1 opened: Track 1: hello (track-1-hello → main)" in twin.events  # type: ignore[attr-defined]
    twin.wait_for_webhooks()
    assert [(e["action"], e["number"]) for e in receiver.events()] == [("opened", 1)]

    with pytest.raises(github.GithubException) as dup:
        repo.create_pull(title="again", body="", head="acme:track-1-hello", base="main")
    assert dup.value.status == 422
    assert "A pull request already exists for acme:track-1-hello." in json.dumps(dup.value.data)

    found = list(repo.get_pulls(state="open", head="acme:track-1-hello"))
    assert [p.number for p in found] == [1]
    assert list(repo.get_pulls(state="open", head="acme:track-2-nope")) == []

    pr.edit(body="updated body")
    assert repo.get_pull(1).body == "updated body"

    receiver.hits.clear()
    result = twin.merge_pull(1, merged_by="alice")
    assert result.webhook_status == 202
    main = git(bare, "rev-parse", "main")
    assert result.sha == main
    assert git(bare, "show", "main:hello.py") == "print('hello')"
    assert len(git(bare, "rev-list", "--parents", "-n1", "main").split()) == 3  # merge commit: 2 parents
    assert git(bare, "log", "-1", "--format=%s", "main") == "Merge pull request #1 from acme/track-1-hello"

    # Exactly one signed delivery, verifiable with the shared secret.
    assert len(receiver.hits) == 1
    headers, body = receiver.hits[0]
    expected = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(headers["x-hub-signature-256"], expected)
    assert sign_webhook(SECRET, body) == expected
    assert headers["x-github-event"] == "pull_request"
    assert headers["content-type"] == "application/json"
    assert headers["x-github-delivery"]
    event = json.loads(body)
    assert event["action"] == "closed"
    assert event["pull_request"]["merged"] is True
    assert event["pull_request"]["merge_commit_sha"] == main
    assert event["pull_request"]["head"]["ref"] == "track-1-hello"
    assert event["repository"]["full_name"] == "acme/widgets"
    assert event["sender"]["login"] == "alice"

    merged = repo.get_pull(1)
    assert (merged.state, merged.merged, merged.merged_by.login) == ("closed", True, "alice")
    assert list(repo.get_pulls(state="open")) == []
    with pytest.raises(MergeError):
        twin.merge_pull(1)


def test_create_pull_without_new_commits_is_422(twin: GitHubTwin) -> None:
    repo = client(twin).get_repo("acme/widgets")
    for head in ("main", "no-such-branch"):
        with pytest.raises(github.GithubException) as exc:
            repo.create_pull(title="x", body="", head=head, base="main")
        assert exc.value.status == 422
        assert f"No commits between main and {head}" in json.dumps(exc.value.data)


def test_merge_through_the_api(twin: GitHubTwin, bare: Path, receiver: Receiver) -> None:
    repo = client(twin).get_repo("acme/widgets")
    pr = repo.create_pull(title="Track 1: hello", body="", head="track-1-hello", base="main")
    status = pr.merge()
    assert status.merged
    assert status.sha == git(bare, "rev-parse", "main")
    twin.wait_for_webhooks()
    assert [e["action"] for e in receiver.events()] == ["opened", "closed"]
    with pytest.raises(github.GithubException) as again:
        pr.merge()
    assert again.value.status == 405


def test_draft_state_changes_through_graphql_as_on_github(twin: GitHubTwin) -> None:
    repo = client(twin).get_repo("acme/widgets")
    pr = repo.create_pull(title="Track 1: hello", body="", head="track-1-hello", base="main", draft=True)
    assert pr.draft
    pr.mark_ready_for_review()  # REST cannot: PyGithub posts GraphQL's markPullRequestReadyForReview
    assert not repo.get_pull(pr.number).draft
    pr.convert_to_draft()
    assert repo.get_pull(pr.number).draft
    pr.merge()
    with pytest.raises(github.GithubException) as closed:
        repo.get_pull(pr.number).mark_ready_for_review()
    assert "Pull request is closed" in json.dumps(closed.value.data)
    with pytest.raises(github.GithubException) as unknown:
        client(twin).requester.graphql_query("query { viewer { login } }", {})
    assert "does not serve this GraphQL" in json.dumps(unknown.value.data)


def test_bad_token_is_401(twin: GitHubTwin) -> None:
    with pytest.raises(github.BadCredentialsException) as exc:
        client(twin, token="wrong").get_repo("acme/widgets")
    assert exc.value.status == 401


def test_conditional_get_answers_304(twin: GitHubTwin) -> None:
    repo = client(twin).get_repo("acme/widgets")
    f = repo.get_contents("configs/NEXT_TRACK.json")
    assert not isinstance(f, list)
    assert f.etag
    assert f.update() is False  # PyGithub sends If-None-Match with the stored ETag
    last = twin.requests[-1]
    assert (last.status, last.headers["If-None-Match"]) == (304, f.etag)

    # Raw HTTP: the 304 carries no body.
    url = f"{twin.api_url}/repos/acme/widgets/contents/configs/NEXT_TRACK.json"
    req = urllib.request.Request(url, headers={"Authorization": f"token {TOKEN}", "If-None-Match": f.etag})
    with pytest.raises(urllib.error.HTTPError) as exc:
        urllib.request.urlopen(req)
    assert exc.value.code == 304
    assert exc.value.read() == b""


def test_fail_next_injects_one_failure(twin: GitHubTwin) -> None:
    repo = client(twin).get_repo("acme/widgets")
    twin.fail_next(status=503, path_prefix="/repos/acme/widgets/contents")
    with pytest.raises(github.GithubException) as exc:
        repo.get_contents("README.md")
    assert exc.value.status == 503
    f = repo.get_contents("README.md")
    assert not isinstance(f, list)
    assert f.decoded_content == b"widgets\n"

    twin.fail_next(status=403)
    with pytest.raises(github.RateLimitExceededException) as limited:
        repo.get_pulls(state="open").get_page(0)
    assert limited.value.headers is not None
    assert limited.value.headers.get("retry-after") == "1"


def test_non_bare_upstream_work_tree_follows_merge(tmp_path: Path, receiver: Receiver) -> None:
    upstream = tmp_path / "upstream"
    upstream.mkdir()
    seed_clone(upstream)
    # Another clone pushes the track branch (pushing a non-checked-out branch is allowed).
    work = tmp_path / "work"
    git(tmp_path, "clone", "-q", str(upstream), str(work))
    add_track_branch(work)
    (upstream / "notes.txt").write_text("uncommitted user work\n")  # must survive

    with GitHubTwin(upstream, token=TOKEN, webhook_url=receiver.url, webhook_secret=SECRET) as t:
        repo = client(t).get_repo("acme/widgets")
        repo.create_pull(title="Track 1: hello", body="", head="track-1-hello", base="main")
        t.merge_pull(1)
        f = repo.get_contents("configs/NEXT_TRACK.json")
        assert not isinstance(f, list)
        repo.update_file(f.path, "bump", '{"next_track": 2}\n', f.sha)

    assert (upstream / "hello.py").read_text() == "print('hello')\n"
    assert (upstream / "configs" / "NEXT_TRACK.json").read_text() == '{"next_track": 2}\n'
    assert (upstream / "notes.txt").read_text() == "uncommitted user work\n"
    # Index and work tree match the new main: only the untracked file shows up.
    assert git(upstream, "status", "--porcelain") == "?? notes.txt"


def test_local_edits_are_never_clobbered(tmp_path: Path) -> None:
    upstream = tmp_path / "upstream"
    upstream.mkdir()
    seed_clone(upstream)
    (upstream / "README.md").write_text("my local edit\n")
    events: list[str] = []
    with GitHubTwin(upstream, token=TOKEN, on_event=events.append) as t:
        repo = client(t).get_repo("acme/widgets")
        f = repo.get_contents("README.md")
        assert not isinstance(f, list)
        repo.update_file("README.md", "remote edit", "remote\n", f.sha)
    assert git(upstream, "show", "main:README.md") == "remote"
    assert (upstream / "README.md").read_text() == "my local edit\n"
    assert any("work tree" in e and "left alone" in e for e in events)


def test_webhook_receiver_down_does_not_break_merge(bare: Path) -> None:
    events: list[str] = []
    with GitHubTwin(
        bare, token=TOKEN, webhook_url="http://127.0.0.1:9/hook", webhook_secret=SECRET, on_event=events.append
    ) as t:
        client(t).get_repo("acme/widgets").create_pull(title="t", body="", head="track-1-hello", base="main")
        result = t.merge_pull(1)
    assert result.webhook_status is None
    assert git(bare, "rev-parse", "main") == result.sha
    assert any("webhook" in e and "failed" in e for e in events)


# -- GitHub's real rules: protection, body limit, drafts, rate limits --------------------------------


def trackbot_repo(twin: GitHubTwin, wait_s: float = 5) -> GitHubRepo:
    """trackbot's own adapter on the twin, with the rate-limit retry trackbot's services give it."""
    return GitHubRepo(TOKEN, twin.full_name, twin.api_url, retry=rate_limit_retry(wait_s), write_interval_s=None)


def test_a_protected_main_refuses_a_direct_write_with_a_rule_violation_not_a_stale_sha(twin: GitHubTwin) -> None:
    repo = trackbot_repo(twin)
    text, sha = repo.read_text("README.md") or ("", "")
    twin.protect("main")
    with pytest.raises(RuleViolation) as refused:
        repo.update_file("README.md", text + "x\n", sha, "edit", "main")
    assert refused.value.status == 409 and refused.value.reason == "Changes must be made through a pull request."
    with pytest.raises(StaleFile) as stale:  # another branch, a stale sha: the other 409
        repo.update_file("README.md", "y\n", "0" * 40, "edit", "track-1-hello")
    assert stale.value.status == 409 and not isinstance(stale.value, RuleViolation)
    raw = client(twin).get_repo(twin.full_name).get_branch("main").raw_data
    assert raw["protected"] is True


def test_a_protected_main_needs_a_review_before_an_api_merge(twin: GitHubTwin) -> None:
    repo = trackbot_repo(twin)
    twin.protect("main", required_approvals=1)
    repo.create_branch("bump", repo.branch_sha("main"))
    text, sha = repo.read_text("README.md", "bump") or ("", "")
    repo.update_file("README.md", text + "more\n", sha, "Update next_track value from 1 to 2", "bump")
    pull = repo.open_pull("bump", "main", "Update next_track value from 1 to 2", "one line", draft=False)
    with pytest.raises(RuleViolation) as refused:
        repo.merge_pull(pull.number, "Update next_track value from 1 to 2")
    assert refused.value.status == 405 and "At least 1 approving review is required" in refused.value.reason
    assert twin.merge_pull(pull.number).sha  # a maintainer's merge in the browser


def test_a_pr_body_over_65536_characters_is_refused_like_github(twin: GitHubTwin) -> None:
    gh = client(twin).get_repo(twin.full_name)
    with pytest.raises(github.GithubException) as refused:
        gh.create_pull("main", "track-1-hello", title="t", body="x" * 65537)
    assert refused.value.status == 422
    assert refused.value.data["errors"][0]["message"] == "body is too long (maximum is 65536 characters)"
    assert gh.create_pull("main", "track-1-hello", title="t", body="x" * 65536).number == 1


def test_a_repository_without_drafts_refuses_a_draft_pr(twin: GitHubTwin) -> None:
    twin.drafts_supported = False
    gh = client(twin).get_repo(twin.full_name)
    with pytest.raises(github.GithubException) as refused:
        gh.create_pull("main", "track-1-hello", title="t", body="b", draft=True)
    assert refused.value.status == 422
    assert refused.value.data["errors"][0]["message"] == "Draft pull requests are not supported in this repository."


@pytest.mark.parametrize(("kind", "status"), [("primary", 403), ("secondary", 403), ("secondary", 429)])
def test_a_rate_limit_is_waited_out_within_the_bound(twin: GitHubTwin, kind: str, status: int) -> None:
    repo = trackbot_repo(twin, wait_s=5)
    twin.rate_limit_next(kind, count=1, wait_s=1, status=status, method="GET", path_prefix="/repos/")
    assert repo.access().full_name == twin.full_name
    answered = [r.status for r in twin.requests if r.method == "GET"]
    assert answered == [status, 200]


def test_a_rate_limit_longer_than_the_bound_is_reported_with_githubs_words(twin: GitHubTwin) -> None:
    repo = trackbot_repo(twin, wait_s=2)
    twin.rate_limit_next("secondary", count=1, wait_s=600, method="GET", path_prefix="/repos/")
    with pytest.raises(RateLimited) as limited:
        repo.access()
    assert "asks to wait 600s" in str(limited.value)
    twin.rate_limit_next("primary", count=5, wait_s=1, method="GET", path_prefix="/repos/")
    with pytest.raises(RateLimited) as spent:
        repo.access()
    assert "rate limit" in str(spent.value) and "resets at" in str(spent.value)
