"""A simulated caller that plays Twilio's side of a call, as Twilio does.

``await SimulatedCall(base_url, audio=[turn, ...], auth_token=...).run()`` POSTs the signed
voice webhook, reads the TwiML, opens its Stream URL as Twilio would (``wss://`` only, no query
string: ``StreamUrlRefused``; ``allow_ws`` for a plain-HTTP dev server, loopback by default)
with a signed handshake, and streams the caller's audio, then silence, one ``media`` message
every 20 ms in real time. It plays the agent's audio like Twilio (each ``mark`` echoed once
the audio before it has played; on ``clear`` the buffer dropped and every pending mark echoed
at once), ends with ``stop`` and fetches the call's timeline. A stream that ends without our
``stop`` ends the ``<Connect>``: its ``action`` is requested and the TwiML it answers is run.
Both sides are recorded, sample-aligned, for WAV output. Step by step, with what Twilio
documents and what is assumed: docs/architecture.md.
"""

from __future__ import annotations

import asyncio
import enum
import ipaddress
import logging
import secrets
import ssl
import time
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import urlencode, urlsplit

import aiohttp
import numpy as np
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from ..codecs import mediastreams as ms
from ..codecs.framing import FRAME_BYTES, FRAME_S
from ..codecs.g711 import ulaw_decode, ulaw_encode
from ..codecs.marks import MarkName
from ..gateway.security import SignatureChecker
from .impair import Impairment

log = logging.getLogger("callbridge.sim")

SILENCE = bytes([0xFF]) * FRAME_BYTES


def new_sid(prefix: str) -> str:
    return prefix + secrets.token_hex(16)


@dataclass
class CallResult:
    call_sid: str
    stream_sid: str
    twiml: str = ""
    caller_audio: bytearray = field(default_factory=bytearray)
    agent_audio: bytearray = field(default_factory=bytearray)
    """mu-law, as played: one 160-byte frame per 20 ms tick, silence when nothing played."""
    media_received: list[float] = field(default_factory=list)
    """Arrival time (s since start) of each agent media message."""
    media_sizes: list[int] = field(default_factory=list)
    marks_echoed: list[tuple[float, str]] = field(default_factory=list)
    clears: list[float] = field(default_factory=list)
    close_code: int | None = None
    close_reason: str = ""
    outbound_errors: list[str] = field(default_factory=list)
    record: dict[str, Any] | None = None
    record_refused: str = ""
    """Why the server did not return the call's record (e.g. ``401 console token required``)."""
    streams: list[tuple[float, str]] = field(default_factory=list)
    """(start time, streamSid) of each stream the call had: more than one after a resume."""
    drops: list[float] = field(default_factory=list)
    """When the server ended a stream without a hang-up from the caller."""
    stream_ends: list[str] = field(default_factory=list)
    """How each stream ended: "caller" (we sent stop), "closed" (the server closed the
    socket: a close frame), "broken" (the connection broke without one) or "failed" (it
    never opened)."""
    actions: int = 0
    """``<Connect action>`` requests made (one after each stream that ended without us)."""
    redirects: int = 0
    ended_by: str = ""
    """"caller" (we sent stop), "hangup" (<Hangup/>), "no more verbs", or "max_s"."""
    updates: list[str] = field(default_factory=list)
    """TwiML the call was given through Twilio's REST API (``twilio_update``), in order."""
    heard: list[str] = field(default_factory=list)
    """What ``<Say>`` told the caller."""
    digits_played: list[str] = field(default_factory=list)
    """``<Play digits>`` played on the call (DTMF to the far end)."""
    dialed: list[tuple[str, str]] = field(default_factory=list)
    """(noun, target) of each ``<Dial>``: ``number``/``sip`` and the destination, or
    ``conference`` and its name."""
    joined: list[str] = field(default_factory=list)
    """Who joined the caller's conference (the fake's human legs)."""

    def agent_pcm(self) -> np.ndarray:
        return ulaw_decode(bytes(self.agent_audio))

    def caller_pcm(self) -> np.ndarray:
        return ulaw_decode(bytes(self.caller_audio))

    def stereo(self) -> np.ndarray:
        """(n, 2) int16: caller left, agent right, on one time base."""
        caller, agent = self.caller_pcm(), self.agent_pcm()
        n = max(len(caller), len(agent))
        out = np.zeros((n, 2), np.int16)
        out[: len(caller), 0] = caller
        out[: len(agent), 1] = agent
        return out

    def end_marks_echoed(self) -> list[str]:
        """The utterances' end marks echoed, in order (progress marks left out)."""
        return [
            name
            for _, name in self.marks_echoed
            if (mark := MarkName.parse(name)) is not None and mark.is_end
        ]

    def timeline_events(self) -> list[str]:
        return [e["event"] for e in (self.record or {}).get("timeline", [])]


class StreamUrlRefused(ValueError):
    """The TwiML's Stream URL is one Twilio would not connect to."""


def check_stream_url(url: str, allow_ws: bool | None = None) -> None:
    """Refuse a Stream URL as Twilio does: ``wss://`` only (errors 31922/31901: "wss is
    the only supported protocol"), no query string (31920: pass values as
    ``<Parameter>``). ``allow_ws``: True accepts ``ws://`` anywhere, None only to a
    loopback host (a local dev server), False never."""
    parts = urlsplit(url)
    if parts.query:
        raise StreamUrlRefused(
            f"Stream URL {url[:120]!r} has a query string: Twilio does not support one (31920)"
        )
    if parts.scheme == "wss":
        return
    if parts.scheme == "ws":
        if allow_ws or (allow_ws is None and _loopback(parts.hostname or "")):
            return
        raise StreamUrlRefused(f"Stream URL {url[:120]!r} is ws://: Twilio connects to wss:// only (31922)")
    raise StreamUrlRefused(f"Stream URL {url[:120]!r} is not a WebSocket URL (31922)")


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class WebhookRefused(RuntimeError):
    def __init__(self, status: int, body: str) -> None:
        super().__init__(f"webhook answered {status}: {body.strip()[:200]}")
        self.status = status


class SimulatedCall:
    """One call. Build it, then ``await run()``; ``call_sid`` is known from the start."""

    def __init__(
        self,
        base_url: str,
        *,
        audio: np.ndarray | Sequence[np.ndarray] | None = None,
        auth_token: str = "",
        public_url: str | None = None,
        polite: bool = False,
        reply_timeout_s: float = 8.0,
        gap_s: float = 0.3,
        echo_db: float | None = None,
        impairment: Impairment | None = None,
        dtmf: str = "",
        hold_s: float = 1.0,
        max_s: float = 120.0,
        call_sid: str | None = None,
        console_token: str = "",
        from_number: str = "+15005550006",
        to_number: str = "+15005550001",
        webhook_path: str = "/voice/inbound",
        allow_ws: bool | None = None,
        ssl_context: ssl.SSLContext | None = None,
        direction: str = "inbound",
    ) -> None:
        """``direction``: Twilio's ``Direction`` (``outbound-api`` for a call placed through
        the REST API: ``callbridge.sim.callee``); ``webhook_path`` may carry a query."""
        self.direction = direction
        self.allow_ws = allow_ws
        """``ws://`` Stream URLs: see ``check_stream_url`` (Twilio itself never allows them)."""
        self.ssl_context = ssl_context
        """TLS for ``https``/``wss`` (e.g. trusting a test CA); None: the system's defaults."""
        self.base_url = base_url.rstrip("/")
        self.public_url = (public_url or base_url).rstrip("/")
        if audio is None:
            audio = []
        elif isinstance(audio, np.ndarray):
            audio = [audio]
        self.turns = [ulaw_encode(np.asarray(a, np.int16)) for a in audio]
        self.auth_token = auth_token
        self.console_token = console_token
        """Operator token for fetching the call's record (``CONSOLE_TOKEN``), if set."""
        self.polite = polite
        self.reply_timeout_s = reply_timeout_s
        self.gap_s = gap_s
        self.echo_gain = None if echo_db is None else 10 ** (echo_db / 20)
        self.impairment = impairment
        self.dtmf = dtmf
        self.hold_s = hold_s
        self.max_s = max_s
        self.account_sid = "AC" + "0" * 32
        self.result = CallResult(call_sid or new_sid("CA"), new_sid("MZ"))
        self.from_number = from_number
        self.to_number = to_number
        self.webhook_path = webhook_path
        self.started = asyncio.Event()
        # Twilio's playback buffer and pending marks (byte position where each fires).
        self._playback = bytearray()
        self._played = 0
        self._marks: list[tuple[int, str]] = []
        self._seq = 0
        self._t0 = 0.0
        self._end_marks = 0
        self._close_frame = False
        self._interrupt = asyncio.Event()
        """Set when Twilio's REST API gave the call new TwiML (``twilio_update``)."""
        self._redirect: str | None = None
        self._conference_over = asyncio.Event()
        self.dial_status = "completed"
        """How a ``<Dial><Number>``/``<Sip>`` ends (``DialCallStatus``): ``completed`` (the
        far end answered, talked and hung up) or ``no-answer``, ``busy``, ``failed``."""
        self.dial_hold_s = 0.3
        """How long a ``<Dial><Number>``/``<Sip>`` lasts (ringing and talking)."""

    @property
    def call_sid(self) -> str:
        return self.result.call_sid

    # -- Twilio's REST API acting on this call (``callbridge/testing/fake_twilio.py`` calls these) ----

    def twilio_update(self, twiml: str) -> None:
        """The call was given new TwiML (``Calls/{Sid}.json`` with ``Twiml``): as Twilio
        does, a live stream gets ``stop`` and is closed (without its ``<Connect action>``),
        and the new document runs in place of what was left of the old one."""
        self.result.updates.append(twiml)
        self._redirect = twiml
        self._interrupt.set()

    def conference_joined(self, who: str) -> None:
        self.result.joined.append(who)

    def conference_ended(self) -> None:
        """The caller's conference ended (its ``endConferenceOnExit`` participant left)."""
        self._conference_over.set()

    # -- 1-2: the webhook -------------------------------------------------------------

    def webhook_params(self, status: str = "ringing") -> dict[str, str]:
        return {
            "AccountSid": self.account_sid,
            "ApiVersion": "2010-04-01",
            "CallSid": self.call_sid,
            "CallStatus": status,
            "Called": self.to_number,
            "Caller": self.from_number,
            "Direction": self.direction,
            "From": self.from_number,
            "To": self.to_number,
        }

    async def post_webhook(
        self,
        session: aiohttp.ClientSession,
        url: str | None = None,
        method: str = "POST",
        extra: dict[str, str] | None = None,
    ) -> str:
        """Request the voice webhook, or (``url``, public form) a ``<Connect action>``,
        ``<Dial action>`` (``extra``: ``DialCallStatus``...) or ``<Redirect>`` target, as
        Twilio does, and return the TwiML. A GET carries the parameters in the query (signed
        as part of the URL), a POST in the form."""
        params = {**self.webhook_params("ringing" if url is None else "in-progress"), **(extra or {})}
        public = url or self.public_url + self.webhook_path
        if method == "GET":
            public += ("&" if "?" in public else "?") + urlencode(params)
            params = {}
        headers = {}
        if self.auth_token:
            headers["X-Twilio-Signature"] = SignatureChecker.sign(self.auth_token, public, params)
        target = (
            self.base_url + public[len(self.public_url) :] if public.startswith(self.public_url) else public
        )
        async with session.request(
            method, target, data=params or None, headers=headers, ssl=self._ssl()
        ) as resp:
            body = await resp.text()
            if resp.status != 200:
                raise WebhookRefused(resp.status, body)
        self.result.twiml = body
        return body

    # -- 3-6: the streams ------------------------------------------------------------

    async def run(self) -> CallResult:
        timeout = aiohttp.ClientTimeout(total=30)
        r = self.result
        script = _Script(self.turns, self.dtmf, self.polite, self.reply_timeout_s, self.gap_s)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            verbs = parse_twiml(await self.post_webhook(session), with_say=True)
            while verbs and not r.ended_by:
                verb, url, parameters = verbs.pop(0)
                if verb == "hangup":
                    r.ended_by = "hangup"
                elif verb in ("redirect", "action"):  # fetch new TwiML; it replaces the rest
                    if verb == "redirect":
                        r.redirects += 1
                    else:
                        r.actions += 1
                    verbs = parse_twiml(await self.post_webhook(session, url, parameters["method"]), True)
                elif verb == "stream":
                    await self._connect(url, parameters, script)
                elif verb == "say":
                    r.heard.append(url)
                elif verb == "play":
                    r.digits_played.append(parameters["digits"])
                elif verb == "dial":
                    verbs = await self._dial(session, url, parameters, verbs)
                if self._redirect is not None:  # new TwiML from the REST API replaces the rest
                    verbs, self._redirect = parse_twiml(self._redirect, with_say=True), None
                    self._interrupt.clear()
            r.ended_by = r.ended_by or "no more verbs"
            r.record = await self.fetch_record(session)
        return r

    async def _dial(
        self,
        session: aiohttp.ClientSession,
        target: str,
        attributes: dict[str, str],
        rest: list[tuple[str, str, dict[str, str]]],
    ) -> list[tuple[str, str, dict[str, str]]]:
        """Run a ``<Dial>``; the verbs that follow (the ``action``'s answer, if it has one)."""
        r = self.result
        noun = attributes["noun"]
        r.dialed.append((noun, target))
        if noun == "conference":  # on hold until the conference ends or the call is redirected
            waits = [asyncio.ensure_future(e.wait()) for e in (self._interrupt, self._conference_over)]
            left = max(0.0, self.max_s - (time.monotonic() - self._t0))
            await asyncio.wait(waits, timeout=left, return_when=asyncio.FIRST_COMPLETED)
            for wait in waits:
                wait.cancel()
            self._conference_over.clear()
            return rest
        status = self.dial_status
        try:
            await asyncio.wait_for(self._interrupt.wait(), self.dial_hold_s)
            return rest
        except TimeoutError:
            pass
        if not attributes.get("action"):
            return rest
        extra = {
            "DialCallStatus": status,
            "DialCallSid": new_sid("CA"),
            "DialCallDuration": "1" if status == "completed" else "0",
        }
        method = attributes.get("method", "POST").upper()
        return parse_twiml(await self.post_webhook(session, attributes["action"], method, extra), True)

    def _reachable(self, url: str) -> str:
        """Where to really connect for a URL under ``public_url`` (which may be a name
        that only resolves for Twilio, e.g. a load balancer's): the same path on
        ``base_url``."""
        public = self.public_url.split("://", 1)[-1]
        rest = url.partition("://")[2]
        if rest.startswith(public) and self.public_url != self.base_url:
            scheme = "wss" if self.base_url.startswith("https") else "ws"
            return f"{scheme}://{self.base_url.split('://', 1)[-1]}{rest[len(public) :]}"
        return url

    def _ssl(self) -> ssl.SSLContext | bool:
        return self.ssl_context if self.ssl_context is not None else True

    async def _connect(self, stream_url: str, parameters: dict[str, str], script: _Script) -> None:
        r = self.result
        check_stream_url(stream_url, self.allow_ws)
        headers = {}
        if self.auth_token:
            headers["X-Twilio-Signature"] = SignatureChecker.sign(self.auth_token, stream_url, {})
        if r.streams:  # a later stream of the same call: a new streamSid, the gap is silence
            r.stream_sid = new_sid("MZ")
            missed = int((time.monotonic() - self._t0) / FRAME_S) - len(r.caller_audio) // FRAME_BYTES
            r.caller_audio += SILENCE * max(0, missed)
            r.agent_audio += SILENCE * max(0, missed)
            self._playback.clear()
            self._marks.clear()
        reachable = self._reachable(stream_url)
        tls: dict[str, Any] = (  # connect()'s **kwargs, for the loop's create_connection
            {"ssl": self.ssl_context} if reachable.startswith("wss:") and self.ssl_context is not None else {}
        )
        opened = False
        try:
            async with connect(
                reachable,
                additional_headers=headers,
                proxy=None,
                compression=None,
                max_size=ms.MAX_MESSAGE_BYTES,
                open_timeout=10,
                close_timeout=5,
                **tls,
            ) as ws:
                opened = True
                await self._stream(ws, parameters, script)
        except (ConnectionClosed, OSError, InvalidHandshake) as exc:
            if isinstance(exc, ConnectionClosed):
                self._closed(exc)
        if r.ended_by:
            r.stream_ends.append(r.ended_by)
            return
        if self._interrupt.is_set():  # Twilio ended it to run new TwiML: not a drop
            r.stream_ends.append("redirected")
            return
        r.drops.append(time.monotonic() - self._t0)
        r.stream_ends.append("failed" if not opened else "closed" if self._close_frame else "broken")

    async def fetch_record(self, session: aiohttp.ClientSession) -> dict[str, Any] | None:
        headers = {"Authorization": f"Bearer {self.console_token}"} if self.console_token else {}
        async with session.get(
            f"{self.base_url}/calls/{self.call_sid}", headers=headers, ssl=self._ssl()
        ) as resp:
            if resp.status == 200:
                return await resp.json()
            self.result.record_refused = f"{resp.status} {(await resp.text()).strip()[:200]}"
            return None

    def _closed(self, exc: ConnectionClosed) -> None:
        self._close_frame = self._close_frame or exc.rcvd is not None
        if exc.rcvd is not None:
            self.result.close_code = exc.rcvd.code
            self.result.close_reason = exc.rcvd.reason

    async def _send(self, ws: ClientConnection, text: str) -> None:
        self._seq += 1
        await ws.send(text)

    async def _stream(self, ws: ClientConnection, parameters: dict[str, str], script: _Script) -> None:
        r = self.result
        self._seq = 0
        self._close_frame = False
        await self._send(ws, ms.twilio_connected())
        await self._send(
            ws, ms.twilio_start(self._seq + 1, r.stream_sid, r.call_sid, self.account_sid, parameters)
        )
        if not r.streams:
            self._t0 = time.monotonic()
        r.streams.append((time.monotonic() - self._t0, r.stream_sid))
        self.started.set()
        receiver = asyncio.create_task(self._receive(ws))
        try:
            await self._tick_loop(ws, receiver, script)
            if not receiver.done() and self._interrupt.is_set():  # new TwiML: Twilio ends the stream
                await self._send(
                    ws, ms.twilio_stop(self._seq + 1, r.stream_sid, r.call_sid, self.account_sid)
                )
                await ws.close()
            elif not receiver.done():
                r.ended_by = r.ended_by or "caller"
                await self._send(
                    ws, ms.twilio_stop(self._seq + 1, r.stream_sid, r.call_sid, self.account_sid)
                )
                await asyncio.wait_for(asyncio.shield(receiver), 5)
        except ConnectionClosed as exc:
            self._closed(exc)
        finally:
            receiver.cancel()
            await asyncio.gather(receiver, return_exceptions=True)
        self._close_frame = self._close_frame or ws.protocol.close_rcvd is not None
        if ws.close_code is not None and r.close_code is None:
            r.close_code = ws.close_code
            r.close_reason = ws.close_reason or ""

    async def _tick_loop(self, ws: ClientConnection, receiver: asyncio.Task[None], script: _Script) -> None:
        """One iteration per 20 ms of call time, on a monotonic schedule (no drift)."""
        r = self.result
        echo = SILENCE
        # With an impaired line, frame k is sent at its scheduled delivery time, with the
        # chunk/timestamp Twilio would give it, or never (lost before Twilio).
        deliveries = {}
        if self.impairment is not None:
            n = int(self.max_s / FRAME_S) + 1
            deliveries = {d.frame: d for d in self.impairment.schedule(n)}
        in_flight: list[tuple[float, str]] = []
        chunk = 0  # this stream's numbering
        tick = len(r.caller_audio) // FRAME_BYTES  # the call's
        while not receiver.done() and not self._interrupt.is_set():
            now = time.monotonic() - self._t0
            if now > self.max_s:
                r.ended_by = "max_s"
                break
            agent_quiet = not self._playback
            action = script.step(now, self._end_marks, agent_quiet)
            if action is _END:
                if script.done_at is not None and now >= script.done_at + self.hold_s:
                    break
                action = SILENCE
            elif isinstance(action, str):  # a key press, then silence this tick
                await self._send(ws, ms.twilio_dtmf(self._seq + 1, r.stream_sid, action))
                action = SILENCE
            if self.echo_gain is not None:  # the agent's voice coming back on the line
                mixed = ulaw_decode(action).astype(np.float32) + ulaw_decode(echo) * self.echo_gain
                action = ulaw_encode(np.clip(mixed, -32768, 32767).astype(np.int16))
            if self.impairment is None:
                await self._send(
                    ws, ms.twilio_media(self._seq + 1, r.stream_sid, chunk + 1, chunk * 20, action)
                )
            else:
                d = deliveries.get(chunk)
                if d is not None:
                    in_flight.append(
                        (d.at_s, ms.twilio_media(0, r.stream_sid, d.chunk, d.timestamp_ms, action))
                    )
                while in_flight and in_flight[0][0] <= now:  # in order: TCP never reorders
                    await self._send(ws, in_flight.pop(0)[1])
            r.caller_audio += action
            chunk += 1
            tick += 1
            echo = self._play_one_frame(ws)
            await self._flush_marks(ws)
            await asyncio.sleep(max(0.0, self._t0 + tick * FRAME_S - time.monotonic()))

    def _play_one_frame(self, ws: ClientConnection) -> bytes:
        frame = bytes(self._playback[:FRAME_BYTES])
        del self._playback[:FRAME_BYTES]
        self._played += len(frame)
        frame = frame.ljust(FRAME_BYTES, b"\xff")
        self.result.agent_audio += frame
        return frame

    async def _flush_marks(self, ws: ClientConnection) -> None:
        while self._marks and self._marks[0][0] <= self._played:
            _, name = self._marks.pop(0)
            await self._echo_mark(ws, name)

    async def _echo_mark(self, ws: ClientConnection, name: str) -> None:
        self.result.marks_echoed.append((time.monotonic() - self._t0, name))
        mark = MarkName.parse(name)
        if mark is not None and mark.is_end:  # an utterance's end mark, not a progress mark
            self._end_marks += 1
        await self._send(ws, ms.twilio_mark(self._seq + 1, self.result.stream_sid, name))

    async def _receive(self, ws: ClientConnection) -> None:
        r = self.result
        try:
            async for text in ws:
                try:
                    msg = ms.parse_outbound(text)
                except ms.ProtocolError as exc:
                    r.outbound_errors.append(str(exc))
                    continue
                if msg["streamSid"] != r.stream_sid:
                    r.outbound_errors.append(f"wrong streamSid {msg['streamSid']}")
                    continue
                event = msg["event"]
                if event == "media":
                    payload = msg["media"]["payload"]
                    r.media_received.append(time.monotonic() - self._t0)
                    r.media_sizes.append(len(payload))
                    self._playback += payload
                elif event == "mark":
                    name = msg["mark"]["name"]
                    if not self._playback:
                        await self._echo_mark(ws, name)
                    else:
                        self._marks.append((self._played + len(self._playback), name))
                elif event == "clear":
                    r.clears.append(time.monotonic() - self._t0)
                    self._playback.clear()
                    while self._marks:
                        await self._echo_mark(ws, self._marks.pop(0)[1])
        except ConnectionClosed as exc:
            self._closed(exc)


class _End(enum.Enum):
    END = 0


_END: Final = _End.END


class _Script:
    """What the caller does, tick by tick: speak each turn, then press each key, then
    wait. A ``polite`` caller speaks (or presses) only once the agent has answered: a
    new mark has come back and nothing is playing (or ``reply_timeout_s`` passed);
    otherwise the next action follows ``gap_s`` after the previous one (the first one
    ``gap_s`` after the stream started)."""

    def __init__(
        self, turns: list[bytes], dtmf: str, polite: bool, reply_timeout_s: float, gap_s: float = 0.3
    ) -> None:
        self.actions: list[bytes | str] = [*turns, *dtmf]
        self.polite = polite
        self.reply_timeout_s = reply_timeout_s
        self.gap_s = gap_s
        self.index = 0
        self.pos = 0
        self.speaking = False
        self.waiting_since = 0.0
        self.marks_seen = 0
        self.done_at: float | None = None

    def _answered(self, now: float, marks: int, agent_quiet: bool) -> bool:
        if not self.polite:
            return now - self.waiting_since >= self.gap_s
        if now - self.waiting_since >= self.reply_timeout_s:
            return True
        return marks > self.marks_seen and agent_quiet

    def step(self, now: float, marks: int, agent_quiet: bool) -> bytes | str | _End:
        """The caller's frame for this tick, a DTMF digit, or ``_END`` when all is done."""
        if self.index >= len(self.actions):
            if self.done_at is None and self._answered(now, marks, agent_quiet):
                self.done_at = now
            return _END
        action = self.actions[self.index]
        if not self.speaking:
            if not self._answered(now, marks, agent_quiet):
                return SILENCE
            if isinstance(action, str):
                self._next(now, marks)
                return action
            self.speaking, self.pos = True, 0
        assert isinstance(action, bytes)  # a turn's audio: digits are sent above, alone
        frame = action[self.pos : self.pos + FRAME_BYTES].ljust(FRAME_BYTES, b"\xff")
        self.pos += FRAME_BYTES
        if self.pos >= len(action):
            self.speaking = False
            self._next(now, marks)
        return frame

    def _next(self, now: float, marks: int) -> None:
        self.index += 1
        self.waiting_since = now
        self.marks_seen = marks


def parse_twiml(twiml: str, with_say: bool = False) -> list[tuple[str, str, dict[str, str]]]:
    """The verbs a simulated Twilio runs, in order: ``("stream", url, parameters)`` for
    ``<Connect><Stream>``, then ``("action", url, {"method": m})`` if the ``<Connect>``
    has an ``action`` (Twilio requests it when the ``<Connect>`` ends and never runs the
    verbs after it, so they are left out); ``("redirect", url, {"method": m})``;
    ``("hangup", "", {})``; ``("play", "", {"digits": d})`` for ``<Play digits>``;
    ``("dial", target, {"noun": number|sip|conference, "action": url, ...})`` for a
    ``<Dial>`` with one noun (its attributes and the noun's). ``<Say>`` (``("say", text,
    {})`` with ``with_say``) and ``<Pause>`` are otherwise skipped (nothing to stream);
    other verbs are an error."""
    try:
        root = ET.fromstring(twiml)
    except ET.ParseError as exc:
        raise ValueError(f"webhook answer is not TwiML: {exc}") from None
    verbs: list[tuple[str, str, dict[str, str]]] = []
    for el in root:
        if el.tag == "Say" and with_say:
            verbs.append(("say", (el.text or "").strip(), {}))
            continue
        if el.tag == "Play" and el.get("digits"):
            verbs.append(("play", "", {"digits": el.get("digits", "")}))
            continue
        if el.tag == "Dial":
            nouns = list(el)
            if len(nouns) != 1 or nouns[0].tag not in ("Number", "Sip", "Conference"):
                raise ValueError("TwiML <Dial> must hold one <Number>, <Sip> or <Conference> here")
            noun = nouns[0]
            attributes = {**el.attrib, **noun.attrib, "noun": noun.tag.lower()}
            verbs.append(("dial", (noun.text or "").strip(), attributes))
            continue
        if el.tag == "Connect":
            stream = el.find("Stream")
            if stream is None or not stream.get("url"):
                raise ValueError("TwiML <Connect> has no <Stream url=...>")
            params = {p.get("name", ""): p.get("value", "") for p in stream.findall("Parameter")}
            verbs.append(("stream", stream.get("url", ""), params))
            if el.get("action"):
                verbs.append(("action", el.get("action", ""), {"method": _method(el)}))
                break
        elif el.tag == "Redirect":
            verbs.append(("redirect", (el.text or "").strip(), {"method": _method(el)}))
        elif el.tag == "Hangup":
            verbs.append(("hangup", "", {}))
        elif el.tag not in ("Say", "Pause"):
            raise ValueError(f"TwiML verb <{el.tag}> is not simulated")
    return verbs


def _method(el: ET.Element) -> str:
    method = el.get("method", "POST").upper()
    if method not in ("GET", "POST"):
        raise ValueError(f"TwiML <{el.tag}> method must be GET or POST, not {method[:20]!r}")
    return method


def parse_stream_twiml(twiml: str) -> tuple[str, dict[str, str]]:
    """``<Response><Connect><Stream url=...><Parameter .../>`` -> (url, parameters)."""
    for verb, url, params in parse_twiml(twiml):
        if verb == "stream":
            return url, params
    raise ValueError("TwiML has no <Connect><Stream url=...>")
