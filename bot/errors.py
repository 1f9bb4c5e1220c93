"""Errors whose message is for a person: what is wrong and what to do, with each problem listed."""

from __future__ import annotations


class ReadableError(ValueError):
    """``str()`` is one paragraph for a human; ``problems`` holds the individual problems."""

    def __init__(self, message: str, problems: list[str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.problems: list[str] = problems if problems is not None else [message]

    def __str__(self) -> str:
        return self.message
