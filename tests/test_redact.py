"""The redactor: configured secrets by value, token shapes by pattern."""

from __future__ import annotations

from bot.redact import REDACTED, Redactor


def test_configured_secret_values_are_removed() -> None:
    redact = Redactor(["hunter2-signing-secret"])
    assert redact("sig=hunter2-signing-secret;") == f"sig={REDACTED};"


def test_token_shapes_are_removed_even_when_not_configured() -> None:
    redact = Redactor()
    samples = [
        "ghp_" + "A1" * 18,
        "github_pat_" + "B2" * 20,
        "gho_" + "c" * 36,
        "ghs_" + "d" * 36,
        "xoxb-12345-67890-abcdef",
        "xoxp-12345-67890-abcdef",
        "xapp-1-A0-12345-abcdef",
        "sk-" + "e" * 40,
    ]
    for token in samples:
        out = redact(f"leaked {token} here")
        assert token not in out and REDACTED in out, token


def test_token_in_url_and_authorization_header_are_removed() -> None:
    redact = Redactor()
    assert "s3cret" not in redact("https://x-access-token:s3cret@github.com/acme/w.git")
    assert "abc.def" not in redact("Authorization: Bearer abc.def")


def test_private_key_blocks_are_removed() -> None:
    key = "-----BEGIN RSA PRIVATE KEY-----\nMIIEow\nabc\n-----END RSA PRIVATE KEY-----"
    out = Redactor()(f"key:\n{key}\nafter")
    assert "MIIEow" not in out and out.endswith("after")


def test_ordinary_text_is_left_alone() -> None:
    text = "Track 9: federation-security-hardening — exit 0, task-list done, desk-top"
    assert Redactor(["abc"])(text) == text  # values shorter than 6 characters are not matched
