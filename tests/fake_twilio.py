"""A local fake of Twilio's REST API (loopback only), as strict as Twilio documents: the
tests' and benchmarks' stand-in for ``api.twilio.com``."""

from __future__ import annotations

import asyncio
import base64
import re
import secrets
from collections.abc import Callable
from typing import ClassVar

from aiohttp import web
from multidict import MultiDictProxy

from callbridge.actions import E164
from callbridge.sim.callee import Callee, OutboundResult, play_outbound

ACCOUNT = "AC" + "0" * 32  # the simulator's AccountSid
TOKEN = "twilio-token"


Route = Callable[..., web.Response]
POSTED = web.RequestKey("posted", MultiDictProxy)
"""A request's form as posted, repeated fields and all."""


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
        self.callee: Callee | None = None
        """Who picks up the calls created (``Calls.json``); None: they stay queued."""
        self.created: dict[str, dict[str, str]] = {}
        """CallSid -> the form it was created with (``StatusCallbackEvent``: the values, space-separated)."""
        self.played: dict[str, asyncio.Task[OutboundResult]] = {}
        """CallSid -> the simulator playing it (``callbridge.sim.callee``)."""

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
            posted = request[POSTED] = await request.post()  # repeated fields: request[POSTED].getall
            form = {k: str(v) for k, v in posted.items()}
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

    CALL_EVENTS = ("initiated", "ringing", "answered", "completed")
    MACHINE_DETECTION = ("Enable", "DetectMessageEnd")

    def _create_call(self, request: web.Request, form: dict[str, str]) -> web.Response:
        """``POST Calls.json``, as strict as Twilio: ``To`` and ``From`` required (21201,
        21213) and E.164 (21211, 21212), ``From`` a number of the account (21210); ``Url``
        or ``Twiml`` (or ``ApplicationSid``) required, ``Url`` absolute http(s) (21205);
        methods GET or POST; ``StatusCallback`` a URL (21609) and each
        ``StatusCallbackEvent`` one of ``CALL_EVENTS`` (21626); ``MachineDetection`` one of
        ``MACHINE_DETECTION`` (21234), ``AsyncAmd`` true or false, its callback a URL,
        POST only. Answers 201 with the call resource (``status: queued``), then, with a
        ``callee``, plays the call (``play_outbound``)."""

        def bad(code: int, message: str) -> web.Response:
            return self._error(400, message, code)

        def url(value: str) -> bool:
            return value.startswith(("http://", "https://")) and len(value) <= 4096

        to, from_ = form.get("To", ""), form.get("From", "")
        if not to:
            return bad(21201, "No 'To' number is specified")
        if not from_:
            return bad(21213, "No 'From' number is specified")
        if not E164.match(to):
            return bad(21211, f"Invalid 'To' Phone Number: {to[:40]}")
        if not E164.match(from_):
            return bad(21212, f"Invalid 'From' Phone Number: {from_[:40]}")
        if from_ not in self.numbers:
            return bad(
                21210, f"The source phone number provided, {from_}, is not yet verified for your account."
            )
        if not any(form.get(k) for k in ("Url", "Twiml", "ApplicationSid")):
            return bad(21205, "Url parameter is required.")
        if "Url" in form and not url(form["Url"]):
            return bad(21205, f"Url is not a valid URL: {form['Url'][:80]}")
        for key in ("Method", "StatusCallbackMethod", "FallbackMethod"):
            if form.get(key, "POST") not in ("GET", "POST"):
                return bad(21200 if key == "Method" else 21609, f"{key} must be GET or POST")
        if "StatusCallback" in form and not url(form["StatusCallback"]):
            return bad(21609, f"Invalid 'StatusCallback': {form['StatusCallback'][:80]}")
        events = request[POSTED].getall("StatusCallbackEvent", [])
        if any(e not in self.CALL_EVENTS for e in events):
            return bad(21626, "Invalid 'StatusCallbackEvent'")
        if form.get("MachineDetection", "Enable") not in self.MACHINE_DETECTION:
            return bad(21234, "Invalid Machine Detection configuration value")
        if form.get("AsyncAmd", "false") not in ("true", "false"):
            return bad(21234, "AsyncAmd must be true or false")
        if "AsyncAmdStatusCallback" in form and not url(form["AsyncAmdStatusCallback"]):
            return bad(21609, "Invalid 'AsyncAmdStatusCallback'")
        if form.get("AsyncAmdStatusCallbackMethod", "POST") != "POST":
            return bad(21609, "AsyncAmdStatusCallbackMethod must be POST")
        sid = "CA" + secrets.token_hex(16)
        self.calls[sid] = "queued"
        self.created[sid] = {**form, "StatusCallbackEvent": " ".join(events)}
        if self.callee is not None:
            self.played[sid] = asyncio.get_running_loop().create_task(
                play_outbound(form, events, sid, ACCOUNT, TOKEN, self.callee)
            )
        resource = {
            "sid": sid,
            "account_sid": ACCOUNT,
            "to": to,
            "from": from_,
            "status": "queued",
            "direction": "outbound-api",
            "answered_by": None,
            "api_version": "2010-04-01",
            "uri": f"/2010-04-01/Accounts/{ACCOUNT}/Calls/{sid}.json",
        }
        return web.json_response(resource, status=201)

    ROUTES: ClassVar[list[tuple[str, re.Pattern[str], Route]]] = [
        ("GET", re.compile(r"IncomingPhoneNumbers\.json"), _numbers),
        ("POST", re.compile(r"IncomingPhoneNumbers/(\w+)\.json"), _point),
        ("POST", re.compile(r"Calls/(\w+)\.json"), _update_call),
        ("POST", re.compile(r"Calls\.json"), _create_call),
    ]
    """(method, path after the account, handler(self, request, form, *groups)): one line per endpoint."""
