"""Fuzz targets shared by the short campaign (``tests/test_fuzz.py``, in CI) and the long
one (``bench/fuzz.py --examples N``, outside CI).

Each target is a hypothesis strategy and a check: the check feeds one input to a parser
(or, for the webhook and the media socket, to a real gateway over real loopback sockets)
and asserts the outcome is a result or the parser's own error, nothing else. Inputs
mix pure noise with mutations of valid messages (which reach the deep branches).

``GatewayThread`` runs a real gateway on its own event loop in a thread, so the sync
checks hypothesis calls can talk to it over sockets; ``Bystander`` is a call on that
gateway that streams in real time for the whole campaign: fuzzed sockets must not
disturb it (no close, no gap in its echo).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any, Protocol

import msgpack
import orjson
from hypothesis import strategies as st
from websockets.exceptions import ConnectionClosed, InvalidHandshake
from websockets.sync.client import connect

from callbridge.actors import messages as m
from callbridge.cli import Server
from callbridge.codecs import mediastreams as ms
from callbridge.codecs.marks import MarkName
from callbridge.config import Settings
from callbridge.gateway.security import StreamTokens, TokenError
from callbridge.sim.caller import new_sid, parse_stream_twiml

SILENCE = b"\xff" * 160

# --- strategies ----------------------------------------------------------------------------

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64)
    | st.floats(allow_nan=False)
    | st.text(max_size=40)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=12), inner, max_size=5),
    max_leaves=20,
)
VALID_INBOUND = [
    ms.twilio_connected(),
    ms.twilio_start(1, "MZ1", "CA1", "AC1", {"token": "v1.CA1.1.n.m"}),
    ms.twilio_media(2, "MZ1", 1, 0, SILENCE),
    ms.twilio_mark(3, "MZ1", "u1"),
    ms.twilio_dtmf(4, "MZ1", "5"),
    ms.twilio_stop(5, "MZ1", "CA1", "AC1"),
]
VALID_OUTBOUND = [
    ms.media_message("MZ1", SILENCE),
    ms.mark_message("MZ1", MarkName(1)),
    ms.clear_message("MZ1"),
]


def _mutated(valid: list[str]) -> st.SearchStrategy[str]:
    """A valid message with one field replaced by any JSON value, or a key dropped."""

    @st.composite
    def build(draw: Any) -> str:
        msg = orjson.loads(draw(st.sampled_from(valid)))
        obj = msg
        while True:  # descend into a random nested object
            nested = [k for k, v in obj.items() if isinstance(v, dict)]
            if not nested or draw(st.booleans()):
                break
            obj = obj[draw(st.sampled_from(nested))]
        key = draw(st.sampled_from(sorted(obj)) | st.text(max_size=10))
        if draw(st.booleans()):
            obj[key] = draw(json_values)
        else:
            obj.pop(key, None)
        return json.dumps(msg)  # (json, not orjson: it writes integers past 64 bits too)

    return build()


def _byte_edits(valid: list[str]) -> st.SearchStrategy[str]:
    """A valid message cut short or with characters changed (mostly not JSON any more)."""

    @st.composite
    def build(draw: Any) -> str:
        text = list(draw(st.sampled_from(valid)))
        for _ in range(draw(st.integers(1, 4))):
            i = draw(st.integers(0, max(0, len(text) - 1)))
            text[i : i + 1] = draw(st.text(max_size=3))
        if draw(st.booleans()):
            text = text[: draw(st.integers(0, len(text)))]
        return "".join(text)

    return build()


def messages_for(valid: list[str]) -> st.SearchStrategy[str]:
    noise = st.text(max_size=200) | json_values.map(json.dumps)
    events = st.fixed_dictionaries(
        {
            "event": st.sampled_from(["media", "start", "connected", "mark", "dtmf", "stop", "clear"])
            | st.text(max_size=8)
        },
        optional=dict.fromkeys(
            ("media", "start", "mark", "dtmf", "stop", "streamSid", "sequenceNumber"), json_values
        ),
    ).map(json.dumps)
    return _mutated(valid) | _byte_edits(valid) | events | noise


inbound_messages = messages_for(VALID_INBOUND)
outbound_messages = messages_for(VALID_OUTBOUND)

TOKENS = StreamTokens(b"fuzz-secret", ttl_s=120)
_GOOD_TOKEN = TOKENS.issue("CAfuzz", 1_000_000.0)
tokens = (
    st.text(max_size=300)
    | _byte_edits([_GOOD_TOKEN])
    | st.sampled_from([_GOOD_TOKEN])
    | st.builds(".".join, st.lists(st.text(max_size=20), min_size=1, max_size=7))
)
_VALID_FRAMES = [
    m.encode(m.MediaReceived(1, 20, SILENCE)),
    m.encode(m.CallStarted("CA1", "MZ1", {"k": "v"})),
    m.encode(m.MarkPlayed(1, 10)),
    m.encode(m.DtmfReceived("5")),
]
msgpack_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats()
    | st.text(max_size=40)
    | st.binary(max_size=40)
)
msgpack_values = st.recursive(
    msgpack_scalars,
    lambda inner: st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)
frames = (
    st.binary(max_size=300)
    | msgpack_values.map(lambda v: msgpack.packb(v, use_bin_type=True))
    | st.builds(
        lambda code, rest: msgpack.packb([code, *rest], use_bin_type=True),
        st.integers(-3, len(m.MESSAGE_TYPES) + 2) | st.booleans(),
        st.lists(msgpack_values, max_size=6),
    )
    | st.builds(
        lambda b, i, c: b[:i] + c + b[i + 1 :],
        st.sampled_from(_VALID_FRAMES),
        st.integers(0, 60),
        st.binary(max_size=3),
    )
)
forms = st.dictionaries(
    st.sampled_from(["CallSid", "From", "To", "AccountSid", "CallStatus", "Direction"])
    | st.text(max_size=20),
    st.text(max_size=80) | st.sampled_from(["CA" + "0" * 32, "CA1", ""]),
    max_size=8,
)
raw_bodies = st.tuples(
    st.sampled_from(
        [
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=x",
            "text/plain",
            "application/json",
            "",
        ]
    ),
    st.binary(max_size=400),
)


# --- checks (one input each) --------------------------------------------------------------


def check_parse_inbound(text: str) -> None:
    try:
        event = ms.parse_inbound(text)
    except ms.ProtocolError as exc:
        assert exc.close_code in (1007, 1008, 1009)
        return
    assert isinstance(event, (ms.Connected, ms.Start, ms.Media, ms.Dtmf, ms.Mark, ms.Stop, ms.Unknown))
    if isinstance(event, ms.Media):
        assert len(event.payload) <= ms.MAX_PAYLOAD_BYTES


def check_parse_outbound(text: str) -> None:
    try:
        msg = ms.parse_outbound(text)
    except ms.ProtocolError:
        return
    assert msg["event"] in ("media", "mark", "clear")


def check_token(token: str) -> None:
    try:
        key, left = TOKENS.verify(token, "CAfuzz", 1_000_000.0)
    except TokenError:
        return
    assert token == _GOOD_TOKEN and key and left > 0


def check_frame(data: bytes) -> None:
    try:
        msg = m.decode(data)
    except m.MessageError:
        return
    assert isinstance(msg, m.Message)
    assert m.encode(msg) == data or m.decode(m.encode(msg)) == msg


class Endpoint(Protocol):
    """Where a gateway answers: a ``GatewayThread``, or bench/abuse.py's server process."""

    url: str
    ws_url: str


class GatewayThread:
    """A real gateway on 127.0.0.1, its own event loop in a daemon thread."""

    def __init__(self, **settings: Any) -> None:
        values = {
            "host": "127.0.0.1",
            "port": 0,
            "upstream": "echo",
            "webhook_rate": 0,
            "max_sockets_per_source": 0,
            "log_level": "ERROR",
            **settings,
        }
        self.server = Server(Settings(**values))
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True, name="fuzz-gateway")
        self.thread.start()
        self.url = asyncio.run_coroutine_threadsafe(self.server.start(), self.loop).result(30)
        self.ws_url = self.url.replace("http://", "ws://") + "/media"

    def health(self) -> dict[str, Any]:
        with urllib.request.urlopen(self.url + "/healthz", timeout=5) as resp:
            return json.loads(resp.read())

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.server.stop(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


def post(url: str, body: bytes, content_type: str) -> int:
    request = urllib.request.Request(url, data=body, method="POST")
    if content_type:
        request.add_header("Content-Type", content_type)
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            resp.read()
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code


WEBHOOK_STATUSES = (200, 400, 403, 413, 415, 429)


def check_webhook_form(gw: GatewayThread, form: dict[str, str]) -> None:
    from urllib.parse import urlencode

    status = post(
        gw.url + "/voice/inbound",
        urlencode(form).encode("utf-8", "surrogatepass"),
        "application/x-www-form-urlencoded",
    )
    assert status in WEBHOOK_STATUSES, status


def check_webhook_raw(gw: GatewayThread, body: tuple[str, bytes]) -> None:
    status = post(gw.url + "/voice/inbound", body[1], body[0])
    assert status in WEBHOOK_STATUSES, status


def stream_token(gw: Endpoint, call_sid: str) -> str:
    request = urllib.request.Request(
        gw.url + "/voice/inbound", data=f"CallSid={call_sid}".encode(), method="POST"
    )
    with urllib.request.urlopen(request, timeout=10) as resp:
        return parse_stream_twiml(resp.read().decode())[1]["token"]


SOCKET_CLOSES = (1000, 1003, 1007, 1008, 1009)


def check_media_socket(gw: GatewayThread, started: bool, texts: list[str]) -> None:
    """One socket: optionally a valid ``start``, then the fuzzed messages; the server
    either keeps the socket open or closes it with one of the documented codes."""
    call_sid, stream_sid = new_sid("CA"), new_sid("MZ")
    try:
        with connect(gw.ws_url, open_timeout=5, close_timeout=2, max_size=1 << 20) as ws:
            if started:
                ws.send(
                    ms.twilio_start(1, stream_sid, call_sid, "AC1", {"token": stream_token(gw, call_sid)})
                )
            for text in texts:
                ws.send(text)
            deadline = time.monotonic() + 0.3
            while time.monotonic() < deadline:
                ws.recv(timeout=max(0.01, deadline - time.monotonic()))
    except TimeoutError:
        return  # still open: the input was acceptable
    except ConnectionClosed as exc:
        code = exc.rcvd.code if exc.rcvd is not None else None
        assert code in SOCKET_CLOSES, (code, exc)
    except InvalidHandshake as exc:
        raise AssertionError(f"handshake refused: {exc}") from None


class Bystander:
    """A call streaming in real time in a thread for the whole campaign, echoing each mark
    at once; ``finish`` stops it and returns (frames sent, echoed frames received, worst
    gap between them): it streams 1 s more for the last echoes, then hangs up. Its record is at ``/calls/{call_sid}``.
    It shares the process (and the GIL) with hypothesis and the gateway, so its gaps
    measure that contention as much as the gateway: a bound on them is loose."""

    def __init__(self, gw: Endpoint) -> None:
        self.gw = gw
        self.call_sid = new_sid("CA")
        self.sent = 0
        self.arrivals: list[float] = []
        self.error: BaseException | None = None
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True, name="bystander")
        self.thread.start()

    def _run(self) -> None:
        call_sid, stream_sid = self.call_sid, new_sid("MZ")
        try:
            with connect(self.gw.ws_url, open_timeout=5, close_timeout=2) as ws:
                ws.send(
                    ms.twilio_start(
                        1, stream_sid, call_sid, "AC1", {"token": stream_token(self.gw, call_sid)}
                    )
                )
                t0 = time.monotonic()
                n = 0
                tail_end = None  # then 1 s more (the echo of the last frames), and hang up
                while tail_end is None or time.monotonic() < tail_end:
                    ws.send(ms.twilio_media(n + 2, stream_sid, n + 1, n * 20, SILENCE))
                    n += 1
                    if tail_end is None:
                        self.sent = n
                        if self.stopping.is_set():
                            tail_end = time.monotonic() + 1.0
                    while True:  # drain what has arrived, then sleep to the next 20 ms tick
                        wait = t0 + n * 0.02 - time.monotonic()
                        try:
                            msg = ws.recv(timeout=max(0.0, wait))
                        except TimeoutError:
                            break
                        if isinstance(msg, str) and msg.startswith('{"event":"media"'):
                            self.arrivals.append(time.monotonic())
                        elif isinstance(msg, str) and msg.startswith('{"event":"mark"'):
                            name = orjson.loads(msg)["mark"]["name"]
                            ws.send(ms.twilio_mark(n + 2, stream_sid, name))
                ws.send(ms.twilio_stop(n + 2, stream_sid, call_sid, "AC1"))
        except BaseException as exc:
            self.error = exc

    def finish(self) -> tuple[int, int, float]:
        self.stopping.set()
        self.thread.join(10)
        if self.error is not None:
            raise AssertionError(f"the bystander call failed: {self.error!r}")
        gaps = [b - a for a, b in itertools.pairwise(self.arrivals[50:])] or [0.0]
        return self.sent, len(self.arrivals), max(gaps)


TARGETS: dict[str, tuple[st.SearchStrategy[Any], Callable[..., None]]] = {
    "mediastreams.parse_inbound": (inbound_messages, check_parse_inbound),
    "mediastreams.parse_outbound": (outbound_messages, check_parse_outbound),
    "security.StreamTokens.verify": (tokens, check_token),
    "messages.decode": (frames, check_frame),
}
"""The pure parsers: ``strategy, check``. The socket targets need a ``GatewayThread``."""


def media_inputs() -> st.SearchStrategy[tuple[bool, list[str]]]:
    return st.tuples(st.booleans(), st.lists(inbound_messages, min_size=1, max_size=4))
