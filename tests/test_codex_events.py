"""Codex CLI's `--json` event lines, of both the newer and the older shape, read as progress."""

from __future__ import annotations

import json

import pytest

from bot.adapters.codex import CodexEvents, display_command

NEWER_SESSION = [
    '{"type":"thread.started","thread_id":"0199a213-81c0-7800-8aa1-bbab2a035a53"}',
    '{"type":"turn.started"}',
    '{"type":"item.completed","item":{"id":"item_0","type":"reasoning","text":"**Reading the track doc**"}}',
    '{"type":"item.started","item":{"id":"item_1","type":"command_execution",'
    '"command":"bash -lc \'go test ./...\'","aggregated_output":"","exit_code":null,"status":"in_progress"}}',
    '{"type":"item.completed","item":{"id":"item_1","type":"command_execution",'
    '"command":"bash -lc \'go test ./...\'","aggregated_output":"ok  example/internal/federation\\n",'
    '"exit_code":0,"status":"completed"}}',
    '{"type":"item.completed","item":{"id":"item_2","type":"file_change","changes":'
    '[{"path":"/work/tree/internal/federation/tls.go","kind":"update"},'
    '{"path":"/work/tree/internal/federation/tls_test.go","kind":"add"}],"status":"completed"}}',
    '{"type":"item.completed","item":{"id":"item_3","type":"command_execution",'
    '"command":"bash -lc \'go vet ./...\'","aggregated_output":"vet: bad\\n","exit_code":1,"status":"failed"}}',
    '{"type":"item.completed","item":{"id":"item_4","type":"agent_message",'
    '"text":"Added mTLS between federation peers and a test for the handshake."}}',
    '{"type":"turn.completed","usage":{"input_tokens":24763,"cached_input_tokens":24448,"output_tokens":122}}',
]

OLDER_SESSION = [
    '{"model":"o4-mini","sandbox":"workspace-write","provider":"openai"}',
    '{"prompt":"Implement track 9"}',
    '{"id":"0","msg":{"type":"task_started"}}',
    '{"id":"0","msg":{"type":"agent_reasoning","text":"Looking at files"}}',
    '{"id":"0","msg":{"type":"exec_command_begin","call_id":"call_a","command":["bash","-lc","ls"],"cwd":"/w"}}',
    '{"id":"0","msg":{"type":"exec_command_output_delta","call_id":"call_a","chunk":"YQo="}}',
    '{"id":"0","msg":{"type":"exec_command_end","call_id":"call_a","stdout":"a\\n","stderr":"","exit_code":0}}',
    '{"id":"0","msg":{"type":"patch_apply_begin","call_id":"call_b","auto_approved":true,'
    '"changes":{"cmd/agentd/main.go":{"update":{"unified_diff":"@@","move_path":null}}}}}',
    '{"id":"0","msg":{"type":"patch_apply_end","call_id":"call_b","stdout":"Success","stderr":"","success":true}}',
    '{"id":"0","msg":{"type":"agent_message","message":"Done: the agent now verifies peers."}}',
    '{"id":"0","msg":{"type":"task_complete","last_agent_message":"Done: the agent now verifies peers."}}',
]


def _feed(events: CodexEvents, lines: list[str]) -> list[str]:
    return [note for line in lines if (note := events.feed(line)) is not None]


def test_a_newer_session_reads_as_progress_notes() -> None:
    events = CodexEvents(worktree="/work/tree")

    notes = _feed(events, NEWER_SESSION)

    assert notes == [
        "running `go test ./...`",
        "ran `go test ./...` → exit 0",
        "changed internal/federation/tls.go, internal/federation/tls_test.go",
        "ran `go vet ./...` → exit 1",
        "agent: Added mTLS between federation peers and a test for the handshake.",
    ]
    assert events.commands == [("go test ./...", 0), ("go vet ./...", 1)]
    assert events.files_changed == ["internal/federation/tls.go", "internal/federation/tls_test.go"]
    assert events.final_message == "Added mTLS between federation peers and a test for the handshake."
    assert events.error is None
    assert events.thread_id == "0199a213-81c0-7800-8aa1-bbab2a035a53"
    assert events.usage == {"input_tokens": 24763, "cached_input_tokens": 24448, "output_tokens": 122}


def test_an_older_session_reads_the_same_way() -> None:
    events = CodexEvents()

    notes = _feed(events, OLDER_SESSION)

    assert notes == [
        "running `ls`",
        "ran `ls` → exit 0",
        "changed cmd/agentd/main.go",
        "agent: Done: the agent now verifies peers.",
    ]
    assert events.commands == [("ls", 0)]
    assert events.files_changed == ["cmd/agentd/main.go"]
    assert events.final_message == "Done: the agent now verifies peers."
    assert events.error is None


@pytest.mark.parametrize(
    "line",
    [
        "",
        "   ",
        "Reading prompt from stdin...",
        "[2025-01-01T00:00:00] OpenAI Codex v0.1.0",
        "{not json",
        "[1, 2, 3]",
        '"just a string"',
        "null",
        '{"type":"item.completed"}',
        '{"type":"item.completed","item":null}',
        '{"type":"item.completed","item":{"type":"command_execution","command":42}}',
        '{"type":"item.completed","item":{"type":"file_change","changes":"oops"}}',
        '{"type":"item.completed","item":{"type":"agent_message","text":null}}',
        '{"type":"item.updated","item":{"type":"todo_list","items":[{"text":"x","completed":false}]}}',
        '{"type":"turn.completed","usage":"lots"}',
        '{"type":"something.new","payload":{"a":1}}',
        '{"msg":{"type":"exec_command_end"}}',
        '{"msg":{"type":"patch_apply_end","changes":["a"]}}',
        '{"msg":"not an object"}',
        '{"msg":{"type":"token_count","info":null}}',
    ],
)
def test_unknown_or_malformed_lines_are_ignored(line: str) -> None:
    events = CodexEvents()

    assert events.feed(line) is None
    assert events.commands == []
    assert events.files_changed == []
    assert events.final_message == ""
    assert events.error is None


def test_a_failed_turn_is_the_error() -> None:
    events = CodexEvents()

    notes = _feed(
        events,
        [
            '{"type":"turn.started"}',
            '{"type":"turn.failed","error":{"message":"You exceeded your current quota"}}',
        ],
    )

    assert notes == ["agent error: You exceeded your current quota"]
    assert events.error == "You exceeded your current quota"


def test_stream_retries_are_reported_but_are_not_the_error() -> None:
    events = CodexEvents()

    notes = _feed(
        events,
        [
            '{"type":"error","message":"Reconnecting... 1/5"}',
            '{"msg":{"type":"stream_error","message":"stream disconnected; retrying 2/5 in 400ms"}}',
        ],
    )

    assert notes == [
        "agent connection trouble: Reconnecting... 1/5",
        "agent connection trouble: stream disconnected; retrying 2/5 in 400ms",
    ]
    assert events.error is None


def test_older_errors_are_the_error_until_a_later_turn_completes() -> None:
    events = CodexEvents()

    assert (
        events.feed('{"id":"0","msg":{"type":"error","message":"model not found"}}') == "agent error: model not found"
    )
    assert events.error == "model not found"
    events.feed('{"type":"turn.completed","usage":{"input_tokens":1,"output_tokens":1}}')
    assert events.error is None


def test_long_messages_and_commands_are_shortened_for_the_thread() -> None:
    events = CodexEvents()
    message = "word " * 60
    script = "cat <<'EOF' > x.txt\n" + "line with `backticks`\n" * 20 + "EOF"

    note = events.feed(json.dumps({"type": "item.completed", "item": {"type": "agent_message", "text": message}}))
    ran = events.feed(
        json.dumps({"type": "item.completed", "item": {"type": "command_execution", "command": script, "exit_code": 0}})
    )

    assert note is not None and note.startswith("agent: word word") and note.endswith("…")
    assert len(note) == len("agent: ") + 120
    assert events.final_message == message.strip()
    assert ran is not None and "\n" not in ran and ran.count("`") == 2 and ran.endswith("→ exit 0")
    assert events.commands == [(script, 0)]


def test_many_changed_files_are_summarised() -> None:
    events = CodexEvents()
    changes = [{"path": f"pkg/f{i}.go", "kind": "add"} for i in range(8)]

    note = events.feed(json.dumps({"type": "item.completed", "item": {"type": "file_change", "changes": changes}}))

    assert note == "changed pkg/f0.go, pkg/f1.go, pkg/f2.go, pkg/f3.go, pkg/f4.go and 3 more"
    assert len(events.files_changed) == 8


def test_a_command_that_never_finishes_keeps_no_exit_code() -> None:
    events = CodexEvents()

    events.feed('{"type":"item.started","item":{"id":"i","type":"command_execution","command":"sleep 999"}}')
    declined = events.feed(
        '{"type":"item.completed","item":{"id":"j","type":"command_execution","command":"rm -rf /",'
        '"exit_code":null,"status":"declined"}}'
    )

    assert declined == "ran `rm -rf /` → declined"
    assert events.commands == [("sleep 999", None), ("rm -rf /", None)]


def test_older_command_ends_without_a_call_id_close_the_latest_open_command() -> None:
    events = CodexEvents()

    events.feed('{"id":"0","msg":{"type":"exec_command_begin","command":["go","build","./..."]}}')
    note = events.feed('{"id":"0","msg":{"type":"exec_command_end","exit_code":2}}')

    assert note == "ran `go build ./...` → exit 2"
    assert events.commands == [("go build ./...", 2)]


def test_failed_patches_and_renames_in_older_sessions() -> None:
    events = CodexEvents()

    failed = events.feed(
        '{"msg":{"type":"patch_apply_end","call_id":"x","success":false,"changes":{"a.go":{"add":{"content":""}}}}}'
    )
    renamed = events.feed(
        '{"msg":{"type":"patch_apply_end","call_id":"y","success":true,'
        '"changes":{"old.go":{"update":{"unified_diff":"","move_path":"new.go"}}}}}'
    )

    assert failed is None
    assert renamed == "changed old.go, new.go"
    assert events.files_changed == ["old.go", "new.go"]


@pytest.mark.parametrize(
    ("command", "shown"),
    [
        ("bash -lc 'go test ./...'", "go test ./..."),
        (["/bin/zsh", "-lc", "make lint && make test"], "make lint && make test"),
        (["git", "status", "--short"], "git status --short"),
        (["rg", "-n", "a b"], "rg -n 'a b'"),
        ("echo 'unbalanced", "echo 'unbalanced"),
        (None, ""),
    ],
)
def test_commands_are_shown_as_a_person_would_type_them(command: object, shown: str) -> None:
    assert display_command(command) == shown
