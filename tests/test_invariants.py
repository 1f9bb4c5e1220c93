"""Invariants on the lines a change adds: parsing real git diffs and the CI Docker-network rule."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from bot.invariants import DEFAULT_INVARIANTS, Invariant, InvariantHit, added_lines, check_invariants


def _git(repo: Path, *args: str) -> str:
    env = {
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.com",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.com",
        "GIT_CONFIG_GLOBAL": "/dev/null",
        "GIT_CONFIG_NOSYSTEM": "1",
        "PATH": "/usr/bin:/bin:/usr/local/bin",
    }
    return subprocess.run(["git", *args], cwd=repo, env=env, capture_output=True, text=True, check=True).stdout


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A repository with one commit: a Go file, a CI script and a README."""
    _git(tmp_path, "init", "-q", "-b", "main")
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "main.go").write_text("package main\n\nfunc main() {}\n")
    (tmp_path / "scripts" / "ci").mkdir(parents=True)
    (tmp_path / "scripts" / "ci" / "smoke.sh").write_text("#!/bin/sh\nset -e\necho start\necho end\n")
    (tmp_path / "README.md").write_text("curl http://localhost:8080 is fine in docs\n")
    (tmp_path / "old name.txt").write_text("a\nb\n")
    _git(tmp_path, "add", "-A")
    _git(tmp_path, "commit", "-q", "-m", "init")
    return tmp_path


def _staged_diff(repo: Path) -> str:
    _git(repo, "add", "-A")
    return _git(repo, "diff", "--cached", "--unified=0", "-M", "HEAD")


def test_a_workflow_that_curls_localhost_is_flagged_at_its_line(repo: Path) -> None:
    workflows = repo / ".github" / "workflows"
    workflows.mkdir(parents=True)
    (workflows / "ci.yml").write_text(
        "name: ci\n"
        "on: push\n"
        "jobs:\n"
        "  smoke:\n"
        "    runs-on: ubuntu-latest\n"
        "    steps:\n"
        "      - run: docker compose up -d --wait\n"
        "      - run: curl -sf http://localhost:8080/health\n"
    )
    (repo / "app" / "main.go").write_text('package main\n\nimport "fmt"\n\nfunc main() { fmt.Println(1) }\n')

    hits = check_invariants(_staged_diff(repo), DEFAULT_INVARIANTS)

    assert hits == [
        InvariantHit(
            invariant="ci-docker-network",
            path=".github/workflows/ci.yml",
            line=8,
            text="      - run: curl -sf http://localhost:8080/health",
            message=DEFAULT_INVARIANTS[0].message,
        )
    ]
    assert "Docker network (service name), not localhost from the CI host" in hits[0].message


def test_a_ci_script_edited_in_the_middle_is_flagged_with_its_new_line_number(repo: Path) -> None:
    (repo / "scripts" / "ci" / "smoke.sh").write_text(
        "#!/bin/sh\nset -e\necho start\nwget -qO- 127.0.0.1:9000/ready\n# curl localhost:1 (commented out)\necho end\n"
    )

    hits = check_invariants(_staged_diff(repo), DEFAULT_INVARIANTS)

    assert [(hit.path, hit.line, hit.text) for hit in hits] == [
        ("scripts/ci/smoke.sh", 4, "wget -qO- 127.0.0.1:9000/ready")
    ]


def test_localhost_outside_ci_files_and_removed_lines_are_not_flagged(repo: Path) -> None:
    (repo / "README.md").write_text("nothing here now\n")  # removes the localhost line
    (repo / "docs").mkdir()
    (repo / "docs" / "dev.md").write_text("run curl http://localhost:8080/health locally\n")

    assert check_invariants(_staged_diff(repo), DEFAULT_INVARIANTS) == []


def test_added_lines_of_a_real_diff_cover_new_renamed_deleted_and_unterminated_files(repo: Path) -> None:
    (repo / "old name.txt").rename(repo / "new name.txt")
    with (repo / "new name.txt").open("a") as handle:
        handle.write("c\n")
    (repo / "app" / "main.go").unlink()
    (repo / "no-newline.txt").write_text("first\nlast")
    (repo / "plus.txt").write_text("+++ b/not-a-header\n--- a/nor-this\n")

    assert added_lines(_staged_diff(repo)) == {
        "new name.txt": [(3, "c")],
        "no-newline.txt": [(1, "first"), (2, "last")],
        "plus.txt": [(1, "+++ b/not-a-header"), (2, "--- a/nor-this")],
    }


def test_added_lines_with_context_and_quoted_paths() -> None:
    diff = (
        'diff --git "a/caf\\303\\251.txt" "b/caf\\303\\251.txt"\n'
        "index 1..2 100644\n"
        '--- "a/caf\\303\\251.txt"\n'
        '+++ "b/caf\\303\\251.txt"\n'
        "@@ -1,3 +1,4 @@\n"
        " one\n"
        "-two\n"
        "+deux\n"
        "+zwei\n"
        " three\n"
        "\\ No newline at end of file\n"
        "diff --git a/gone.txt b/gone.txt\n"
        "deleted file mode 100644\n"
        "--- a/gone.txt\n"
        "+++ /dev/null\n"
        "@@ -1 +0,0 @@\n"
        "-bye\n"
    )

    assert added_lines(diff) == {"café.txt": [(2, "deux"), (3, "zwei")]}


def test_garbage_is_not_a_diff() -> None:
    assert added_lines("") == {}
    assert added_lines("not a diff\n+but looks like one\n") == {}


@pytest.mark.parametrize(
    ("path", "line"),
    [
        (".github/workflows/e2e.yaml", "curl --retry 5 localhost:3000"),
        (".gitlab-ci.yml", "  - wget http://127.0.0.1/health"),
        ("ci/smoke/run.sh", 'URL="http://localhost:8080"'),
        (".ci/run", "curl -f [::1]:80"),
        ("tools/run-ci-smoke.sh", "curl https://localhost"),
        ("scripts/ci/x.py", "requests.get('http://localhost:8080')"),
        (".github/workflows/ci.yml", "docker run --network host curlimages/curl localhost:80"),
    ],
)
def test_the_docker_network_invariant_flags_host_localhost_calls(path: str, line: str) -> None:
    assert check_invariants(_one_added_line(path, line), DEFAULT_INVARIANTS) != []


@pytest.mark.parametrize(
    ("path", "line"),
    [
        (".github/workflows/ci.yml", "curl -sf http://api:8080/health"),
        (".github/workflows/ci.yml", "# curl http://localhost:8080"),
        (".github/workflows/ci.yml", "docker compose exec -T api curl -sf http://localhost:8080/health"),
        (".github/workflows/ci.yml", "docker compose -f d.yml run --rm smoke curl localhost:80"),
        (".github/workflows/ci.yml", "docker exec api wget -qO- localhost:80"),
        (".github/workflows/ci.yml", "echo services listen on localhost inside their containers"),
        ("app/main.go", 'http.Get("http://localhost:8080")'),
        ("scripts/deploy.sh", "curl http://localhost:8080"),
    ],
)
def test_the_docker_network_invariant_leaves_other_lines_alone(path: str, line: str) -> None:
    assert check_invariants(_one_added_line(path, line), DEFAULT_INVARIANTS) == []


def test_custom_invariants_apply_only_to_their_paths() -> None:
    no_sleep = Invariant(
        name="no-sleep-in-tests", paths=["**/*_test.go"], pattern=r"time\.Sleep\(", message="tests must not sleep"
    )
    diff = _one_added_line("internal/x_test.go", "\ttime.Sleep(time.Second)") + _one_added_line(
        "internal/x.go", "\ttime.Sleep(time.Second)"
    )

    hits = check_invariants(diff, [no_sleep])

    assert [(hit.invariant, hit.path, hit.line, hit.message) for hit in hits] == [
        ("no-sleep-in-tests", "internal/x_test.go", 1, "tests must not sleep")
    ]


def _one_added_line(path: str, line: str) -> str:
    return f"diff --git a/{path} b/{path}\nnew file mode 100644\n--- /dev/null\n+++ b/{path}\n@@ -0,0 +1 @@\n+{line}\n"
