"""The one redactor every outgoing text passes: Slack messages, PR bodies, logs, stored reports."""

from __future__ import annotations

import re
from collections.abc import Iterable

REDACTED = "[redacted]"

# Token shapes that must never leave, whether or not they are trackbot's own.
SECRET_PATTERNS: tuple[re.Pattern[str], ...] = (
    re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?(-----END [A-Z ]*PRIVATE KEY-----|\Z)", re.S),
    re.compile(r"\bgithub_pat_[A-Za-z0-9_]{20,}"),
    re.compile(r"\bgh[pousr]_[A-Za-z0-9]{20,}"),
    re.compile(r"\bxox[abposr]-[A-Za-z0-9-]{6,}"),
    re.compile(r"\bxapp-[A-Za-z0-9-]{6,}"),
    re.compile(r"\bsk-[A-Za-z0-9_-]{16,}"),
    re.compile(r"x-access-token:[^@\s]+@"),
    re.compile(r"(?i)(authorization:\s*(?:bearer|token|basic)\s+)\S+"),
)


class Redactor:
    """Replaces configured secret values and well-known token shapes with `[redacted]`."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        # Longest first, so a secret containing another is removed whole; very short values would
        # shred ordinary text, so they are not matched by value.
        self._values = sorted({s for s in secrets if s and len(s) >= 6}, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        """Return `text` with every secret removed."""
        for value in self._values:
            text = text.replace(value, REDACTED)
        for pattern in SECRET_PATTERNS:
            text = pattern.sub(_replacement, text)
        return text


def _replacement(match: re.Match[str]) -> str:
    if match.re.pattern.startswith("(?i)(authorization"):
        return match.group(1) + REDACTED
    if match.group(0).startswith("x-access-token:"):
        return "x-access-token:" + REDACTED + "@"
    return REDACTED
