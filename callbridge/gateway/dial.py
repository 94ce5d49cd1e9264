"""Outbound calls: ``POST /calls`` places one through Twilio's REST API, and Twilio's
callbacks about it come back here.

- ``POST /calls`` (operator token, ``gateway/access.py``; ``Content-Type:
  application/json``, which a cross-site form cannot send): the body as
  ``callbridge/outbound.py`` describes (at most ``MAX_BODY_BYTES``: 413; refused: 400 with
  ``{"error"}``). Answers ``201 {"callSid", "status", "to", "from"}``. Refused with 503
  (``Retry-After``) without Twilio API credentials, while draining, or when the live calls
  and the calls placed but not yet answered reach ``MAX_CALLS``; with 429 (``Retry-After``)
  past ``DIAL_RATE`` (a token bucket for all callers, ``DIAL_BURST`` at once); with 502
  when Twilio refuses or cannot be reached (its message in ``error``; never retried: a
  retry could place the call twice). Twilio is given ``Url`` = the voice webhook with the
  call's signed query, ``StatusCallback`` = ``/voice/status`` (``initiated``, ``ringing``,
  ``answered``, ``completed``) and, unless ``MACHINE_DETECTION=off``, asynchronous
  answering-machine detection reporting to ``/voice/amd``.
- ``POST /voice/amd``: Twilio's ``AsyncAmdStatusCallback`` (``CallSid``, ``AnsweredBy``,
  ``MachineDetectionDuration``), checked like the voice webhook (``twilio_form``: rate,
  size, form, ``X-Twilio-Signature``). ``call.answered_by`` goes to the call's timeline,
  the events and ``callbridge_answered_by``; a machine gets the voicemail message
  (``messages.AnsweredBy``: the call's Upstream becomes ``upstreams/voicemail.py``), a fax
  the end of the call, a human (or ``unknown``) the agent, already on the line. A verdict
  for a call whose stream has not started yet waits for it up to ``AMD_WAIT_S``; a machine
  or fax with no stream by then is hung up through the REST API. In production mode the
  verdict is applied only by the shard that carries the call's stream (the callback may
  reach another: then it is logged and noted, and the agent carries on: a known gap).
- ``POST /voice/status``: Twilio's ``StatusCallback``: ``twilio.status`` in the call's
  timeline (when the bridge has it); a final status releases the call's ``MAX_CALLS`` slot.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time

from aiohttp import web

from ..outbound import ANSWERED_BY, MAX_BODY_BYTES, DialError, parse_dial, webhook_query
from ..upstreams import BACKENDS
from .console import operator_only
from .context import GATEWAY, Gateway
from .twilio_rest import Dial, TwilioError
from .webhook import CALL_OVER, twilio_form

log = logging.getLogger("callbridge.gateway")

WEBHOOK_PATH = "/voice/inbound"
AMD_PATH = "/voice/amd"
STATUS_PATH = "/voice/status"
DIALING_S = 120.0
"""A placed call whose webhook never came stops counting against ``MAX_CALLS`` after this."""
AMD_WAIT_S = 3.0
BUSY_RETRY_S = 5
CALL_STATUSES = frozenset({"queued", "initiated", "ringing", "in-progress", *CALL_OVER})


def _error(status: int, message: str, retry_after: float | None = None) -> web.Response:
    headers = {"Retry-After": str(max(1, math.ceil(retry_after)))} if retry_after is not None else None
    return web.json_response({"error": message}, status=status, headers=headers)


def _forget_stale(gw: Gateway, now: float) -> None:
    while gw.dialing and next(iter(gw.dialing.values())) < now - DIALING_S:
        gw.dialing.popitem(last=False)


@operator_only
async def place_call(request: web.Request) -> web.Response:
    """``POST /calls``: place an outbound call (this module's docstring)."""
    gw = request.app[GATEWAY]
    settings = gw.settings
    if request.content_type != "application/json":
        return _error(415, "expected Content-Type: application/json")
    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        return _error(413, f"body larger than {MAX_BODY_BYTES} bytes")
    raw = await request.read()  # bounded: the app's client_max_size (64 KB), then parse_dial's 8 KB
    try:
        dial = parse_dial(raw, settings.twilio.number, tuple(BACKENDS))
    except DialError as exc:
        return _error(400, str(exc))
    problem = BACKENDS[dial.agent].problem(settings) if dial.agent else ""
    if problem:
        return _error(400, f"agent {dial.agent}: {problem}")
    if gw.twilio is None:
        return _error(503, "outbound calls need TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN")
    if not gw.accepting:
        return _error(503, "draining: no new calls", BUSY_RETRY_S)
    now = time.monotonic()
    _forget_stale(gw, now)
    limit = settings.limits.max_calls
    if 0 < limit <= len(gw.registry.live) + len(gw.dialing):
        gw.metrics.outbound.labels("refused_busy").inc()
        log.warning("outbound call to %s refused: MAX_CALLS (%d) reached", dial.to, limit)
        return _error(503, f"busy: {limit} calls (MAX_CALLS) live or being placed", BUSY_RETRY_S)
    if gw.dial_rate is not None and not gw.dial_rate.take(now):
        gw.metrics.outbound.labels("refused_rate").inc()
        return _error(429, "too many outbound calls (DIAL_RATE)", gw.dial_rate.retry_after())
    base = gw.public_base(request)
    detection = settings.outbound.machine_detection
    try:
        sid, status = await gw.twilio.create_call(
            Dial(
                to=dial.to,
                from_=dial.from_,
                url=base + WEBHOOK_PATH + webhook_query(dial),
                status_callback=base + STATUS_PATH,
                amd_callback=base + AMD_PATH,
                machine_detection="" if detection == "off" else detection,
            )
        )
    except TwilioError as exc:
        gw.metrics.outbound.labels("twilio_error").inc()
        log.warning("outbound call to %s failed: %s", dial.to, exc)
        return _error(502, str(exc))
    gw.metrics.outbound.labels("placed").inc()
    gw.dialing[sid] = now
    log.info("outbound call %s to %s placed (%s)", sid, dial.to, status)
    return web.json_response(
        {"callSid": sid, "status": status, "to": dial.to, "from": dial.from_}, status=201
    )


async def amd_callback(request: web.Request) -> web.Response:
    """``POST /voice/amd``: Twilio's verdict on who answered (this module's docstring)."""
    gw = request.app[GATEWAY]
    params = await twilio_form(request, "AMD callback")
    call_sid, who = params["CallSid"], params.get("AnsweredBy", "")  # checked by twilio_form
    if who not in ANSWERED_BY:
        raise web.HTTPBadRequest(text=f"AnsweredBy must be one of {', '.join(ANSWERED_BY)}\n")
    duration = params.get("MachineDetectionDuration", "")
    detection_ms = int(duration) if duration.isdigit() and len(duration) < 8 else None
    gw.metrics.answered_by.labels(who).inc()
    deadline = time.monotonic() + AMD_WAIT_S
    registry = gw.registry
    while call_sid not in registry.live and call_sid not in registry.ended and time.monotonic() < deadline:  # noqa: ASYNC110 - the stream starts on another request
        await asyncio.sleep(0.05)
    call = registry.live.get(call_sid)
    ended = call_sid in registry.ended
    data = {"answered_by": who, "detection_ms": detection_ms}
    if call is not None:
        call.note("call.answered_by", **data)
        call.answered_by(who)
    else:
        gw.registry.note(call_sid, "call.answered_by", **data)
        if gw.events is not None:
            gw.events.publish("call.answered_by", call_sid, data)
        stored = None if ended else await gw.store.lookup(call_sid)
        elsewhere = stored is not None and stored.state != "ended"
        if elsewhere:  # production mode: another shard carries the stream
            log.warning(
                "call %s: AMD verdict %s not applied: its stream is on another process", call_sid, who
            )
        elif not ended and (who.startswith("machine") or who == "fax"):
            gw.complete_call(call_sid)  # no stream to leave a message on
    log.info("call %s: answered by %s%s", call_sid, who, "" if call is not None else " (no live stream)")
    return web.Response(text="")


async def status_callback(request: web.Request) -> web.Response:
    """``POST /voice/status``: an outbound call's progress (this module's docstring)."""
    gw = request.app[GATEWAY]
    params = await twilio_form(request, "status callback")
    call_sid, status = params["CallSid"], params.get("CallStatus", "")  # checked by twilio_form
    if status not in CALL_STATUSES:
        raise web.HTTPBadRequest(text=f"unknown CallStatus {status[:40]!r}\n")
    if status in CALL_OVER:
        gw.dialing.pop(call_sid, None)
    gw.registry.note(call_sid, "twilio.status", status=status)
    return web.Response(text="")


def add_dial_routes(app: web.Application) -> None:
    app.add_routes(
        [
            web.post("/calls", place_call),
            web.post(AMD_PATH, amd_callback),
            web.post(STATUS_PATH, status_callback),
        ]
    )
