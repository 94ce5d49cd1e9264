"""A local fake of Twilio's REST API (loopback only), as strict as Twilio documents: the
tests' and benchmarks' stand-in for ``api.twilio.com``."""

from __future__ import annotations

import base64
import re
import secrets
from collections.abc import Callable
from typing import ClassVar

from aiohttp import web

ACCOUNT = "AC" + "0" * 32  # the simulator's AccountSid
TOKEN = "twilio-token"


Route = Callable[..., web.Response]


class FakeTwilioApi:
    """Twilio's REST API for the requests the bridge makes, as strict as Twilio documents:
    HTTP Basic auth with the AccountSid and AuthToken, for the account in the path (else
    401, code 20003); form bodies (``application/x-www-form-urlencoded``); a call or number
    it does not know: 404 (code 20404); ``Status`` only ``completed`` or ``canceled``,
    ``VoiceMethod`` only GET or POST, ``VoiceUrl`` absolute http(s) (else 400). Lists are
    paged as Twilio pages them. ``calls``: CallSid -> status; ``numbers``: E.164 -> Sid."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, dict[str, str], str]] = []
        self.fail_with: int | None = None
        self.calls: dict[str, str] = {}
        self.numbers: dict[str, str] = {"+15550001111": "PN" + "a" * 32}
        self.voice_urls: dict[str, str] = {}
        self.agents: set[str] = set()
        self.recordings: dict[str, tuple[str, dict[str, str]]] = {}

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/2010-04-01/Accounts/{account}/{rest:.*}", self.handle)
        return app

    @staticmethod
    def _error(status: int, message: str, code: int | None = None) -> web.Response:
        body = {
            "code": code,
            "message": message,
            "more_info": f"https://www.twilio.com/docs/errors/{code}",
            "status": status,
        }
        return web.json_response(body, status=status)

    async def handle(self, request: web.Request) -> web.Response:
        auth = ""
        header = request.headers.get("Authorization", "")
        if header.startswith("Basic "):
            auth = base64.b64decode(header[6:]).decode(errors="replace")
        form: dict[str, str] = {}
        if request.method == "POST":
            if request.content_type != "application/x-www-form-urlencoded":
                return self._error(400, "expected a form body", None)
            form = {k: str(v) for k, v in (await request.post()).items()}
        self.requests.append((request.method, request.path, {**form, **request.query}, auth))
        self.agents.add(request.headers.get("User-Agent", "").split(" ")[0].split("/")[0])
        account = request.match_info["account"]
        if auth != f"{ACCOUNT}:{TOKEN}" or account != ACCOUNT:
            return self._error(401, "Authenticate", 20003)
        if self.fail_with:
            return self._error(self.fail_with, "boom", None)
        rest = request.match_info["rest"]
        for method, pattern, handler in self.ROUTES:
            found = pattern.fullmatch(rest)
            if found and request.method == method:
                return handler(self, request, form, *found.groups())
        return self._error(404, f"The requested resource {request.path} was not found", 20404)

    def _numbers(self, request: web.Request, form: dict[str, str]) -> web.Response:
        wanted = request.query.get("PhoneNumber")
        found = [
            {"sid": sid, "phone_number": number, "voice_url": self.voice_urls.get(sid)}
            for number, sid in self.numbers.items()
            if wanted in (None, number)
        ]
        size = int(request.query.get("PageSize", "50"))
        return web.json_response(
            {
                "incoming_phone_numbers": found[:size],
                "end": max(0, min(size, len(found)) - 1),
                "first_page_uri": request.path_qs,
                "next_page_uri": None,
                "page": 0,
                "page_size": size,
                "previous_page_uri": None,
                "start": 0,
                "uri": request.path_qs,
            }
        )

    def _point(self, request: web.Request, form: dict[str, str], sid: str) -> web.Response:
        if sid not in self.numbers.values():
            return self._error(404, f"The requested resource {request.path} was not found", 20404)
        if form.get("VoiceMethod", "POST") not in ("GET", "POST"):
            return self._error(400, "VoiceMethod must be GET or POST", None)
        if "VoiceUrl" in form and not form["VoiceUrl"].startswith(("http://", "https://")):
            return self._error(400, f"VoiceUrl is not a valid URL: {form['VoiceUrl'][:80]}", None)
        self.voice_urls[sid] = form.get("VoiceUrl", self.voice_urls.get(sid, ""))
        return web.json_response({"sid": sid, "voice_url": self.voice_urls[sid]})

    def _update_call(self, request: web.Request, form: dict[str, str], sid: str) -> web.Response:
        if sid not in self.calls:
            return self._error(404, f"The requested resource {request.path} was not found", 20404)
        status = form.get("Status")
        if status is not None and status not in ("completed", "canceled"):
            return self._error(400, f"Status must be completed or canceled, not {status[:40]!r}", None)
        if status == "completed" or (status == "canceled" and self.calls[sid] in ("queued", "ringing")):
            self.calls[sid] = status
        return web.json_response({"sid": sid, "account_sid": ACCOUNT, "status": self.calls[sid]})

    RECORDING_VALUES: ClassVar[dict[str, tuple[str, ...]]] = {
        "RecordingChannels": ("mono", "dual"),
        "RecordingTrack": ("inbound", "outbound", "both"),
        "Trim": ("trim-silence", "do-not-trim"),
        "RecordingStatusCallbackMethod": ("GET", "POST"),
    }
    """Start a call recording: each parameter's documented values."""
    RECORDING_EVENTS: ClassVar[frozenset[str]] = frozenset({"in-progress", "completed", "absent"})

    def _start_recording(self, request: web.Request, form: dict[str, str], sid: str) -> web.Response:
        """``POST Calls/{CallSid}/Recordings.json``: a recording of a live call. Unknown call
        404 (20404); a call not ``in-progress``: 400 (21220, invalid call state); a value
        outside the documented ones, a relative or non-http(s) ``RecordingStatusCallback``,
        an unknown word in ``RecordingStatusCallbackEvent`` (space-separated): 400. Answers
        201 with the new Recording (``source`` StartCallRecordingAPI); ``recordings`` keeps
        RecordingSid -> (CallSid, form)."""
        if sid not in self.calls:
            return self._error(404, f"The requested resource {request.path} was not found", 20404)
        if self.calls[sid] != "in-progress":
            return self._error(400, "Invalid call state: the call is not in progress", 21220)
        for name, allowed in self.RECORDING_VALUES.items():
            if name in form and form[name] not in allowed:
                return self._error(400, f"{name} must be one of {', '.join(allowed)}", None)
        callback = form.get("RecordingStatusCallback")
        if callback is not None and not callback.startswith(("http://", "https://")):
            return self._error(400, f"RecordingStatusCallback is not a valid URL: {callback[:80]}", None)
        events = form.get("RecordingStatusCallbackEvent", "completed").split(" ")
        if not events or not set(events) <= self.RECORDING_EVENTS:
            return self._error(400, "RecordingStatusCallbackEvent: in-progress, completed or absent", None)
        rsid = "RE" + secrets.token_hex(16)
        self.recordings[rsid] = (sid, form)
        dual = form.get("RecordingChannels", "mono") == "dual"
        return web.json_response(
            {
                "sid": rsid,
                "account_sid": ACCOUNT,
                "call_sid": sid,
                "status": "in-progress",
                "channels": 2 if dual else 1,
                "source": "StartCallRecordingAPI",
                "track": form.get("RecordingTrack", "both"),
                "duration": None,
                "uri": f"/2010-04-01/Accounts/{ACCOUNT}/Calls/{sid}/Recordings/{rsid}.json",
            },
            status=201,
        )

    def recording_completed(self, rsid: str, seconds: int) -> tuple[str, dict[str, str]]:
        """The ``RecordingStatusCallback`` Twilio would POST once recording ``rsid`` is
        complete: (URL, form)."""
        call_sid, form = self.recordings[rsid]
        return form["RecordingStatusCallback"], {
            "AccountSid": ACCOUNT,
            "CallSid": call_sid,
            "RecordingSid": rsid,
            "RecordingUrl": f"https://api.twilio.com/2010-04-01/Accounts/{ACCOUNT}/Recordings/{rsid}",
            "RecordingStatus": "completed",
            "RecordingDuration": str(seconds),
            "RecordingChannels": "2" if form.get("RecordingChannels") == "dual" else "1",
            "RecordingSource": "StartCallRecordingAPI",
            "RecordingTrack": form.get("RecordingTrack", "both"),
            "RecordingStartTime": "Wed, 02 Dec 2026 03:00:00 +0000",
        }

    ROUTES: ClassVar[list[tuple[str, re.Pattern[str], Route]]] = [
        ("POST", re.compile(r"Calls/(\w+)/Recordings\.json"), _start_recording),
        ("GET", re.compile(r"IncomingPhoneNumbers\.json"), _numbers),
        ("POST", re.compile(r"IncomingPhoneNumbers/(\w+)\.json"), _point),
        ("POST", re.compile(r"Calls/(\w+)\.json"), _update_call),
    ]
    """(method, path after the account, handler(self, request, form, *groups)): one line per endpoint."""
