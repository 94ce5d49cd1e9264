"""``POST /voice/inbound``: Twilio's voice webhook.

Checks ``X-Twilio-Signature`` over the public URL and the form, then answers at once
with ``<Connect><Stream>`` TwiML carrying a stream token (no back-end work before the
answer). ``?upstream=NAME`` (one of ``UPSTREAM``'s values, covered by the signature)
chooses the call's back end: it travels as the stream parameter ``upstream``. The
``<Connect>`` carries ``action`` = this route: Twilio requests it (signed, with the call's
standard parameters) when the stream ends, and runs what it answers. A stream that ended
without a hang-up resumes from the store (at most ``MAX_RESUMES`` times, then an apology
and ``<Hangup/>``); a call that ended on purpose, or that Twilio's ``CallStatus`` reports
over, gets ``<Hangup/>``.

Limits, each refusal with one log line: ``WEBHOOK_RATE`` requests per second per source
(``WEBHOOK_BURST`` at once; 429 with ``Retry-After``, checked before anything else);
body at most ``MAX_WEBHOOK_BYTES`` (413); a form (``application/x-www-form-urlencoded``,
as Twilio sends) or 415, that decodes or 400; a bad or missing signature 403; a missing
or invalid CallSid, or an unknown ``upstream``, 400. Past ``MAX_CALLS`` live calls, while the
speech workers are behind (``Gateway.busy_reason``), or
while draining, a new call hears a short "busy" message and ``<Hangup/>`` (never a hang);
a resume is always taken.

The ``action`` URL carries ``attempt=N`` (and the call's ``upstream``): a call whose
stream never started (refused at the handshake or at ``start``) comes back with a higher
N each time, and from ``MAX_ATTEMPTS`` on it gets "busy" and ``<Hangup/>`` rather than
another stream: a refusal can never loop.

A resume waits (at most ``RESUME_WAIT_S``) while the call's old stream still holds its
claim in the store, so that a stream whose process died unnoticed is not refused.

An outbound call (``Direction=outbound-api``, placed by ``POST /calls``: ``gateway/dial.py``)
gets the stream parameters ``direction=outbound`` and, from the URL's signed query, its
``greeting`` and ``metadata`` (``callbridge/outbound.py``). ``twilio_form`` (the checks
above, up to the signature) serves the status and AMD callbacks too.

Replay: Twilio's voice webhook carries no timestamp (its signature covers URL and form
only), so a captured request could be replayed; what it yields is a stream token for a
call that must then start a stream with a valid handshake signature, and each token
starts at most one stream (``CallStore.claim_token``). TLS keeps requests from being
captured at all (``SECURITY.md``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from urllib.parse import urlencode

from aiohttp import web
from twilio.twiml.voice_response import Connect, VoiceResponse

from ..actions import E164
from ..codecs.mediastreams import SID_RE
from ..outbound import DialError, stream_parameters
from ..upstreams import BACKENDS
from .context import GATEWAY
from .security import SIGNATURE_SETTINGS, stream_url

log = logging.getLogger("callbridge.gateway")

MAX_WEBHOOK_BYTES = 64 * 1024
MAX_RESUMES = 5
"""A call whose stream dropped this many times is ended with an apology, not resumed."""

MAX_ATTEMPTS = 3
CALL_OVER = frozenset({"completed", "busy", "failed", "no-answer", "canceled"})
"""Twilio's final ``CallStatus`` values: such a request gets ``<Hangup/>``, never a stream."""
RESUME_WAIT_S = 4.0
"""How long a resume's webhook waits while the call's old stream still holds its claim
(``CallStore.streaming``): the process that carried it may have died unnoticed yet
(production mode's pool releases a silent shard's claims after ``prod.pool.DEAD_AFTER_S``).
Waiting here, before Twilio opens the stream, keeps the resume from being refused and
looping through redirects; a stream that is really live keeps its claim, and the new
one is then refused at ``start``."""
CLAIM_POLL_S = 0.25
FORM = "application/x-www-form-urlencoded"
BUSY = "Sorry, all our lines are busy right now. Please try again shortly."
DRAINING = "Sorry, we can't take your call right now. Please try again shortly."
TROUBLE = "Sorry, we are having technical trouble. Please call again later."


def _say_and_hang_up(text: str) -> web.Response:
    response = VoiceResponse()
    response.say(text)
    response.hangup()
    return web.Response(text=str(response), content_type="text/xml")


def line_of(params: dict[str, str]) -> str:
    """The account's number on this call (``To`` of an inbound call, ``From`` of one the
    bridge placed), or "": what a warm transfer calls the human from."""
    number = params.get("From" if params.get("Direction", "").startswith("outbound") else "To", "")
    return number if E164.match(number) else ""


def _attempt(text: str) -> int:
    return min(int(text), 1000) if text.isascii() and text.isdigit() and len(text) < 6 else 0


async def twilio_form(request: web.Request, what: str = "webhook") -> dict[str, str]:
    """The form of a request from Twilio (the voice webhook, its status, AMD and transfer
    callbacks), checked as this module's docstring says: rate per source (429), size
    (413), form (415/400), ``X-Twilio-Signature`` over the public URL (403), a valid
    ``CallSid`` (400). Records the public base it came to (``Gateway.webhook_base``)."""
    gw = request.app[GATEWAY]
    source = gw.source(request)
    if not gw.webhook_rates.allow(source, time.monotonic()):
        retry = max(1, round(gw.webhook_rates.retry_after(source)))
        if gw.webhook_rates.refused % 100 == 1:  # one line per 100 refusals: a flood must not flood the log
            log.warning(
                "%s from %s refused: over %g requests/s (%d refused so far)",
                what,
                source,
                gw.settings.limits.webhook_rate,
                gw.webhook_rates.refused,
            )
        raise web.HTTPTooManyRequests(text="too many requests\n", headers={"Retry-After": str(retry)})
    if request.content_length is not None and request.content_length > MAX_WEBHOOK_BYTES:
        log.warning("%s from %s refused: body of %d bytes", what, request.remote, request.content_length)
        raise web.HTTPRequestEntityTooLarge(MAX_WEBHOOK_BYTES, request.content_length)
    if request.content_type != FORM:
        log.warning("%s from %s refused: content type %r", what, source, request.content_type[:60])
        raise web.HTTPUnsupportedMediaType(text=f"expected {FORM}\n")
    try:
        form = await request.post()
    except ValueError as exc:  # undecodable bytes, a broken encoding
        log.warning("%s from %s refused: malformed form: %s", what, source, str(exc)[:120])
        raise web.HTTPBadRequest(text="malformed form\n") from None
    params = {k: v for k, v in form.items() if isinstance(v, str)}
    base = gw.public_base(request)
    # The URL as Twilio requested it (raw: yarl's path_qs re-encodes a query's "%2C" as ",",
    # and Twilio signed the bytes it was given).
    why = gw.signatures.refusal(
        base + request.raw_path,
        params,
        request.headers.get("X-Twilio-Signature"),
        request.headers.get(SIGNATURE_SETTINGS),
    )
    if why is not None:
        log.warning(
            "%s from %s refused: %s for %s", what, request.remote, why, (base + request.raw_path)[:300]
        )
        raise web.HTTPForbidden(text="invalid signature\n")
    if not SID_RE.match(params.get("CallSid", "")):
        log.warning("%s from %s refused: missing or invalid CallSid", what, request.remote)
        raise web.HTTPBadRequest(text="missing or invalid CallSid\n")
    gw.webhook_base = base
    return params


async def voice_inbound(request: web.Request) -> web.Response:
    gw = request.app[GATEWAY]
    params = await twilio_form(request)
    call_sid = params["CallSid"]
    base = gw.public_base(request)
    upstream = request.query.get("upstream")
    if upstream is not None and upstream not in BACKENDS:
        log.warning("webhook from %s refused: unknown upstream %r", request.remote, upstream[:40])
        raise web.HTTPBadRequest(text=f"upstream must be one of {', '.join(BACKENDS)}\n")
    outbound: dict[str, str] = {}
    if params.get("Direction") == "outbound-api":  # placed by POST /calls (its query is signed)
        gw.dialing.pop(call_sid, None)
        try:
            outbound = stream_parameters(dict(request.query))
        except DialError as exc:
            log.warning("webhook from %s refused: %s", request.remote, exc)
            raise web.HTTPBadRequest(text=f"{exc}\n") from None
    stored = await gw.store.lookup(call_sid)
    response = VoiceResponse()
    over = params.get("CallStatus") in CALL_OVER
    if over or (stored is not None and stored.state == "ended"):
        # The <Connect> action after a call we ended on purpose, or for a call Twilio
        # reports over (the caller hung up): no stream, and nothing left to resume.
        if over and stored is not None and stored.state != "ended":
            await gw.store.finish(call_sid, stored.data.get("view") or {}, resumable=False)
        response.hangup()
        log.info("call %s: <Connect> action after the call ended: <Hangup/>", call_sid)
        return web.Response(text=str(response), content_type="text/xml")
    resume = stored is not None
    if resume:  # a live call: its old stream must be gone first
        deadline = time.monotonic() + RESUME_WAIT_S
        # None (the store did not answer): no wait.
        while await gw.store.streaming(call_sid) and time.monotonic() < deadline:  # noqa: ASYNC110 - polled: the stream may end in another process
            await asyncio.sleep(CLAIM_POLL_S)
    if stored is not None and int(stored.data.get("resumes", 0)) >= MAX_RESUMES:
        # The call keeps losing its stream (a crash it triggers?): stop the loop.
        await gw.store.finish(call_sid, stored.data.get("view") or {}, resumable=False)
        log.error("call %s: dropped %d times; hanging up", call_sid, MAX_RESUMES + 1)
        return _say_and_hang_up(TROUBLE)
    attempt = _attempt(request.query.get("attempt", "0"))
    if not resume:
        if not gw.accepting:
            log.warning("call %s: turned away: draining", call_sid)
            return _say_and_hang_up(DRAINING)
        busy = gw.busy_reason()
        if busy is not None:
            log.warning("call %s: turned away: busy (%s)", call_sid, busy)
            return _say_and_hang_up(BUSY)
        if attempt >= MAX_ATTEMPTS:
            log.warning("call %s: turned away: its stream failed to start %d times", call_sid, attempt)
            return _say_and_hang_up(BUSY)
    # When the stream ends (we closed it, or the process carrying it died), Twilio requests
    # the action and runs its answer: back here, and the call resumes on a live process.
    query = {"attempt": str(attempt + 1), **({"upstream": upstream} if upstream is not None else {})}
    connect = Connect(action=f"{base}{request.path}?{urlencode(query)}", method="POST")
    stream = connect.stream(url=stream_url(base))
    stream.parameter(name="token", value=gw.tokens.issue(call_sid, time.time()))
    if resume:
        stream.parameter(name="resume", value="1")
    if upstream is not None:
        stream.parameter(name="upstream", value=upstream)
    line = line_of(params)
    if line:
        stream.parameter(name="line", value=line)
    for name, value in outbound.items():
        stream.parameter(name=name, value=value)
    response.append(connect)
    log.info(
        "call %s: webhook answered from %s%s",
        call_sid,
        params.get("From", "?"),
        " (resume)" if resume else "",
    )
    return web.Response(text=str(response), content_type="text/xml")


async def voice_transfer(request: web.Request) -> web.Response:
    """``POST /voice/transfer?caller=CA...&leg=dial|human``: Twilio's requests about a
    transfer (``gateway/telephony.py``), checked like the voice webhook (the query is signed
    with the URL). ``leg=dial``: a cold transfer's ``<Dial action>`` (``DialCallStatus``),
    answered with the TwiML that follows; ``leg=human``: the status callback of a warm
    transfer's call to the human (``CallStatus``), answered with an empty document. An
    unknown caller or leg: 400; a warm transfer no longer waiting: 200, ignored."""
    gw = request.app[GATEWAY]
    params = await twilio_form(request, "transfer callback")
    caller, leg = request.query.get("caller", ""), request.query.get("leg", "")
    if not SID_RE.match(caller) or leg not in ("dial", "human"):
        raise web.HTTPBadRequest(text="caller must be a CallSid and leg dial or human\n")
    if leg == "dial":
        status = params.get("DialCallStatus", "")[:40]
        log.info("call %s: transfer: dial %s", caller, status or "?")
        return web.Response(text=await gw.telephony.dial_ended(caller, status), content_type="text/xml")
    status = params.get("CallStatus", "")[:40]
    known = gw.telephony.human_status(caller, params["CallSid"], status)
    log.info("call %s: warm transfer: %s%s", caller, status or "?", "" if known else " (not waiting)")
    return web.Response(text=str(VoiceResponse()), content_type="text/xml")
