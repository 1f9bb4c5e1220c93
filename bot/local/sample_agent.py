"""A stand-in coding agent for the sample repository: ``python -m bot.local.sample_agent``.

It behaves like a real agent from trackbot's point of view: it reads the whole prompt
on stdin, reads ``TRACK_NUM``, ``TRACK_SLUG``, ``TRACK_DOC`` and ``PLAN_VERSION`` from
the environment, prints progress to stdout and changes files in the current directory
(the work tree). Its changes are scripted per track:

* track 1 adds ``scripts/hello.sh`` and ``app/hello.txt``;
* track 2 edits ``docs/api/openapi.yaml`` (a forbidden folder) and adds
  ``app/cancel.txt``, so the demo shows trackbot's guardrail stopping the track;
* track 3 adds a small Go package under ``app/greeting/``;
* any other track writes ``app/track-<N>.txt``.

With ``SAMPLE_AGENT_COMMIT=1`` it also commits its change, the way some agents do,
so trackbot's handling of agent commits gets exercised.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

HELLO_SCRIPT = """\
#!/usr/bin/env bash
set -euo pipefail

echo "hello from track 1"
"""

CANCEL_PATH_YAML = """\
  /orders/{id}/cancel:
    post:
      summary: Cancel an order
      parameters:
        - name: id
          in: path
          required: true
          schema:
            type: string
      responses:
        "202":
          description: Cancellation accepted
        "404":
          description: No such order
        "409":
          description: The order has already shipped
"""

CANCEL_NOTE = """\
POST /orders/{id}/cancel
- 202: cancellation accepted
- 404: no such order
- 409: the order has already shipped
"""

GREETING_GO = """\
// Package greeting builds the greetings the sample service returns.
package greeting

// Hello returns a greeting for name, or a generic one when name is empty.
func Hello(name string) string {
	if name == "" {
		return "hello, world"
	}
	return "hello, " + name
}
"""

GREETING_TEST_GO = """\
package greeting

import "testing"

func TestHello(t *testing.T) {
	cases := map[string]string{
		"Ada": "hello, Ada",
		"":    "hello, world",
	}
	for name, want := range cases {
		if got := Hello(name); got != want {
			t.Errorf("Hello(%q) = %q, want %q", name, got, want)
		}
	}
}
"""


def _write(work_tree: Path, relative: str, text: str, executable: bool = False) -> None:
    target = work_tree / relative
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text, encoding="utf-8")
    if executable:
        target.chmod(0o755)
    print(f"  wrote {relative}", flush=True)


def make_track_change(number: int, work_tree: Path) -> list[str]:
    """Make the scripted change for track ``number`` in ``work_tree``; return the paths touched."""
    if number == 1:
        _write(work_tree, "scripts/hello.sh", HELLO_SCRIPT, executable=True)
        _write(work_tree, "app/hello.txt", "hello from track 1\n")
        return ["scripts/hello.sh", "app/hello.txt"]
    if number == 2:
        spec = work_tree / "docs/api/openapi.yaml"
        existing = spec.read_text(encoding="utf-8") if spec.exists() else "openapi: 3.0.3\npaths:\n"
        # The spec's last top-level key is `paths:`, so appending adds one more path.
        if not existing.endswith("\n"):
            existing += "\n"
        _write(work_tree, "docs/api/openapi.yaml", existing + CANCEL_PATH_YAML)
        _write(work_tree, "app/cancel.txt", CANCEL_NOTE)
        return ["docs/api/openapi.yaml", "app/cancel.txt"]
    if number == 3:
        _write(work_tree, "app/greeting/greeting.go", GREETING_GO)
        _write(work_tree, "app/greeting/greeting_test.go", GREETING_TEST_GO)
        return ["app/greeting/greeting.go", "app/greeting/greeting_test.go"]
    relative = f"app/track-{number}.txt"
    _write(work_tree, relative, f"work for track {number}\n")
    return [relative]


def _commit(number: int, slug: str, work_tree: Path) -> None:
    identity = ["-c", "user.name=agent", "-c", "user.email=agent@example.com", "-c", "commit.gpgsign=false"]
    subprocess.run(["git", "add", "-A"], cwd=work_tree, check=True)
    message = f"track {number}: {slug}" if slug else f"track {number}"
    subprocess.run(["git", *identity, "commit", "-q", "-m", message], cwd=work_tree, check=True)
    print(f"  committed: {message}", flush=True)


def main() -> int:
    """Run the sample agent; returns the process exit code."""
    prompt = sys.stdin.read()
    raw_number = os.environ.get("TRACK_NUM", "").strip()
    if not raw_number.isdigit() or int(raw_number) < 1:
        print(f"sample agent: TRACK_NUM must be a track number, got {raw_number!r}", file=sys.stderr)
        return 2
    number = int(raw_number)
    slug = os.environ.get("TRACK_SLUG", "")
    doc = os.environ.get("TRACK_DOC", "")
    plan_version = os.environ.get("PLAN_VERSION", "")
    work_tree = Path.cwd()

    print(f"sample agent: track {number} ({slug or 'no slug'}), plan {plan_version or '?'}", flush=True)
    print(f"  read a prompt of {len(prompt)} characters; doc: {doc or 'none given'}", flush=True)
    make_track_change(number, work_tree)
    if os.environ.get("SAMPLE_AGENT_COMMIT") == "1":
        _commit(number, slug, work_tree)
    print("sample agent: done", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
