"""``POST /voice/inbound``: Twilio's voice webhook.

Checks ``X-Twilio-Signature`` over the public URL and the form, then answers at once
with ``<Connect><Stream>`` TwiML carrying a stream token (no back-end work before the
answer). ``?upstream=NAME`` (one of ``UPSTREAM``'s values, covered by the signature)
chooses the call's back end: it travels as the stream parameter ``upstream``. Limits: body at most ``MAX_WEBHOOK_BYTES`` (413 past it); a missing or invalid
CallSid or an unknown ``upstream`` is a 400; a bad or missing signature a 403, each with one log line.
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
    response = VoiceResponse()
    connect = Connect()
    stream = connect.stream(url=stream_url(base))
    stream.parameter(name="token", value=gw.tokens.issue(call_sid, time.time()))
    if upstream is not None:
        stream.parameter(name="upstream", value=upstream)
    response.append(connect)
    log.info("call %s: webhook answered from %s", call_sid, params.get("From", "?"))
    return web.Response(text=str(response), content_type="text/xml")
