"""Log lines: one JSON object per line (or text), tagged with the call they belong to."""

from __future__ import annotations

import asyncio
import io
import logging

import orjson

from callbridge.logs import bind_call, resolve_format, setup_logging, unbind_call


async def test_json_lines_carry_the_call_of_the_task_that_logged():
    stream = io.StringIO()
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
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
        for h in list(root.handlers):
            root.removeHandler(h)
        for h in saved[0]:
            root.addHandler(h)
        root.setLevel(saved[1])
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
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    try:
        setup_logging("INFO", "text", stream)
        binding = bind_call("CAxyz", "MZ1")
        logging.getLogger("callbridge.test").info("hello")
        unbind_call(binding)
    finally:
        for h in list(root.handlers):
            root.removeHandler(h)
        for h in saved[0]:
            root.addHandler(h)
        root.setLevel(saved[1])
    assert stream.getvalue().rstrip().endswith("INFO    callbridge.test [CAxyz]: hello")
    assert resolve_format("auto", "dev") == "text"
    assert resolve_format("auto", "prod") == "json"
    assert resolve_format("text", "prod") == "text"
