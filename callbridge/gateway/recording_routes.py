"""Recording routes: the operator's download, and Twilio's recording status callback.

- ``GET /calls/{callSid}/recording[?part=N]`` (operator access, ``gateway/access.py``):
  ``RECORDING=local``'s WAV of the call (``audio/wav``; ``part`` 2.. for the streams of a
  call that resumed). 404 for a CallSid that could form a path, one with no recording, or
  with ``RECORDING`` not ``local``; 400 for a bad ``part``.
- ``POST /twilio/recording-status`` (``RECORDING=twilio``): Twilio's
  ``RecordingStatusCallback``, checked like the voice webhook (``X-Twilio-Signature`` over
  the public URL and the form: 403; ``WEBHOOK_RATE``: 429; at most ``MAX_CALLBACK_BYTES``:
  413; a form or 415). ``completed`` gives ``recording.ready`` with Twilio's
  ``RecordingUrl``; ``absent`` or ``failed``, ``recording.error``. Answers 204.
"""

from __future__ import annotations

import logging
import time

from aiohttp import web

from ..codecs.mediastreams import SID_RE
from .console import operator_only
from .context import GATEWAY, RECORDING_CALLBACK_PATH
from .recordings import MAX_PARTS
from .security import SIGNATURE_SETTINGS

log = logging.getLogger("callbridge.gateway")

MAX_CALLBACK_BYTES = 16 * 1024
FORM = "application/x-www-form-urlencoded"


@operator_only
async def get_recording(request: web.Request) -> web.StreamResponse:
    gw = request.app[GATEWAY]
    call_sid = request.match_info["call_sid"]
    raw_part = request.query.get("part", "1")
    if not (raw_part.isascii() and raw_part.isdigit() and 1 <= int(raw_part) <= MAX_PARTS):
        raise web.HTTPBadRequest(text=f"part must be 1..{MAX_PARTS}\n")
    if gw.recordings is None:
        raise web.HTTPNotFound(
            text=f"recordings are not kept here (RECORDING={gw.settings.recordings.mode})\n"
        )
    path = gw.recordings.path_of(call_sid, int(raw_part))
    if path is None:
        raise web.HTTPNotFound(text="no recording of this call\n")
    return web.FileResponse(
        path,
        headers={
            "Content-Type": "audio/wav",
            "Content-Disposition": f'attachment; filename="{path.name}"',
            "Cache-Control": "no-store",
        },
    )


async def recording_status(request: web.Request) -> web.Response:
    gw = request.app[GATEWAY]
    source = gw.source(request)
    if not gw.webhook_rates.allow(source, time.monotonic()):
        raise web.HTTPTooManyRequests(
            text="too many requests\n",
            headers={"Retry-After": str(max(1, round(gw.webhook_rates.retry_after(source))))},
        )
    if request.content_length is not None and request.content_length > MAX_CALLBACK_BYTES:
        raise web.HTTPRequestEntityTooLarge(MAX_CALLBACK_BYTES, request.content_length)
    if request.content_type != FORM:
        raise web.HTTPUnsupportedMediaType(text=f"expected {FORM}\n")
    try:
        body = await request.read()
        if len(body) > MAX_CALLBACK_BYTES:
            raise web.HTTPRequestEntityTooLarge(MAX_CALLBACK_BYTES, len(body))
        form = await request.post()
    except ValueError:
        raise web.HTTPBadRequest(text="malformed form\n") from None
    params = {k: v for k, v in form.items() if isinstance(v, str)}
    url = gw.public_base(request) + request.path_qs
    why = gw.signatures.refusal(
        url, params, request.headers.get("X-Twilio-Signature"), request.headers.get(SIGNATURE_SETTINGS)
    )
    if why is not None:
        log.warning("recording callback from %s refused: %s for %s", request.remote, why, url[:300])
        raise web.HTTPForbidden(text="invalid signature\n")
    call_sid = params.get("CallSid", "")
    if not SID_RE.match(call_sid):
        raise web.HTTPBadRequest(text="missing or invalid CallSid\n")
    status = params.get("RecordingStatus", "")
    if status == "completed":
        try:
            seconds: float | None = float(params.get("RecordingDuration", ""))
        except ValueError:
            seconds = None
        gw.recording_ready(
            call_sid,
            "twilio",
            {
                "url": params.get("RecordingUrl", "")[:500],
                "recordingSid": params.get("RecordingSid", "")[:64],
                "seconds": seconds,
                "bytes": None,
                "channels": params.get("RecordingChannels", "")[:4],
            },
        )
    elif status in ("absent", "failed"):
        gw.registry.note(
            call_sid,
            "recording.error",
            mode="twilio",
            status=status,
            error=params.get("ErrorCode", "")[:20],
            recordingSid=params.get("RecordingSid", "")[:64],
        )
    return web.Response(status=204)


def add_recording_routes(app: web.Application) -> None:
    app.add_routes(
        [
            web.get("/calls/{call_sid}/recording", get_recording),
            web.post(RECORDING_CALLBACK_PATH, recording_status),
        ]
    )
