"""EVENT_LOOP: which loop a serving process runs, and bad values."""

from __future__ import annotations

import asyncio

import pytest

from callbridge import eventloop
from callbridge.config import ConfigError, Settings


async def _loop_class() -> str:
    await asyncio.sleep(0.001)  # a timer, as the call path uses
    return type(asyncio.get_running_loop()).__module__


def test_each_choice_runs_its_loop():
    assert eventloop.run(_loop_class(), "asyncio").startswith("asyncio")
    assert eventloop.run(_loop_class(), "uvloop") == "uvloop"  # a dependency on Linux
    assert eventloop.resolve("auto") == "uvloop"
    assert eventloop.run(_loop_class(), "auto") == "uvloop"


def test_bad_choice_is_a_clear_configuration_error():
    with pytest.raises(ConfigError, match="EVENT_LOOP must be auto, uvloop or asyncio"):
        Settings.from_env({"EVENT_LOOP": "trio"})
    assert Settings.from_env({"EVENT_LOOP": "asyncio"}).server.event_loop == "asyncio"
