"""Settings as option groups, and the back-end registry they are checked against."""

from __future__ import annotations

import aiohttp
import numpy as np
import pytest

from callbridge import upstreams
from callbridge.actors import messages as m
from callbridge.config import GROUPS, ConfigError, Settings, settings_table
from callbridge.sim.caller import SimulatedCall
from callbridge.upstreams.base import PCM16K, ULAW, Backend, Conversation
from callbridge.upstreams.openai_realtime import RealtimeOptions
from callbridge.upstreams.vapi import VapiOptions
from tests.conftest import events

LISTED = "embedded, vapi, openai-realtime, echo"


def test_flat_keywords_reach_their_groups_and_round_trip_the_environment():
    s = Settings(host="0.0.0.0", inbound_rate=3.5, upstream="echo", vapi_audio="mulaw", secret="k" * 20)
    assert (s.server.host, s.limits.inbound_rate, s.backends.upstream) == ("0.0.0.0", 3.5, "echo")
    assert s.backend(VapiOptions).audio == "mulaw" and s.twilio.secret == "k" * 20
    assert Settings.from_env(s.to_env()) == s
    assert (
        Settings.from_env({"VAPI_AUDIO": "mulaw", "INBOUND_RATE": "3.5"}).backend(VapiOptions).audio
        == "mulaw"
    )
    moved = s.replace(port=0, workers=2)
    assert (moved.server.port, moved.prod.workers, moved.server.host) == (0, 2, "0.0.0.0")
    with pytest.raises(TypeError, match="no_such_setting"):
        Settings(no_such_setting=1)


def test_each_group_checks_its_own_values_naming_the_variable():
    for flat, bad, variable in (
        ("inbound_rate", -1.0, "INBOUND_RATE"),
        ("outbound_lead_ms", 5, "OUTBOUND_LEAD_MS"),
        ("stt_decoders", 0, "STT_DECODERS"),
        ("agent", "hal", "AGENT"),
        ("upstream_retries_s", "1,99", "UPSTREAM_RETRIES_S"),
        ("workers", 999, "WORKERS"),
        ("vapi_audio", "opus", "VAPI_AUDIO"),  # the Vapi back end's own check
    ):
        with pytest.raises(ConfigError, match=variable):
            Settings(**{flat: bad})


def test_unknown_back_end_is_refused_with_the_list():
    with pytest.raises(ConfigError, match=f"UPSTREAM must be one of {LISTED}, not 'nope'"):
        Settings(upstream="nope")
    choice = upstreams.choose(Settings(), {"upstream": "nope"})
    assert choice.spec.name == "embedded"
    assert choice.refused == f"upstream 'nope' refused: unknown back end (one of {LISTED})"


def test_a_back_end_s_needs_name_its_variables_at_start_and_per_call():
    with pytest.raises(ConfigError, match="UPSTREAM=openai-realtime: needs OPENAI_API_KEY"):
        Settings(upstream="openai-realtime")
    with pytest.raises(ConfigError, match="OPENAI_REALTIME_URL must start with ws://"):
        Settings(upstream="openai-realtime", openai_api_key="sk-x", openai_realtime_url="https://x")
    # Not the default: only a call that asks for it is refused (and runs on the default).
    s = Settings(openai_realtime_url="https://x")
    assert s.backend(RealtimeOptions).url == "https://x"
    choice = upstreams.choose(s, {"upstream": "vapi"})
    assert (choice.spec.name, choice.refused) == ("embedded", "upstream 'vapi' refused: needs VAPI_API_KEY")
    ready = Settings(vapi_api_key="k", vapi_assistant_id="a")
    assert upstreams.choose(ready, {"upstream": " vapi "}) == upstreams.Choice(upstreams.BACKENDS["vapi"])


def test_caller_format_is_the_spec_s_and_may_follow_its_settings():
    formats = {name: spec.caller_format(Settings()) for name, spec in upstreams.BACKENDS.items()}
    assert formats == {"embedded": PCM16K, "vapi": PCM16K, "openai-realtime": ULAW, "echo": PCM16K}
    assert upstreams.BACKENDS["vapi"].caller_format(Settings(vapi_audio="mulaw")) == ULAW
    assert [name for name, spec in upstreams.BACKENDS.items() if spec.remote] == ["vapi", "openai-realtime"]


def test_the_reference_has_a_table_per_group_with_every_variable():
    table = settings_table()
    titles = [group.title for group in GROUPS.values()] + [VapiOptions.title, RealtimeOptions.title]
    assert [line[4:] for line in table.splitlines() if line.startswith("### ")] == titles
    for variable in Settings().to_env():
        assert f"| `{variable}` |" in table
    for spec in upstreams.BACKENDS.values():
        assert f"`{spec.name}` ({spec.summary})" in table


def test_a_back_end_must_implement_what_the_upstream_actor_calls():
    class Partial(Backend):
        def start(self, call: m.CallStarted) -> None: ...
        def caller_audio(self, msg: m.CallerAudio) -> None: ...

    with pytest.raises(TypeError, match="stop"):
        Partial(None, Conversation())


async def test_webhook_refuses_an_unknown_back_end_and_a_call_runs_on_the_default_when_one_is_not_ready(
    start_server,
):
    url = await start_server(upstream="echo")
    call = SimulatedCall(url, audio=[np.zeros(8000, np.int16)], hold_s=0.5)
    async with aiohttp.ClientSession() as http:
        params = call.webhook_params("ringing")
        async with http.post(url + "/voice/inbound?upstream=nope", data=params) as resp:
            assert resp.status == 400
            assert await resp.text() == f"upstream must be one of {LISTED}\n"
    result = await SimulatedCall(
        url, audio=[np.zeros(8000, np.int16)], hold_s=0.5, webhook_path="/voice/inbound?upstream=vapi"
    ).run()
    (error,) = events(result, "upstream.error")
    assert error["error"] == "upstream 'vapi' refused: needs VAPI_API_KEY"
    assert result.agent_audio  # the echo back end answered
