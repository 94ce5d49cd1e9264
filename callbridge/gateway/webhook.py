"""``POST /voice/inbound``: Twilio's voice webhook.

Checks ``X-Twilio-Signature`` over the public URL and the form, then answers at once
with ``<Connect><Stream>`` TwiML carrying a stream token (no back-end work before the
answer). ``?upstream=NAME`` (one of ``UPSTREAM``'s values, covered by the signature)
chooses the call's back end: it travels as the stream parameter ``upstream``. After the
``<Connect>`` comes a ``<Redirect>`` back here: if the stream drops without a hang-up,
Twilio returns and the call resumes from the store (at most ``MAX_RESUMES`` times, then
an apology and ``<Hangup/>``); a call that ended on purpose gets ``<Hangup/>``. Limits:
body at most ``MAX_WEBHOOK_BYTES`` (413 past it); a missing or invalid CallSid or an
unknown ``upstream`` is a 400; a bad or missing signature a 403, each with one log line.
"""

from __future__ import annotations

import logging
import time

from aiohttp import web
from twilio.twiml.voice_response import Connect, VoiceResponse

from ..codecs.mediastreams import SID_RE
from ..config import UPSTREAMS
from .context import GATEWAY
from .security import stream_url

log = logging.getLogger("callbridge.gateway")

MAX_WEBHOOK_BYTES = 64 * 1024
MAX_RESUMES = 5
"""A call whose stream dropped this many times is ended with an apology, not resumed."""


async def voice_inbound(request: web.Request) -> web.Response:
    gw = request.app[GATEWAY]
    if request.content_length is not None and request.content_length > MAX_WEBHOOK_BYTES:
        log.warning("webhook from %s refused: body of %d bytes", request.remote, request.content_length)
        raise web.HTTPRequestEntityTooLarge(MAX_WEBHOOK_BYTES, request.content_length)
    form = await request.post()
    params = {k: v for k, v in form.items() if isinstance(v, str)}
    base = gw.public_base(request)
    if not gw.signatures.valid(base + request.path_qs, params, request.headers.get("X-Twilio-Signature")):
        log.warning(
            "webhook from %s refused: bad or missing X-Twilio-Signature for %s",
            request.remote, base + request.path_qs,
        )
        raise web.HTTPForbidden(text="invalid signature\n")
    call_sid = params.get("CallSid", "")
    if not SID_RE.match(call_sid):
        log.warning("webhook from %s refused: missing or invalid CallSid", request.remote)
        raise web.HTTPBadRequest(text="missing or invalid CallSid\n")
    upstream = request.query.get("upstream")
    if upstream is not None and upstream not in UPSTREAMS:
        log.warning("webhook from %s refused: unknown upstream %r", request.remote, upstream[:40])
        raise web.HTTPBadRequest(text=f"upstream must be one of {', '.join(UPSTREAMS)}\n")
    stored = await gw.store.lookup(call_sid)
    response = VoiceResponse()
    if stored is not None and stored.state == "ended":
        # Twilio followed our <Redirect> after a call we ended on purpose: hang up.
        response.hangup()
        log.info("call %s: redirect after the call ended: <Hangup/>", call_sid)
        return web.Response(text=str(response), content_type="text/xml")
    resume = stored is not None
    if resume and int(stored.data.get("resumes", 0)) >= MAX_RESUMES:  # type: ignore[union-attr]
        # The call keeps losing its stream (a crash it triggers?): stop the loop.
        response.say("Sorry, we are having technical trouble. Please call again later.")
        response.hangup()
        await gw.store.finish(call_sid, stored.data.get("view") or {}, resumable=False)  # type: ignore[union-attr]
        log.error("call %s: dropped %d times; hanging up", call_sid, MAX_RESUMES + 1)
        return web.Response(text=str(response), content_type="text/xml")
    if not resume and not gw.accepting:
        response.say("Sorry, we can't take your call right now. Please try again shortly.")
        response.hangup()
        log.warning("call %s: turned away: draining", call_sid)
        return web.Response(text=str(response), content_type="text/xml")
    connect = Connect()
    stream = connect.stream(url=stream_url(base))
    stream.parameter(name="token", value=gw.tokens.issue(call_sid, time.time()))
    if resume:
        stream.parameter(name="resume", value="1")
    if upstream is not None:
        stream.parameter(name="upstream", value=upstream)
    response.append(connect)
    # When the stream ends without a hang-up (the process carrying it died), Twilio runs
    # the next verb: back here, and the call resumes on a live process.
    response.redirect(base + request.path_qs, method="POST")
    log.info("call %s: webhook answered from %s%s", call_sid, params.get("From", "?"), " (resume)" if resume else "")
    return web.Response(text=str(response), content_type="text/xml")
