"""The Media Streams protocol, without sockets: parse what Twilio sends, write what it takes."""

from __future__ import annotations

import base64
import json

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from callbridge.codecs import mediastreams as ms
from callbridge.codecs.marks import MAX_IN_FLIGHT, MarkName, MarksInFlight
from callbridge.gateway.streamstate import StreamState, step


def test_parses_every_twilio_event():
    assert ms.parse_inbound(ms.twilio_connected()) == ms.Connected("Call", "1.0.0")
    start = ms.parse_inbound(ms.twilio_start(1, "MZ1", "CA1", "AC1", {"token": "t", "lang": "en"}))
    assert start == ms.Start("MZ1", "CA1", "AC1", ("inbound",), {"token": "t", "lang": "en"})
    media = ms.parse_inbound(ms.twilio_media(2, "MZ1", 7, 120, b"\x00\x7f\xff"))
    assert media == ms.Media("inbound", 7, 120, b"\x00\x7f\xff")
    assert ms.parse_inbound(ms.twilio_mark(3, "MZ1", "u1")) == ms.Mark("u1")
    assert ms.parse_inbound(ms.twilio_dtmf(4, "MZ1", "#")) == ms.Dtmf("inbound_track", "#")
    assert ms.parse_inbound(ms.twilio_stop(5, "MZ1", "CA1", "AC1")) == ms.Stop("CA1")
    assert ms.parse_inbound('{"event":"somethingNew"}') == ms.Unknown("somethingNew")


def test_counters_arrive_as_strings_and_are_checked():
    ok = '{"event":"media","media":{"track":"inbound","chunk":"12","timestamp":"220","payload":""}}'
    assert ms.parse_inbound(ok).chunk == 12
    for bad in ('"-1"', '"1.5"', "true", '"9999999999999999"', "null"):
        with pytest.raises(ms.ProtocolError) as err:
            ms.parse_inbound(ok.replace('"12"', bad))
        assert err.value.close_code == 1007


@pytest.mark.parametrize(
    "text,code",
    [
        ("{", 1007),
        ("[]", 1007),
        ('{"event": 5}', 1007),
        ('{"event":"media"}', 1007),
        ('{"event":"media","media":{"chunk":"1","timestamp":"0","payload":"@@@"}}', 1007),
        ('{"event":"media","media":{"chunk":"1","timestamp":"0","payload":"' + "A" * 30000 + '"}}', 1009),
        ('{"event":"mark","mark":{}}', 1007),
        ('{"event":"dtmf","dtmf":{"digit":"12"}}', 1007),
        (
            '{"event":"start","streamSid":"MZ1","start":{"callSid":"CA1","mediaFormat":{"encoding":"audio/l16","sampleRate":16000,"channels":1}}}',
            1007,
        ),
        ('{"event":"start","streamSid":"bad sid!","start":{"callSid":"CA1"}}', 1007),
        ('{"event":"start","streamSid":"MZ1","start":{"callSid":"CA1","customParameters":{"a":1}}}', 1007),
        ("x" * (ms.MAX_MESSAGE_BYTES + 1), 1009),
    ],
)
def test_malformed_messages_raise_with_close_code(text, code):
    with pytest.raises(ms.ProtocolError) as err:
        ms.parse_inbound(text)
    assert err.value.close_code == code


def test_outbound_messages_are_what_twilio_expects():
    media = orjson.loads(ms.media_message("MZ1", b"\xff" * 160))
    assert media == {
        "event": "media",
        "streamSid": "MZ1",
        "media": {"payload": base64.b64encode(b"\xff" * 160).decode()},
    }
    assert ms.parse_outbound(ms.media_message("MZ1", b"\x01\x02"))["media"]["payload"] == b"\x01\x02"
    assert orjson.loads(ms.mark_message("MZ1", MarkName(1))) == {
        "event": "mark",
        "streamSid": "MZ1",
        "mark": {"name": "u1"},
    }
    assert orjson.loads(ms.mark_message("MZ1", MarkName(1, 20)))["mark"] == {"name": "u1.20"}
    assert orjson.loads(ms.clear_message("MZ1")) == {"event": "clear", "streamSid": "MZ1"}
    with pytest.raises(TypeError):  # only a MarkName: no string reaches the JSON unchecked
        ms.mark_message("MZ1", 'quote"injection')


@pytest.mark.slow
@settings(max_examples=300, deadline=None)
@given(
    st.one_of(
        st.text(max_size=300),
        st.binary(max_size=300),
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.text(max_size=20),
            lambda kids: (
                st.lists(kids, max_size=4)
                | st.dictionaries(
                    st.sampled_from(
                        [
                            "event",
                            "media",
                            "start",
                            "mark",
                            "dtmf",
                            "stop",
                            "payload",
                            "chunk",
                            "timestamp",
                            "name",
                            "digit",
                            "callSid",
                            "streamSid",
                            "customParameters",
                            "mediaFormat",
                            "track",
                        ]
                    ),
                    kids,
                    max_size=6,
                )
            ),
            max_leaves=20,
        ).map(json.dumps),
    )
)
def test_fuzz_parser_only_raises_protocol_error(data):
    try:
        ms.parse_inbound(data)
    except ms.ProtocolError as exc:
        assert exc.close_code in (1007, 1008, 1009)


def test_state_machine_allows_only_twilio_order():
    s = StreamState.AWAIT_START
    s = step(s, ms.Connected("Call", "1"))
    with pytest.raises(ms.ProtocolError) as err:
        step(s, ms.Media("inbound", 1, 0, b""))
    assert err.value.close_code == 1008
    s = step(s, ms.Start("MZ", "CA", "AC", ("inbound",)))
    assert s is StreamState.STREAMING
    for event in (ms.Media("inbound", 1, 0, b""), ms.Mark("u1"), ms.Dtmf("t", "1"), ms.Unknown("x")):
        assert step(s, event) is StreamState.STREAMING
    with pytest.raises(ms.ProtocolError):
        step(s, ms.Start("MZ", "CA", "AC", ("inbound",)))
    s = step(s, ms.Stop("CA"))
    with pytest.raises(ms.ProtocolError):
        step(s, ms.Media("inbound", 2, 20, b""))


# --- mark names ------------------------------------------------------------------------------


def test_mark_names_round_trip_and_parse_strictly():
    for mark in (MarkName(0), MarkName(1), MarkName(7, 10), MarkName(999_999_999, 999_999_999)):
        assert MarkName.parse(str(mark)) == mark
    assert str(MarkName(3)) == "u3" and MarkName(3).is_end
    assert str(MarkName(3, 40)) == "u3.40" and not MarkName(3, 40).is_end
    not_ours = [
        "u²",
        "u١",
        "u³.10",
        "u1.²",
        "u" + "7" * 5000,
        "u1." + "9" * 5000,
        "u1234567890",  # digits Python's isdigit takes
        "",
        "u",
        "u.",
        "u1.",
        "u.1",
        "1",
        "U1",
        "u01",
        "u1.01",
        "u1.0",
        "u-1",
        "u+1",
        "u 1",
        "u1 ",
        " u1",
        "u1.2.3",
        "u1\n",
        "x" * 60_000,
        None,
        1,
        b"u1",
    ]
    for name in not_ours:
        assert MarkName.parse(name) is None, name
    for bad in ((-1, 0), (10**9, 0), (1, -1), (1, 10**9)):
        with pytest.raises(ValueError):
            MarkName(*bad)


def test_marks_in_flight_accept_each_echo_of_ours_once_and_are_bounded():
    marks = MarksInFlight()
    assert marks.sent(MarkName(1, 10)) == "u1.10"
    marks.sent(MarkName(1))
    assert marks.echoed("u1.10") == (MarkName(1, 10), True)
    assert marks.echoed("u1.10") is None  # a duplicate
    assert marks.echoed("u2") is None and marks.echoed("u²") is None and marks.echoed("u1" * 30_000) is None
    marks.sent(MarkName(2, 10))
    marks.cleared()  # a clear went out: these come back unplayed
    marks.sent(MarkName(3, 10))
    assert marks.echoed("u1") == (MarkName(1), False) and marks.echoed("u2.10") == (MarkName(2, 10), False)
    assert marks.echoed("u3.10") == (MarkName(3, 10), True)
    for n in range(1, 3 * MAX_IN_FLIGHT):  # a peer that never echoes
        marks.sent(MarkName(n))
    assert len(marks) == MAX_IN_FLIGHT and marks.forgotten == 2 * MAX_IN_FLIGHT - 1
    assert marks.echoed("u1") is None and marks.echoed(f"u{3 * MAX_IN_FLIGHT - 1}") is not None
