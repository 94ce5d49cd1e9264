"""Logging: one event per line, each tagged with the call it belongs to.

``bind_call(call_sid, stream_sid)`` sets two context variables for the current task;
tasks it creates afterwards (the call's writer, its actors' tasks) inherit them, so every
log line from a call's code carries ``callSid`` and ``streamSid`` with no logger
plumbing. ``CallContextFilter`` copies them onto each record.

Formats (``LOG_FORMAT``): ``json`` (one JSON object per line: ``ts`` (ISO 8601 UTC),
``level``, ``logger``, ``msg``, ``callSid``/``streamSid`` when in a call, ``exc`` with the
traceback), or ``text`` (``time level logger [callSid]: message``). ``auto`` (default):
text in dev mode, JSON in prod mode. Messages longer than ``MAX_MESSAGE_CHARS`` are cut.
"""

from __future__ import annotations

import contextvars
import logging
import sys
import time
from typing import IO

import orjson

MAX_MESSAGE_CHARS = 8000

call_sid_var: contextvars.ContextVar[str] = contextvars.ContextVar("callSid", default="")
stream_sid_var: contextvars.ContextVar[str] = contextvars.ContextVar("streamSid", default="")


def bind_call(call_sid: str, stream_sid: str) -> tuple[contextvars.Token[str], contextvars.Token[str]]:
    """Tag this task's log lines (and those of tasks it creates from now on) with the call."""
    return call_sid_var.set(call_sid), stream_sid_var.set(stream_sid)


def unbind_call(tokens: tuple[contextvars.Token[str], contextvars.Token[str]]) -> None:
    call_sid_var.reset(tokens[0])
    stream_sid_var.reset(tokens[1])


class CallContextFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.callSid = call_sid_var.get()
        record.streamSid = stream_sid_var.get()
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        event: dict[str, object] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage()[:MAX_MESSAGE_CHARS],
        }
        call_sid = getattr(record, "callSid", "")
        if call_sid:
            event["callSid"] = call_sid
            event["streamSid"] = getattr(record, "streamSid", "")
        if record.exc_info:
            event["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(event, default=str).decode()


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s%(call)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        call_sid = getattr(record, "callSid", "")
        record.call = f" [{call_sid}]" if call_sid else ""
        return super().format(record)


def resolve_format(log_format: str, mode: str) -> str:
    """``auto`` -> ``json`` in prod mode, ``text`` in dev mode."""
    if log_format == "auto":
        return "json" if mode == "prod" else "text"
    return log_format


def setup_logging(level: str, log_format: str = "text", stream: IO[str] | None = None) -> logging.Handler:
    """Replace the root logger's handlers with one that writes ``log_format`` lines."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.addFilter(CallContextFilter())
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(getattr(logging, level.upper(), logging.INFO))
    return handler
