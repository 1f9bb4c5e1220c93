"""The sample repository and sample agent behind ``trackbot console``, exercised with real git."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bot.knob import KNOB_PATH, parse_knob
from bot.local.sample import create_sample_repo, isolated_git_env
from bot.plan import DocNotFound, TrackDoc, resolve_track_doc

PROJECT_ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")


class WorkTreeFiles:
    """RepoFiles over a checked-out work tree."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def list_dir(self, path: str) -> list[str] | None:
        folder = self.root / path
        return sorted(entry.name for entry in folder.iterdir()) if folder.is_dir() else None

    def read_text(self, path: str) -> str | None:
        file = self.root / path
        return file.read_text(encoding="utf-8") if file.is_file() else None


def git(*args: str, cwd: Path, home: Path) -> str:
    result = subprocess.run(
        ["git", *args], cwd=cwd, env=isolated_git_env(home), capture_output=True, text=True, check=True
    )
    return result.stdout


@pytest.fixture(scope="module")
def bare_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return create_sample_repo(tmp_path_factory.mktemp("sample") / "sample.git")


@pytest.fixture
def clone(bare_repo: Path, tmp_path: Path) -> Path:
    home = tmp_path / "home"
    home.mkdir()
    work_tree = tmp_path / "work"
    git("clone", "-q", str(bare_repo), str(work_tree), cwd=tmp_path, home=home)
    return work_tree


def run_sample_agent(work_tree: Path, track: int, **extra_env: str) -> subprocess.CompletedProcess[str]:
    env = isolated_git_env(work_tree.parent / "home")
    env.update(
        {
            "TRACK_NUM": str(track),
            "TRACK_SLUG": f"slug-{track}",
            "TRACK_DOC": f"docs/plan/v1/tracks/track-0{track}.md",
            "PLAN_VERSION": "v1",
            "PYTHONPATH": str(PROJECT_ROOT),
            **extra_env,
        }
    )
    return subprocess.run(
        [sys.executable, "-m", "bot.local.sample_agent"],
        cwd=work_tree,
        env=env,
        input="You are working on track ...\n",
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def changed_paths(work_tree: Path) -> list[str]:
    home = work_tree.parent / "home"
    status = git("status", "--porcelain", "--untracked-files=all", cwd=work_tree, home=home)
    return sorted(line[3:] for line in status.splitlines())


def test_sample_repo_is_bare_with_main_as_head_and_one_maintainer_commit(bare_repo: Path, tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()

    assert git("rev-parse", "--is-bare-repository", cwd=bare_repo, home=home).strip() == "true"
    assert git("symbolic-ref", "HEAD", cwd=bare_repo, home=home).strip() == "refs/heads/main"
    log = git("log", "--format=%an <%ae>", "main", cwd=bare_repo, home=home).splitlines()
    assert log == ["Sample Maintainer <maintainer@example.com>"]


def test_refuses_to_overwrite_an_existing_folder(tmp_path: Path) -> None:
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "file").write_text("x")

    with pytest.raises(FileExistsError):
        create_sample_repo(tmp_path / "taken")


def test_clone_holds_the_knob_docs_and_forbidden_folders(clone: Path) -> None:
    knob = parse_knob((clone / KNOB_PATH).read_text())

    assert knob.next_track == 1
    assert knob.plan_version == "v1"
    assert knob.mode == "sequential"
    assert knob.track_numbers() == [1, 2, 3]
    assert isinstance(knob.notes, str)
    for path in (
        "README.md",
        "docs/plan/v1/tracks/INDEX.md",
        "docs/api/openapi.yaml",
        "docs/product/agentos-prs/README.md",
        "app/README.md",
    ):
        assert (clone / path).is_file(), path
    doc = (clone / "docs/plan/v1/tracks/track-02-cancel-endpoint-spec.md").read_text()
    for heading in (
        "# Track 2: ",
        "## Goal",
        "## What you are allowed to change",
        "## Required gates",
        "## Done when",
    ):
        assert heading in doc
    assert "`docs/api/`" in doc


def test_plan_resolution_finds_tracks_1_to_3_and_reports_track_4_missing(clone: Path) -> None:
    knob = parse_knob((clone / KNOB_PATH).read_text())
    files = WorkTreeFiles(clone)

    found = [resolve_track_doc(knob, number, files) for number in (1, 2, 3)]
    missing = resolve_track_doc(knob, 4, files)

    assert all(isinstance(doc, TrackDoc) for doc in found)
    assert [doc.slug for doc in found if isinstance(doc, TrackDoc)] == [
        "hello-endpoint",
        "cancel-endpoint-spec",
        "greeting-go-package",
    ]
    assert isinstance(missing, DocNotFound)
    assert missing.known_tracks == [1, 2, 3]


def test_sample_agent_track_1_adds_a_runnable_hello_script(clone: Path) -> None:
    result = run_sample_agent(clone, 1)

    assert result.returncode == 0, result.stderr
    assert "track 1" in result.stdout
    assert changed_paths(clone) == ["app/hello.txt", "scripts/hello.sh"]
    script = clone / "scripts/hello.sh"
    assert "set -euo pipefail" in script.read_text()
    assert os.access(script, os.X_OK)
    if shutil.which("bash") is not None:
        ran = subprocess.run(["bash", str(script)], capture_output=True, text=True, check=False)
        assert ran.returncode == 0
        assert ran.stdout == "hello from track 1\n"


def test_sample_agent_track_2_edits_the_forbidden_api_spec(clone: Path) -> None:
    before = (clone / "docs/api/openapi.yaml").read_text()

    result = run_sample_agent(clone, 2)

    assert result.returncode == 0, result.stderr
    assert changed_paths(clone) == ["app/cancel.txt", "docs/api/openapi.yaml"]
    after = (clone / "docs/api/openapi.yaml").read_text()
    assert after.startswith(before)
    assert "/orders/{id}/cancel:" in after


def test_sample_agent_track_3_adds_a_go_package_with_a_test(clone: Path) -> None:
    result = run_sample_agent(clone, 3)

    assert result.returncode == 0, result.stderr
    assert changed_paths(clone) == ["app/greeting/greeting.go", "app/greeting/greeting_test.go"]
    assert "package greeting" in (clone / "app/greeting/greeting.go").read_text()


def test_sample_agent_other_tracks_write_a_note(clone: Path) -> None:
    result = run_sample_agent(clone, 7)

    assert result.returncode == 0, result.stderr
    assert changed_paths(clone) == ["app/track-7.txt"]


def test_sample_agent_commits_its_change_when_asked(clone: Path) -> None:
    home = clone.parent / "home"
    before = git("rev-parse", "HEAD", cwd=clone, home=home).strip()

    result = run_sample_agent(clone, 1, SAMPLE_AGENT_COMMIT="1")

    assert result.returncode == 0, result.stderr
    assert changed_paths(clone) == []
    log = git("log", "--format=%an <%ae> %s", f"{before}..HEAD", cwd=clone, home=home).splitlines()
    assert log == ["agent <agent@example.com> track 1: slug-1"]


def test_sample_agent_refuses_a_missing_track_number(clone: Path) -> None:
    result = run_sample_agent(clone, 1, TRACK_NUM="")

    assert result.returncode == 2
    assert "TRACK_NUM" in result.stderr
    assert changed_paths(clone) == []
