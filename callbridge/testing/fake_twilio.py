"""A local fake of Twilio's REST API (loopback only), as strict as Twilio documents: the
tests' and benchmarks' stand-in for ``api.twilio.com``."""

from __future__ import annotations

import asyncio
import base64
import re
import secrets
import xml.etree.ElementTree as ET
from collections.abc import Callable
from typing import ClassVar

import aiohttp
from aiohttp import web
from multidict import MultiDictProxy

from callbridge.gateway.security import SignatureChecker
from callbridge.sim.callee import Callee, OutboundResult, play_outbound
from callbridge.sim.caller import SimulatedCall

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
        self.recordings: dict[str, tuple[str, dict[str, str]]] = {}
        self.sims: dict[str, SimulatedCall] = {}
        """Simulated calls by CallSid (``attach``): what Twilio does to a call, they play."""
        self.human = "answer"
        """How a call the bridge places (``Calls.json``) goes: ``answer`` (the human picks
        up, hears the TwiML's ``<Say>``, joins its conference, talks ``human_talk_s`` and
        hangs up), or the final status it gets without an answer: ``no-answer``,
        ``busy``, ``failed``; ``silent``: it rings and no status callback ever comes."""
        self.human_talk_s = 0.5
        self.callbacks_lost = False
        """Status callbacks never arrive (sent to the wrong place, lost on the way)."""
        self.created: dict[str, dict[str, str]] = {}
        """Calls placed through ``Calls.json``, by their new CallSid: the request's form
        (a repeated field such as ``StatusCallbackEvent``: its values, space-separated)."""
        self.callee: Callee | None = None
        """Who picks up the calls created with a ``Url`` (an outbound call to the bridge's
        webhook, ``callbridge.sim.callee``); None: they stay queued."""
        self.played: dict[str, asyncio.Task[OutboundResult]] = {}
        """CallSid -> the simulator playing it (``callbridge.sim.callee``)."""
        self.heard: dict[str, list[str]] = {}
        """What each placed call's callee heard (``<Say>``), by CallSid."""
        self.rooms: dict[str, str] = {}
        """Conference name -> the CallSid of the (simulated) caller waiting in it."""
        self.callbacks: list[tuple[str, dict[str, str], int]] = []
        """Status callbacks posted: (url, form, the bridge's answer status)."""
        self.tasks: set[asyncio.Task[None]] = set()

    def attach(self, sim: SimulatedCall) -> None:
        """Twilio knows ``sim``'s call (in progress): REST requests on it reach it."""
        self.sims[sim.call_sid] = sim
        self.calls[sim.call_sid] = "in-progress"

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
            for k, v in posted.items():  # a repeated field: its values, space-separated
                form[k] = f"{form[k]} {v!s}" if k in form else str(v)
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
        if "Twiml" in form:
            return self._redirect(sid, form["Twiml"])
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

    # -- TwiML on a live call (telephony actions) -------------------------------------------

    def _redirect(self, sid: str, twiml: str) -> web.Response:
        """``Twiml`` on a call: refused unless the call is in progress (21220) and the TwiML
        is what Twilio runs (``twiml_problem``); then the simulated call runs it."""
        if self.calls[sid] != "in-progress":
            return self._error(400, f"Call is not in-progress. Cannot redirect. ({self.calls[sid]})", 21220)
        problem = twiml_problem(twiml)
        if problem is not None:
            return self._error(400, problem[1], problem[0])
        root = ET.fromstring(twiml)
        for room in root.iter("Conference"):
            self.rooms[(room.text or "").strip()] = sid
        sim = self.sims.get(sid)
        if sim is not None:
            sim.twilio_update(twiml)
        return web.json_response({"sid": sid, "account_sid": ACCOUNT, "status": self.calls[sid]})

    def _fetch_call(self, request: web.Request, form: dict[str, str], sid: str) -> web.Response:
        if sid not in self.calls:
            return self._error(404, f"The requested resource {request.path} was not found", 20404)
        return web.json_response({"sid": sid, "account_sid": ACCOUNT, "status": self.calls[sid]})

    # -- calls placed by the bridge: a warm transfer's call to the human (``Twiml``), an
    # outbound call to the bridge's webhook (``Url``) -------------------------------------

    async def _callee(self, sid: str, form: dict[str, str], wanted: set[str]) -> None:
        """The placed call, as Twilio and the callee play it (``human``)."""
        await asyncio.sleep(0.05)
        if self.human == "silent":  # rings on, and Twilio's callback never comes
            self.calls[sid] = "ringing"
            return
        if self.human != "answer":
            self.calls[sid] = self.human
            await self._status_callback(sid, form)
            return
        self.calls[sid] = "in-progress"
        if "answered" in wanted:
            await self._status_callback(sid, form)
        rooms = []
        for el in ET.fromstring(form.get("Twiml", "<Response/>")):
            if el.tag == "Say":
                self.heard.setdefault(sid, []).append((el.text or "").strip())
            for room in el.iter("Conference"):
                rooms.append((room.text or "").strip())
        callers = [self.sims.get(self.rooms.get(room, "")) for room in rooms]
        for sim in callers:
            if sim is not None:
                sim.conference_joined(form["To"])
        await asyncio.sleep(self.human_talk_s)
        self.calls[sid] = "completed"
        for sim in callers:  # the human had endConferenceOnExit: the conference ends
            if sim is not None:
                sim.conference_ended()
        await self._status_callback(sid, form)

    async def _status_callback(self, sid: str, form: dict[str, str]) -> None:
        """POST the call's status to its ``StatusCallback``, signed as Twilio signs."""
        url = form.get("StatusCallback")
        if not url or self.callbacks_lost:
            return
        params = {
            "AccountSid": ACCOUNT,
            "ApiVersion": "2010-04-01",
            "CallSid": sid,
            "CallStatus": self.calls[sid],
            "Direction": "outbound-api",
            "From": form.get("From", ""),
            "To": form.get("To", ""),
            "CallbackSource": "call-progress-events",
        }
        headers = {"X-Twilio-Signature": SignatureChecker.sign(TOKEN, url, params)}
        async with aiohttp.ClientSession() as http, http.post(url, data=params, headers=headers) as resp:
            self.callbacks.append((url, params, resp.status))

    CALL_EVENTS = ("initiated", "ringing", "answered", "completed")
    MACHINE_DETECTION = ("Enable", "DetectMessageEnd")

    def _create_call(self, request: web.Request, form: dict[str, str]) -> web.Response:
        """``POST Calls.json``, as strict as Twilio: ``To`` and ``From`` required (21201,
        21213) and E.164 (21211, 21212), ``From`` a number of the account (21210); ``Url``
        or ``Twiml`` (or ``ApplicationSid``) required, ``Url`` absolute http(s) (21205);
        methods GET or POST; ``StatusCallback`` a URL (21609) and each
        ``StatusCallbackEvent`` one of ``CALL_EVENTS`` (21626); ``MachineDetection`` one of
        ``MACHINE_DETECTION`` (21234), ``AsyncAmd`` true or false, its callback a URL,
        POST only; ``Twiml`` valid TwiML (``twiml_problem``); ``Timeout`` 1-600 (21216).
        Answers 201 with the call resource (``status: queued``), then plays the call: with
        ``Twiml``, the human ``human`` says (``_callee``); with ``Url`` and a ``callee``,
        the outbound call to the bridge (``play_outbound``)."""

        def bad(code: int, message: str) -> web.Response:
            return self._error(400, message, code)

        def url(value: str) -> bool:
            return value.startswith(("http://", "https://")) and len(value) <= 4096

        to, from_ = form.get("To", ""), form.get("From", "")
        if not to:
            return bad(21201, "No 'To' number is specified")
        if not from_:
            return bad(21213, "No 'From' number is specified")
        if not (E164.match(to) or to.startswith("sip:")):
            return bad(21211, f"Invalid 'To' Phone Number: {to[:40]}")
        if not E164.match(from_):
            return bad(21212, f"Invalid 'From' Phone Number: {from_[:40]}")
        if from_ not in self.numbers:
            return bad(
                21210, f"The source phone number provided, {from_}, is not yet verified for your account."
            )
        given = [k for k in ("Url", "Twiml", "ApplicationSid") if form.get(k)]
        if not given:
            return bad(21205, "Url parameter is required.")
        if len(given) > 1:
            return bad(
                21205, f"Only one of Url, Twiml and ApplicationSid may be given, not {' and '.join(given)}"
            )
        if "Url" in form and not url(form["Url"]):
            return bad(21205, f"Url is not a valid URL: {form['Url'][:80]}")
        if "Twiml" in form:
            problem = twiml_problem(form["Twiml"])
            if problem is not None:
                return self._error(400, problem[1], problem[0])
        timeout = form.get("Timeout", "60")
        if not timeout.isdigit() or not 1 <= int(timeout) <= 600:
            return bad(21216, f"Timeout must be 1-600, not {timeout[:20]!r}")
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
        self.created[sid] = form
        if "Twiml" in form:
            task = asyncio.get_running_loop().create_task(self._callee(sid, form, set(events)))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
        elif self.callee is not None:
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
        ("POST", re.compile(r"Calls/(\w+)/Recordings\.json"), _start_recording),
        ("GET", re.compile(r"IncomingPhoneNumbers\.json"), _numbers),
        ("POST", re.compile(r"IncomingPhoneNumbers/(\w+)\.json"), _point),
        ("POST", re.compile(r"Calls/(\w+)\.json"), _update_call),
        ("POST", re.compile(r"Calls\.json"), _create_call),
        ("GET", re.compile(r"Calls/(\w+)\.json"), _fetch_call),
    ]
    """(method, path after the account, handler(self, request, form, *groups)): one line per endpoint."""


E164 = re.compile(r"^\+[1-9][0-9]{6,14}$")
MAX_TWIML = 4000
"""Twilio's limit on a ``Twiml`` parameter (error 32018)."""
BOOL = ("true", "false")
METHODS = ("GET", "POST")
TWIML: dict[str, tuple[frozenset[str], frozenset[str]]] = {
    # element: (attributes Twilio documents, children it may hold); only what the bridge uses
    "Response": (frozenset(), frozenset({"Say", "Play", "Pause", "Dial", "Connect", "Hangup", "Redirect"})),
    "Say": (frozenset({"voice", "language", "loop"}), frozenset()),
    "Play": (frozenset({"digits", "loop"}), frozenset()),
    "Pause": (frozenset({"length"}), frozenset()),
    "Hangup": (frozenset(), frozenset()),
    "Redirect": (frozenset({"method"}), frozenset()),
    "Dial": (
        frozenset(
            {
                "action",
                "method",
                "timeout",
                "callerId",
                "answerOnBridge",
                "timeLimit",
                "hangupOnStar",
                "record",
                "ringTone",
                "trim",
                "sequential",
            }
        ),
        frozenset({"Number", "Sip", "Conference", "Client", "Queue"}),
    ),
    "Number": (
        frozenset(
            {"sendDigits", "url", "method", "statusCallback", "statusCallbackEvent", "statusCallbackMethod"}
        ),
        frozenset(),
    ),
    "Sip": (
        frozenset(
            {
                "username",
                "password",
                "url",
                "method",
                "statusCallback",
                "statusCallbackEvent",
                "statusCallbackMethod",
            }
        ),
        frozenset(),
    ),
    "Conference": (
        frozenset(
            {
                "muted",
                "beep",
                "startConferenceOnEnter",
                "endConferenceOnExit",
                "waitUrl",
                "waitMethod",
                "maxParticipants",
                "record",
                "region",
                "trim",
                "coach",
                "statusCallback",
                "statusCallbackEvent",
                "statusCallbackMethod",
                "participantLabel",
                "jitterBufferSize",
            }
        ),
        frozenset(),
    ),
    "Connect": (frozenset({"action", "method"}), frozenset({"Stream"})),
    "Stream": (
        frozenset({"url", "name", "track", "statusCallback", "statusCallbackMethod"}),
        frozenset({"Parameter"}),
    ),
    "Parameter": (frozenset({"name", "value"}), frozenset()),
}


def twiml_problem(twiml: str) -> tuple[int, str] | None:
    """Why Twilio would refuse ``twiml`` as a call's ``Twiml`` (code, message), or None:
    over ``MAX_TWIML`` characters (32018); not well-formed XML or its root not
    ``<Response>`` (12100); an element, attribute or nesting Twilio does not document, or
    a bad value (12200: booleans, methods, ``timeout`` 5-600, ``digits`` of 0-9 * # w,
    ``<Number>`` E.164, ``<Sip>`` a sip: URI, ``<Stream url>`` wss://); a relative
    ``action`` (15004)."""
    if len(twiml) > MAX_TWIML:
        return 32018, f"Twiml size exceeded maximum allowed value of {MAX_TWIML} characters"
    try:
        root = ET.fromstring(twiml)
    except ET.ParseError as exc:
        return 12100, f"Document parse failure: {exc}"
    if root.tag != "Response":
        return 12100, f"the root element must be <Response>, not <{root.tag[:40]}>"
    return _element_problem(root)


def _element_problem(el: ET.Element) -> tuple[int, str] | None:
    attributes, children = TWIML[el.tag]
    unknown = sorted(set(el.attrib) - attributes)
    if unknown:
        return 12200, f"<{el.tag}> has no attribute {unknown[0][:40]!r}"
    for name, value in el.attrib.items():
        bad = _value_problem(el.tag, name, value)
        if bad is not None:
            return 12200, bad
    if "action" in el.attrib and not el.attrib["action"].startswith(("http://", "https://")):
        return (
            15004,
            "Action Callback URL must be an absolute URL when using TwiML to update in-progress calls",
        )
    text = (el.text or "").strip()
    if el.tag == "Number" and not E164.match(text):
        return 12200, f"<Number> {text[:40]!r} is not an E.164 number"
    if el.tag == "Sip" and not text.startswith(("sip:", "sips:")):
        return 12200, f"<Sip> {text[:40]!r} is not a sip: URI"
    if el.tag in ("Conference", "Say") and not text:
        return 12200, f"<{el.tag}> needs text"
    if el.tag == "Stream" and not el.get("url", "").startswith(("wss://", "ws://")):
        return 12200, "<Stream url> must be a WebSocket URL"
    for child in el:
        if child.tag not in children or child.tag not in TWIML:
            return 12200, f"<{child.tag[:40]}> is not allowed in <{el.tag}>"
        problem = _element_problem(child)
        if problem is not None:
            return problem
    if el.tag == "Dial" and len(el) > 1 and any(c.tag == "Conference" for c in el):
        return 12200, "<Dial> with a <Conference> holds nothing else"
    return None


def _value_problem(tag: str, name: str, value: str) -> str | None:
    if name in ("startConferenceOnEnter", "endConferenceOnExit", "beep", "answerOnBridge") and value not in (
        *BOOL,
        *(("onEnter", "onExit") if name == "beep" else ()),
    ):
        return f"<{tag} {name}> must be true or false, not {value[:20]!r}"
    if name.endswith(("method", "Method")) and value.upper() not in METHODS:
        return f"<{tag} {name}> must be GET or POST"
    if name == "timeout" and not (value.isdigit() and 5 <= int(value) <= 600):
        return f"<Dial timeout> must be 5-600, not {value[:20]!r}"
    if name == "digits" and not re.fullmatch(r"[0-9*#wW]{1,64}", value):
        return f"<Play digits> must be 0-9 * # w, not {value[:20]!r}"
    if (
        name in ("waitUrl", "url", "statusCallback")
        and tag != "Stream"
        and not value.startswith(("http://", "https://"))
    ):
        return f"<{tag} {name}> must be an absolute http(s) URL"
    return None
