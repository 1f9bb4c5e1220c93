"""A small sample repository for ``trackbot console`` when the user gives none.

It looks like a real trackbot repository: a knob at ``configs/NEXT_TRACK.json`` on
track 1, three track docs under ``docs/plan/v1/tracks/``, and folders the agent must
not touch (``docs/api/``, ``docs/product/agentos-prs/``). The sample agent
(:mod:`bot.local.sample_agent`) deliberately edits ``docs/api/`` on track 2 so the demo
shows a guardrail STOP.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Mapping
from pathlib import Path

SAMPLE_AUTHOR_NAME = "Sample Maintainer"
SAMPLE_AUTHOR_EMAIL = "maintainer@example.com"
DEFAULT_BRANCH = "main"
# A fixed date makes the sample's commit id the same on every run, which keeps demo
# transcripts and bug reports comparable.
_SAMPLE_COMMIT_DATE = "2024-01-01T00:00:00+00:00"

PLAN_DIR = "docs/plan/v1/tracks"

SAMPLE_KNOB: dict[str, object] = {
    "version": 1,
    "mode": "sequential",
    "plan_version": "v1",
    "next_track": 1,
    "tracks": {
        "1": {"slug": "hello-endpoint", "doc": f"{PLAN_DIR}/track-01-hello-endpoint.md"},
        "2": {"slug": "cancel-endpoint-spec", "doc": f"{PLAN_DIR}/track-02-cancel-endpoint-spec.md"},
        "3": {"slug": "greeting-go-package", "doc": f"{PLAN_DIR}/track-03-greeting-go-package.md"},
    },
    "notes": "Only a maintainer advances next_track, after the merge.",
}

_README = """\
# Sample service

A tiny repository used by `trackbot console` to demonstrate the whole track
procedure locally, with no Slack, GitHub or agent accounts.

- `configs/NEXT_TRACK.json` names the next track.
- Track docs live in `docs/plan/v1/tracks/` (see `INDEX.md` there).
- `docs/api/` and `docs/product/agentos-prs/` are owned by other teams; agents must
  never edit them.
"""

_FORBIDDEN_SECTION = """\
## Never touch

- `docs/api/` (the API contract is owned by the API team)
- `docs/product/agentos-prs/` (product records)
- `configs/NEXT_TRACK.json` (only a maintainer advances it)
"""

_TRACK_DOCS: dict[str, str] = {
    "track-01-hello-endpoint.md": f"""\
# Track 1: Hello endpoint

## Goal

Add a smoke-test script that proves the service answers, and record the greeting
the hello endpoint returns.

## What you are allowed to change

- `scripts/hello.sh` (new)
- `app/hello.txt` (new)

{_FORBIDDEN_SECTION}
## Required gates

- `bash scripts/hello.sh` exits 0 and prints `hello from track 1`.

## Done when

- `scripts/hello.sh` exists, starts with `set -euo pipefail` and is executable.
- `app/hello.txt` holds the greeting.
- All required gates pass.
""",
    "track-02-cancel-endpoint-spec.md": f"""\
# Track 2: Cancel endpoint spec

## Goal

Describe how the service will cancel an order. The OpenAPI contract itself is owned
by the API team: write the proposal as a note under `app/`, do not edit the contract.

## What you are allowed to change

- `app/cancel.txt` (new)

{_FORBIDDEN_SECTION}
## Required gates

- `test -s app/cancel.txt`

## Done when

- `app/cancel.txt` describes `POST /orders/{{id}}/cancel`: request, responses, errors.
- `docs/api/openapi.yaml` is unchanged.
""",
    "track-03-greeting-go-package.md": f"""\
# Track 3: Greeting Go package

## Goal

Add a small Go package that builds greetings, with a unit test.

## What you are allowed to change

- `app/greeting/greeting.go` (new)
- `app/greeting/greeting_test.go` (new)

{_FORBIDDEN_SECTION}
## Required gates

- `cd app && go vet ./...`
- `cd app && go test ./...`

## Done when

- `greeting.Hello("Ada")` returns `"hello, Ada"`.
- The test covers an empty name.
- All required gates pass.
""",
}

_INDEX = """\
# Plan v1: tracks

| Track | Slug | Doc |
|------:|------|-----|
| 1 | hello-endpoint | [Hello endpoint](track-01-hello-endpoint.md) |
| 2 | cancel-endpoint-spec | [Cancel endpoint spec](track-02-cancel-endpoint-spec.md) |
| 3 | greeting-go-package | [Greeting Go package](track-03-greeting-go-package.md) |
"""

_OPENAPI = """\
openapi: 3.0.3
info:
  title: Sample service
  version: 1.0.0
paths:
  /health:
    get:
      summary: Liveness probe
      responses:
        "200":
          description: The service is up
  /orders/{id}:
    get:
      summary: Fetch one order
      parameters:
        - name: id
          in: path
          required: true
          schema:
            type: string
      responses:
        "200":
          description: The order
        "404":
          description: No such order
"""

_PRODUCT_README = """\
# AgentOS PRs

Product decision records. Owned by the product team; agents must not edit this folder.
"""

_APP_README = """\
# app

Application code. The Go module lives here (`go.mod`); run `go test ./...` from this folder.
"""

_APP_GO_MOD = """\
module example.com/sample/app

go 1.21
"""

_APP_MAIN = """\
// Command app is the sample service's entry point.
package main

import "fmt"

func main() {
	fmt.Println("sample service")
}
"""


def sample_files() -> dict[str, str]:
    """Return the sample repository's files as ``{repo path: text}``."""
    files: dict[str, str] = {
        "README.md": _README,
        "configs/NEXT_TRACK.json": json.dumps(SAMPLE_KNOB, indent=2) + "\n",
        f"{PLAN_DIR}/INDEX.md": _INDEX,
        "docs/api/openapi.yaml": _OPENAPI,
        "docs/product/agentos-prs/README.md": _PRODUCT_README,
        "app/README.md": _APP_README,
        "app/go.mod": _APP_GO_MOD,
        "app/main.go": _APP_MAIN,
    }
    for name, text in _TRACK_DOCS.items():
        files[f"{PLAN_DIR}/{name}"] = text
    return files


def isolated_git_env(home: Path) -> dict[str, str]:
    """Environment for running git unaffected by the user's git configuration.

    ``HOME``/``XDG_CONFIG_HOME`` point at ``home`` so no global config, hooks or
    templates apply, ``GIT_CONFIG_NOSYSTEM`` drops the system config, and inherited
    ``GIT_*`` variables (e.g. ``GIT_DIR`` from a calling hook) are removed.
    """
    env = {key: value for key, value in os.environ.items() if not key.startswith("GIT_")}
    env.update(
        {
            "HOME": str(home),
            "XDG_CONFIG_HOME": str(home / ".config"),
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_CONFIG_GLOBAL": os.devnull,
            "GIT_TERMINAL_PROMPT": "0",
            "LC_ALL": "C",
        }
    )
    return env


def _git(args: list[str], cwd: Path, env: dict[str, str]) -> None:
    result = subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)} failed in {cwd}: {result.stderr.strip()}")


def create_sample_repo(dest: Path, files: Mapping[str, str] | None = None) -> Path:
    """Create a bare git repository at ``dest`` holding the sample project (or ``files``,
    ``{repo path: text}``: benchmarks give a plan of their own); return ``dest``.

    ``dest`` must not exist or be an empty folder. The repository has one commit on
    ``main`` (also its HEAD), authored by the sample maintainer.
    """
    dest = Path(dest)
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise FileExistsError(f"{dest} already exists and is not an empty folder")
    scratch = Path(tempfile.mkdtemp(prefix="trackbot-sample-"))
    try:
        home = scratch / "home"
        work = scratch / "work"
        home.mkdir()
        work.mkdir()
        env = isolated_git_env(home)
        env["GIT_AUTHOR_DATE"] = env["GIT_COMMITTER_DATE"] = _SAMPLE_COMMIT_DATE
        # --template= keeps git from copying any hook templates into the repositories.
        _git(["init", "-q", "--template=", "-b", DEFAULT_BRANCH, str(work)], scratch, env)
        for relative, text in (sample_files() if files is None else files).items():
            target = work / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text, encoding="utf-8")
        _git(["add", "-A"], work, env)
        _git(
            [
                "-c", f"user.name={SAMPLE_AUTHOR_NAME}",
                "-c", f"user.email={SAMPLE_AUTHOR_EMAIL}",
                "-c", "commit.gpgsign=false",
                "commit", "-q", "-m", "Sample project: plan v1 with three tracks",
            ],
            work,
            env,
        )  # fmt: skip
        _git(["init", "-q", "--bare", "--template=", "-b", DEFAULT_BRANCH, str(dest)], scratch, env)
        _git(["push", "-q", str(dest.resolve()), f"{DEFAULT_BRANCH}:{DEFAULT_BRANCH}"], work, env)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return dest
