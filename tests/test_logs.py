"""Log lines: one JSON object per line (or text), tagged with the call they belong to."""

from __future__ import annotations

import asyncio
import io
import logging
import logging.config
import os
import pickle
import sys
import threading
import warnings

import orjson

from callbridge.logs import (
    bind_call,
    resolve_format,
    say,
    setup_logging,
    thespian_log_defs,
    unbind_call,
)


def _restoring_root() -> tuple[logging.Logger, tuple[list[logging.Handler], int]]:
    """The root logger and what ``_restore`` puts back after a test's ``setup_logging``."""
    root = logging.getLogger()
    return root, (list(root.handlers), root.level)


def _restore(root: logging.Logger, saved) -> None:
    for h in list(root.handlers):
        root.removeHandler(h)
    for h in saved[0]:
        root.addHandler(h)
    root.setLevel(saved[1])
    logging.captureWarnings(False)
    sys.excepthook = sys.__excepthook__
    threading.excepthook = threading.__excepthook__


async def test_json_lines_carry_the_call_of_the_task_that_logged():
    stream = io.StringIO()
    root, saved = _restoring_root()
    log = logging.getLogger("callbridge.test")
    try:
        setup_logging("INFO", "json", stream)
        log.info("before any call")
        binding = bind_call("CAabc", "MZdef")

        async def in_call_task() -> None:
            log.warning("inside %s", "the call's task")

        task = asyncio.get_running_loop().create_task(in_call_task())  # inherits the tags
        unbind_call(binding)
        await task
        log.info("after the call\nwith a second line")
        try:
            raise ValueError("boom")
        except ValueError:
            log.exception("failed")
    finally:
        _restore(root, saved)
    lines = stream.getvalue().splitlines()
    events = [orjson.loads(line) for line in lines]  # every line is one JSON object
    assert len(events) == 4
    assert "callSid" not in events[0]
    assert events[1]["msg"] == "inside the call's task"
    assert (events[1]["callSid"], events[1]["streamSid"], events[1]["level"]) == ("CAabc", "MZdef", "WARNING")
    assert "callSid" not in events[2] and events[2]["msg"] == "after the call\nwith a second line"
    assert "ValueError: boom" in events[3]["exc"]


def test_text_format_and_defaults():
    stream = io.StringIO()
    root, saved = _restoring_root()
    try:
        setup_logging("INFO", "text", stream)
        binding = bind_call("CAxyz", "MZ1")
        logging.getLogger("callbridge.test").info("hello")
        unbind_call(binding)
    finally:
        _restore(root, saved)
    assert stream.getvalue().rstrip().endswith("INFO    callbridge.test [CAxyz]: hello")
    assert resolve_format("auto", "dev") == "text"
    assert resolve_format("auto", "prod") == "json"
    assert resolve_format("text", "prod") == "text"


def test_json_mode_turns_prints_warnings_and_uncaught_exceptions_into_json_lines(capsys):
    stream = io.StringIO()
    root, saved = _restoring_root()
    try:
        setup_logging("INFO", "json", stream)
        say("listening on http://127.0.0.1:8080")
        say("  voice webhook: http://x/voice/inbound")
        say("stopped", error=True)
        warnings.warn("an old API", UserWarning, stacklevel=1)
        thread = threading.Thread(target=lambda: 1 / 0, name="worker")
        thread.start()
        thread.join()
        binding = bind_call("CAthread", "MZthread")
        try:
            raise RuntimeError("at the top")
        except RuntimeError:
            sys.excepthook(*sys.exc_info())  # as the interpreter does for an uncaught one
        unbind_call(binding)
    finally:
        _restore(root, saved)
    out, err = capsys.readouterr()
    said = [orjson.loads(line) for line in out.splitlines()]
    assert [(e["level"], e["logger"], e["msg"]) for e in said] == [
        ("INFO", "callbridge", "listening on http://127.0.0.1:8080"),
        ("INFO", "callbridge", "voice webhook: http://x/voice/inbound"),
    ]
    assert orjson.loads(err)["msg"] == "stopped" and orjson.loads(err)["level"] == "ERROR"
    logged = [orjson.loads(line) for line in stream.getvalue().splitlines()]
    assert [e["logger"] for e in logged] == ["py.warnings", "callbridge", "callbridge"]
    assert "an old API" in logged[0]["msg"]
    assert logged[1]["msg"] == "uncaught exception in thread worker"
    assert "ZeroDivisionError" in logged[1]["exc"]
    assert logged[2]["callSid"] == "CAthread" and "RuntimeError: at the top" in logged[2]["exc"]


def test_text_mode_say_prints_as_is(capsys):
    root, saved = _restoring_root()
    try:
        setup_logging("INFO", "text", io.StringIO())
        say("  voice webhook: http://x/voice/inbound")
    finally:
        _restore(root, saved)
    assert capsys.readouterr().out == "  voice webhook: http://x/voice/inbound\n"


def test_thespian_log_defs_format_forwarded_records_as_json():
    """Thespian's logger process formats records made (and pickled) in other processes:
    the message already formatted, a traceback as ``exc_text``, the call's tags made with
    the record."""
    root, saved = _restoring_root()
    try:
        setup_logging("INFO", "json", io.StringIO())  # in the process that logs
        binding = bind_call("CAfwd", "MZfwd")
        record = logging.getLogRecordFactory()(
            "callbridge.prod", logging.ERROR, __file__, 1, "shard %d failed", (3,), None
        )
        unbind_call(binding)
    finally:
        _restore(root, saved)
    record.exc_text = "Traceback (most recent call last):\nValueError: boom"
    record = pickle.loads(pickle.dumps(record))
    defs = thespian_log_defs("INFO", "json")
    # Build the formatter as thespian's logger process does (dictConfig), without
    # reconfiguring this process's logging.
    formatter = logging.config.DictConfigurator(defs).configure_formatter(defs["formatters"]["f"])
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    handler.handle(record)
    event = orjson.loads(stream.getvalue())
    assert (event["msg"], event["level"], event["callSid"]) == ("shard 3 failed", "ERROR", "CAfwd")
    assert event["exc"].endswith("ValueError: boom") and event["pid"] == os.getpid()
    text = thespian_log_defs("INFO", "text")["formatters"]["f"]["format"]
    assert "%(process)d" in text
