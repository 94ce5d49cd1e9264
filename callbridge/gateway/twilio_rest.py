"""Twilio's REST API, the calls the bridge makes, through the ``twilio`` library's
async client (``AsyncTwilioHttpClient``, ``*_async`` methods) on the event loop.

- ``complete(call_sid)``: update the call with ``Status=completed`` (hang up a live
  call), when the agent ends the call.
- ``redirect(call_sid, twiml)``: update a live call with new TwiML (``Twiml``), which
  Twilio runs at once in place of the current document: a transfer's ``<Dial>``, DTMF's
  ``<Play digits>``, a ``<Connect><Stream>`` back to the bridge.
- ``call_out(to, from_, twiml, ...)``: a new call (``Calls.json``) running ``twiml`` when
  answered, with a status callback (a warm transfer's call to the human).
- ``status(call_sid)``, ``cancel(call_sid)``: how a call placed so is doing; stop it ringing.
- ``create_call(Dial)``: place an outbound call (``POST /calls``): ``Calls.json`` with
  ``Url`` (the bridge's webhook), status callbacks and asynchronous answering-machine
  detection.
- ``point_number(number, voice_url)``: find the account's number (list
  ``IncomingPhoneNumbers`` by ``PhoneNumber``) and set its ``VoiceUrl``, at start.
- ``start_recording(call_sid, callback_url)``: create a dual-channel Recording of the
  live call (``Calls/{CallSid}/Recordings.json``), when a call starts with ``RECORDING=twilio``.

One ``TwilioRest`` holds one HTTP session (connections kept alive between requests),
made on first use inside the event loop; ``close()`` ends it. Requests go through
``RETRY`` (``TIMEOUT_S`` each; a 5xx or a network error is retried once after 0.5 s; a 4xx
is not); errors raise ``TwilioError`` with the status and the start of Twilio's answer.

``base_url`` other than Twilio's (``TWILIO_API_URL``; tests point it at a local server)
goes through the library's documented hook for that, a custom HTTP client: it rewrites
the API's base in each request and nothing else.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import Any

import aiohttp
from twilio.base.exceptions import TwilioException, TwilioRestException
from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.http.response import Response
from twilio.rest import Client

from ..retry import GaveUp, RetryPolicy

TIMEOUT_S = 5.0
TWILIO_API = "https://api.twilio.com"

_quiet = logging.getLogger("callbridge.gateway.twilio_http")
_quiet.setLevel(logging.WARNING)  # the library logs every request and header at INFO


class TwilioError(RuntimeError):
    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        """Twilio's HTTP status when it answered (a 4xx: it refused the request)."""


STATUS_EVENTS = ("initiated", "ringing", "answered", "completed")
"""The call progress events an outbound call's ``StatusCallback`` is told of."""


@dataclass(frozen=True)
class Dial:
    """One outbound call as Twilio's ``Calls.json`` takes it. ``machine_detection``:
    ``Enable``, ``DetectMessageEnd`` or "" (none); with one, detection is asynchronous and
    its verdict goes to ``amd_callback``."""

    to: str
    from_: str
    url: str
    status_callback: str
    amd_callback: str
    machine_detection: str = "DetectMessageEnd"


def _worth_retrying(error: BaseException) -> bool:
    """A 4xx is Twilio refusing the request: asking again would not change its mind."""
    return not (isinstance(error, TwilioRestException) and error.status < 500)


RETRY = RetryPolicy(
    "twilio request",
    pauses_s=(0.5,),
    timeout_s=TIMEOUT_S,
    errors=(TwilioRestException, TimeoutError, aiohttp.ClientError, OSError, ValueError, TwilioException),
    retryable=_worth_retrying,
)


class _ApiAt(AsyncTwilioHttpClient):
    """The library's async HTTP client with Twilio's API base swapped for ``base_url``."""

    def __init__(self, base_url: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.base_url = base_url.rstrip("/")

    async def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> Response:
        if url.startswith(TWILIO_API):
            url = self.base_url + url[len(TWILIO_API) :]
        return await super().request(method, url, *args, **kwargs)


class TwilioRest:
    def __init__(self, account_sid: str, auth_token: str, base_url: str = TWILIO_API) -> None:
        self.account_sid = account_sid
        self._auth = (account_sid, auth_token)
        self._base_url = base_url.rstrip("/")
        self._http: AsyncTwilioHttpClient | None = None
        self._client: Client | None = None

    def _twilio(self) -> Client:
        if self._client is None:
            options: dict[str, Any] = {"timeout": TIMEOUT_S, "logger": _quiet}
            self._http = (
                AsyncTwilioHttpClient(**options)
                if self._base_url == TWILIO_API
                else _ApiAt(self._base_url, **options)
            )
            self._client = Client(*self._auth, http_client=self._http)
        return self._client

    async def close(self) -> None:
        if self._http is not None:
            http, self._http, self._client = self._http, None, None
            await http.close()

    async def _call(self, what: str, request: Any, once: bool = False) -> Any:
        """Run ``request()`` (a library ``*_async`` call) under ``RETRY``; ``once``: never
        retried (a request that is not idempotent, such as placing a call)."""
        policy = replace(RETRY, what=what, pauses_s=()) if once else replace(RETRY, what=what)
        try:
            return await policy.run(lambda attempt: request())
        except GaveUp as exc:
            error = exc.last
            if isinstance(error, TwilioRestException):
                raise TwilioError(
                    f"{what} answered {error.status}: {str(error.msg)[:200]}", error.status
                ) from None
            raise TwilioError(f"{what}: {type(error).__name__}: {str(error)[:200]}") from None

    async def complete(self, call_sid: str) -> str:
        """Hang up ``call_sid``; returns the call's status as Twilio reports it."""
        calls = self._twilio().calls
        call = await self._call(
            f"completing {call_sid}", lambda: calls(call_sid).update_async(status="completed")
        )
        return str(call.status or "")

    async def create_call(self, dial: Dial) -> tuple[str, str]:
        """Place ``dial``; returns the new call's (Sid, status) as Twilio reports them. Not
        retried on a 5xx or a lost answer (``RETRY`` would place a second call)."""
        calls = self._twilio().calls
        amd: dict[str, Any] = {}
        if dial.machine_detection:
            amd = {
                "machine_detection": dial.machine_detection,
                "async_amd": "true",
                "async_amd_status_callback": dial.amd_callback,
                "async_amd_status_callback_method": "POST",
            }
        call = await self._call(
            f"calling {dial.to}",
            lambda: calls.create_async(
                to=dial.to,
                from_=dial.from_,
                url=dial.url,
                method="POST",
                status_callback=dial.status_callback,
                status_callback_event=list(STATUS_EVENTS),
                status_callback_method="POST",
                **amd,
            ),
            once=True,
        )
        return str(call.sid), str(call.status or "")

    async def point_number(self, number: str, voice_url: str) -> str:
        """Set the Voice URL of ``number`` (E.164); returns the number's Sid."""
        numbers = self._twilio().incoming_phone_numbers
        found = await self._call(
            f"finding {number}", lambda: numbers.list_async(phone_number=number, limit=1)
        )
        if not found:
            raise TwilioError(f"{number} is not a number of account {self.account_sid}")
        sid = str(found[0].sid)
        await self._call(
            f"pointing {number}", lambda: numbers(sid).update_async(voice_url=voice_url, voice_method="POST")
        )
        return sid

    async def start_recording(self, call_sid: str, status_callback: str) -> str:
        """Start Twilio's recording of live call ``call_sid``: dual channels (the caller
        and the bridge's audio apart), both tracks, untrimmed; Twilio POSTs
        ``status_callback`` when it is ``completed`` or ``absent``. Returns the RecordingSid."""
        recordings = self._twilio().calls(call_sid).recordings
        recording = await self._call(
            f"recording {call_sid}",
            lambda: recordings.create_async(
                recording_channels="dual",
                recording_track="both",
                trim="do-not-trim",
                recording_status_callback=status_callback,
                recording_status_callback_method="POST",
                recording_status_callback_event=["completed absent"],
            ),
        )
        return str(recording.sid or "")

    async def redirect(self, call_sid: str, twiml: str) -> str:
        """Run ``twiml`` on live call ``call_sid`` now (Twilio stops what the call was doing:
        a stream gets ``stop``); returns the call's status."""
        calls = self._twilio().calls
        call = await self._call(f"redirecting {call_sid}", lambda: calls(call_sid).update_async(twiml=twiml))
        return str(call.status or "")

    async def call_out(
        self,
        to: str,
        from_: str,
        twiml: str,
        timeout_s: int,
        status_callback: str,
        events: tuple[str, ...] = ("answered", "completed"),
    ) -> str:
        """Place a call to ``to`` that runs ``twiml`` once answered; ``status_callback``
        gets Twilio's POST for each of ``events``. Returns the new CallSid. Not retried: a
        lost answer must not ring the human twice."""
        calls = self._twilio().calls
        call = await self._call(
            f"calling {to[:40]}",
            lambda: calls.create_async(
                to=to,
                from_=from_,
                twiml=twiml,
                timeout=timeout_s,
                status_callback=status_callback,
                status_callback_method="POST",
                status_callback_event=list(events),
            ),
            once=True,
        )
        return str(call.sid or "")

    async def status(self, call_sid: str) -> str:
        """The call's status as Twilio reports it (``queued``, ``ringing``, ``in-progress``,
        ``completed``, ``no-answer``...)."""
        calls = self._twilio().calls
        call = await self._call(f"fetching {call_sid}", lambda: calls(call_sid).fetch_async())
        return str(call.status or "")

    async def cancel(self, call_sid: str) -> str:
        """Stop ringing ``call_sid`` (``Status=canceled``: a call not yet answered)."""
        calls = self._twilio().calls
        call = await self._call(
            f"canceling {call_sid}", lambda: calls(call_sid).update_async(status="canceled")
        )
        return str(call.status or "")
