"""Twilio's REST API, the two calls the bridge makes, with aiohttp on the event loop.

- ``complete(call_sid)``: ``POST /2010-04-01/Accounts/{AccountSid}/Calls/{CallSid}.json``
  with ``Status=completed`` (hang up a live call), when the agent ends the call.
- ``point_number(number, voice_url)``: find the account's number
  (``GET .../IncomingPhoneNumbers.json?PhoneNumber=``) and set its ``VoiceUrl``
  (``POST .../IncomingPhoneNumbers/{Sid}.json``), at start.

Why not the ``twilio`` package's ``Client``: it is synchronous (``requests``), so each call
would need a worker thread, and pointing it at a local server means overriding its
internals; these two documented endpoints are a few lines with the HTTP client the
bridge already uses. Basic auth (AccountSid, AuthToken); ``TIMEOUT_S`` per request and
``ATTEMPTS`` tries (a 5xx or a network error is retried once after 0.5 s; a 4xx is not).
Errors raise ``TwilioError`` with the status and the start of Twilio's answer.
"""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import aiohttp

from ..agents._http import excerpt

TIMEOUT_S = 5.0
ATTEMPTS = 2
API_VERSION = "2010-04-01"


class TwilioError(RuntimeError):
    pass


class TwilioRest:
    def __init__(self, account_sid: str, auth_token: str, base_url: str = "https://api.twilio.com") -> None:
        self.account_sid = account_sid
        credentials = base64.b64encode(f"{account_sid}:{auth_token}".encode()).decode()
        self.headers = {"Authorization": f"Basic {credentials}"}
        self.base = f"{base_url.rstrip('/')}/{API_VERSION}/Accounts/{account_sid}"

    async def _request(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        timeout = aiohttp.ClientTimeout(total=TIMEOUT_S)
        problem = ""
        async with aiohttp.ClientSession(timeout=timeout, headers=self.headers) as http:
            for attempt in range(ATTEMPTS):
                if attempt:
                    await asyncio.sleep(0.5)
                try:
                    async with http.request(method, self.base + path, **kwargs) as resp:
                        if resp.status < 300:
                            return await resp.json(content_type=None)
                        problem = f"{method} {path} answered {resp.status}: {await excerpt(resp)}"
                        if resp.status < 500:
                            break
                except (aiohttp.ClientError, asyncio.TimeoutError, OSError, ValueError) as exc:
                    problem = f"{method} {path}: {type(exc).__name__}: {exc}"
        raise TwilioError(problem)

    async def complete(self, call_sid: str) -> str:
        """Hang up ``call_sid``; returns the call's status as Twilio reports it."""
        answer = await self._request("POST", f"/Calls/{call_sid}.json", data={"Status": "completed"})
        return str(answer.get("status", ""))

    async def point_number(self, number: str, voice_url: str) -> str:
        """Set the Voice URL of ``number`` (E.164); returns the number's Sid."""
        found = await self._request("GET", "/IncomingPhoneNumbers.json", params={"PhoneNumber": number})
        numbers = found.get("incoming_phone_numbers") or []
        if not numbers:
            raise TwilioError(f"{number} is not a number of account {self.account_sid}")
        sid = str(numbers[0]["sid"])
        await self._request("POST", f"/IncomingPhoneNumbers/{sid}.json", data={"VoiceUrl": voice_url, "VoiceMethod": "POST"})
        return sid
