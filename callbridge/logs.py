"""Logging: one event per line, each tagged with the call it belongs to.

``bind_call(call_sid, stream_sid)`` sets two context variables for the current task;
tasks it creates afterwards (the call's writer, its actors' tasks) inherit them, so every
log line from a call's code carries ``callSid`` and ``streamSid`` with no logger
plumbing. ``setup_logging`` installs a record factory that copies them onto each record
when it is made, so they survive thespian's forwarding of records to its logger process.

Formats (``LOG_FORMAT``): ``json`` (one JSON object per line: ``ts`` (ISO 8601 UTC),
``level``, ``logger``, ``msg``, ``pid``, ``callSid``/``streamSid`` when in a call, ``exc``
with the traceback), or ``text`` (``time level logger [callSid]: message``). ``auto``
(default): text in dev mode, JSON in prod mode. Messages longer than ``MAX_MESSAGE_CHARS``
are cut. In ``json``, ``say`` (the lines a server prints for its operator), Python's
warnings and uncaught exceptions are JSON lines too, and ``thespian_log_defs`` gives
prod mode's actor processes the same format: every line of a node is one object.
"""

from __future__ import annotations

import contextvars
import logging
import sys
import threading
import time
from types import TracebackType
from typing import IO, Any

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


class _CallRecordFactory:
    """Makes each log record with the current call's ``callSid`` and ``streamSid``."""

    def __init__(self, make: Any) -> None:
        self.make = make

    def __call__(self, *args: Any, **kwargs: Any) -> logging.LogRecord:
        record = self.make(*args, **kwargs)
        record.callSid = call_sid_var.get()
        record.streamSid = stream_sid_var.get()
        return record


def tag_records() -> None:
    """From now on every log record carries the current call's ``callSid`` and ``streamSid``
    (``setup_logging`` does this; a test that adds its own handler calls it)."""
    factory = logging.getLogRecordFactory()
    if not isinstance(factory, _CallRecordFactory):
        logging.setLogRecordFactory(_CallRecordFactory(factory))


def _event(level: str, logger: str, msg: str, created: float) -> dict[str, object]:
    return {
        "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created))
        + f".{int(created * 1000) % 1000:03d}Z",
        "level": level,
        "logger": logger,
        "msg": msg[:MAX_MESSAGE_CHARS],
    }


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        event = _event(record.levelname, record.name, record.getMessage(), record.created)
        event["pid"] = record.process
        call_sid = getattr(record, "callSid", "")
        if call_sid:
            event["callSid"] = call_sid
            event["streamSid"] = getattr(record, "streamSid", "")
        if record.exc_info:
            event["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:  # formatted where it was raised (thespian forwards records so)
            event["exc"] = record.exc_text
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
    """Replace the root logger's handlers with one that writes ``log_format`` lines; in
    ``json``, Python's warnings and uncaught exceptions are logged (as JSON) too."""
    tag_records()
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(getattr(logging, level.upper(), logging.INFO))
    if log_format == "json":
        logging.captureWarnings(True)
        sys.excepthook = _log_uncaught
        threading.excepthook = _log_uncaught_in_thread
    return handler


def json_line(text: str, level: str = "INFO") -> str:
    """``text`` as one JSON object shaped like a log line (logger ``callbridge``)."""
    return orjson.dumps(_event(level, "callbridge", text.strip(), time.time())).decode()


def say(text: str, *, error: bool = False) -> None:
    """A line for whoever started the server (its URL, "drained"): on stdout (stderr for
    ``error``) as it is in the text format; in json (the root logger's handler formats
    JSON: ``setup_logging``) a ``json_line``."""
    if any(isinstance(h.formatter, JsonFormatter) for h in logging.getLogger().handlers):
        text = json_line(text, "ERROR" if error else "INFO")
    print(text, file=sys.stderr if error else sys.stdout, flush=True)


def thespian_log_defs(level: str, log_format: str) -> dict[str, Any]:
    """``logDefs`` for thespian's ActorSystem: its logger process writes what every actor
    process logs, to stderr, in ``log_format`` (text lines carry the pid of the process
    that logged)."""
    if log_format == "json":
        formatter: dict[str, Any] = {"()": f"{__name__}.JsonFormatter"}
    else:
        formatter = {"format": "%(asctime)s %(levelname)-7s [pid %(process)d] %(name)s: %(message)s"}
    return {
        "version": 1,
        "formatters": {"f": formatter},
        "handlers": {"h": {"class": "logging.StreamHandler", "formatter": "f", "stream": "ext://sys.stderr"}},
        "root": {"handlers": ["h"], "level": level.upper()},
    }


def _log_uncaught(kind: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
    if issubclass(kind, KeyboardInterrupt):
        sys.__excepthook__(kind, exc, tb)
        return
    logging.getLogger("callbridge").critical("uncaught exception", exc_info=(kind, exc, tb))


def _log_uncaught_in_thread(args: threading.ExceptHookArgs) -> None:
    if args.exc_type is SystemExit:
        return
    name = args.thread.name if args.thread is not None else "?"
    logging.getLogger("callbridge").error(
        "uncaught exception in thread %s",
        name,
        exc_info=(args.exc_type, args.exc_value or args.exc_type(), args.exc_traceback),
    )
