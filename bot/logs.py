"""Logging for the long-running processes: one JSON object per line, redacted, with the run's context.

`trackbot web` and `trackbot worker` log JSON by default (`TRACKBOT_LOG_FORMAT=json|text`); the
console and the operator commands keep their human output. Every line passes the redactor: the
message, the exception text and the stack. A run's lines carry its id, repository and track: the
worker sets them with `log_context` around the run (a contextvar, so threads and other jobs do
not see them).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Any

from bot.redact import Redactor

LOG_FORMATS = ("json", "text")

# Fields describing what is being worked on: run_id, repo, track. Empty outside a run.
_context: ContextVar[dict[str, Any]] = ContextVar("trackbot_log_context", default={})  # noqa: B039 - never mutated

# Attributes every LogRecord has; anything else on a record came from `extra=` and is logged too.
_STANDARD_ATTRS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


@contextlib.contextmanager
def log_context(**fields: Any) -> Iterator[None]:
    """Add fields (run_id, repo, track...) to every line logged inside the block; None values are left out."""
    merged = {**_context.get(), **{k: v for k, v in fields.items() if v is not None}}
    token = _context.set(merged)
    try:
        yield
    finally:
        _context.reset(token)


def current_context() -> dict[str, Any]:
    """The fields `log_context` set for this thread or task."""
    return dict(_context.get())


class RedactingFilter(logging.Filter):
    """Every log line passes the redactor (the message with its arguments merged in)."""

    def __init__(self, redact: Redactor) -> None:
        super().__init__()
        self.redact = redact

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = self.redact(record.getMessage())
        record.args = None
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, the run's context, extras, exception."""

    def __init__(self, redact: Redactor) -> None:
        super().__init__()
        self.redact = redact

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": self.redact(record.getMessage()),
        }
        entry.update(_context.get())
        for key, value in vars(record).items():
            if key not in _STANDARD_ATTRS and not key.startswith("_") and key not in entry:
                entry[key] = _redacted(_jsonable(value), self.redact)
        if record.exc_info:
            entry["exception"] = self.redact(self.formatException(record.exc_info))
        if record.stack_info:
            entry["stack"] = self.redact(self.formatStack(record.stack_info))
        entry["process"] = record.process
        return json.dumps(entry, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    """`time level logger: message [run_id=... repo=... track=...]`, redacted (exceptions too)."""

    def __init__(self, redact: Redactor) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")
        self.redact = redact

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        context = _context.get()
        if context:
            first, sep, rest = text.partition("\n")
            text = first + " [" + " ".join(f"{k}={v}" for k, v in context.items()) + "]" + sep + rest
        return self.redact(text)


def _redacted(value: Any, redact: Redactor) -> Any:
    """Every string inside a JSON-able value, redacted."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, list):
        return [_redacted(v, redact) for v in value]
    if isinstance(value, dict):
        return {k: _redacted(v, redact) for k, v in value.items()}
    return value


def _jsonable(value: Any) -> Any:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return str(value)
    return value


def setup_logging(redact: Redactor, fmt: str = "json", level: int = logging.INFO) -> None:
    """Log to stderr through the redactor, as JSON lines or text; replaces any earlier setup."""
    if fmt not in LOG_FORMATS:
        raise ValueError(f"log format {fmt!r} is not one of {', '.join(LOG_FORMATS)}")
    handler = logging.StreamHandler()
    handler.addFilter(RedactingFilter(redact))
    handler.setFormatter(JsonFormatter(redact) if fmt == "json" else TextFormatter(redact))
    logging.basicConfig(level=level, handlers=[handler], force=True)
