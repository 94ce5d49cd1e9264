"""An agent that asks the user's own HTTP endpoint what to say.

Each caller turn is one ``POST url`` with a JSON body::

    {"callSid": "CA...", "transcript": "what the caller said",
     "history": [{"role": "caller"|"agent", "text": "..."}, ...],
     "state": {...}}            # what the endpoint returned last time ({} at first)

and the endpoint answers either ``application/json``::

    {"text": "what to say", "end_call": false, "state": {...}}   # every field optional

or ``text/plain`` (the text to say). ``204 No Content`` says nothing. The returned
``state`` is kept and sent back on the next turn, so a stateless endpoint can hold the
conversation's state with us; ``end_call: true`` ends the call after the text plays.

With a ``secret``, each request is signed (``signing.py``): ``X-Callbridge-Timestamp`` and
``X-Callbridge-Signature: v1=<hex HMAC-SHA256 of f"{timestamp}.{body}">`` over the exact body.

Limits: the response body is capped (``max_body_bytes``, 64 KiB: beyond is an
``AgentError``) and the text is cut to ``max_text_chars`` (1,000) at a sentence boundary.
``timeout_s`` bounds the whole exchange (connect to last byte); any other failure (HTTP
status not 2xx, invalid JSON, wrong field types, unsupported content type) is an
``AgentError`` with the status and a short excerpt. Cancelling closes the connection.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncGenerator, Callable, Mapping, Sequence
from typing import Any

import aiohttp
import orjson

from ..speech.vocabulary import Vocabulary
from ._http import check_url, excerpt, redact, session_scope
from .base import Agent, AgentError, Turn, split_pieces
from .desk_vocabulary import desk_vocabulary
from .signing import signed_headers

MAX_BODY_BYTES = 64 * 1024
MAX_TEXT_CHARS = 1000


def cap_text(text: str, limit: int = MAX_TEXT_CHARS) -> str:
    """``text`` cut to at most ``limit`` characters: at the last sentence end if there is one
    in the second half, else at the last space."""
    text = text.strip()
    if len(text) <= limit:
        return text
    head = text[: limit + 1]
    ends = [m.end() for m in re.finditer(r"[.!?][\"')\]]*(?=\s)", head) if m.end() <= limit]
    if ends and ends[-1] >= limit // 2:
        return head[: ends[-1]]
    space = head.rfind(" ", 0, limit)
    return (head[:space] if space > limit // 2 else head[:limit]).rstrip(" ,;:-")


class WebhookAgent(Agent):
    name = "webhook"
    CONFIG_KEYS = (
        "url",
        "secret",
        "call_sid",
        "timeout_s",
        "max_body_bytes",
        "max_text_chars",
        "headers",
        "session",
        "clock",
        "greeting",
    )

    def __init__(
        self,
        *,
        url: str,
        secret: str | bytes | None = None,
        call_sid: str | None = None,
        timeout_s: float = 10.0,
        max_body_bytes: int = MAX_BODY_BYTES,
        max_text_chars: int = MAX_TEXT_CHARS,
        headers: Mapping[str, str] | None = None,
        session: aiohttp.ClientSession | None = None,
        clock: Callable[[], float] = time.time,
        greeting: str | None = None,
    ) -> None:
        self.url = check_url(url, "webhook url")
        self.secret = secret or None
        self.call_sid = call_sid or ""
        self.timeout_s = float(timeout_s)
        self.max_body_bytes = int(max_body_bytes)
        self.max_text_chars = int(max_text_chars)
        self.headers = dict(headers or {})
        self.session = session
        self.clock = clock
        self._greeting = greeting
        self._remote_state: dict[str, Any] = {}
        self._ended = False
        self._turns = 0

    def vocabulary(self) -> Vocabulary:
        """The desk's, as before vocabularies came from the agent: the general model costs
        ~5x the CPU, 95 MB and ~2 s of GIL per decoder and misheard the bundled turns in a
        call (docs/stt.md); return None here to hear any English."""
        return desk_vocabulary()

    def state(self) -> dict[str, Any]:
        return dict(self._remote_state)

    def request_body(self, transcript: str, history: Sequence[Turn]) -> bytes:
        return orjson.dumps(
            {
                "callSid": self.call_sid,
                "transcript": transcript,
                "history": [t.to_json() for t in history],
                "state": self._remote_state,
            }
        )

    async def reply(self, transcript: str, history: Sequence[Turn] = ()) -> AsyncGenerator[str, None]:
        self._turns += 1
        body = self.request_body(transcript, history)
        headers = {
            **self.headers,
            "Content-Type": "application/json",
            "Accept": "application/json, text/plain",
        }
        if self.secret:
            headers.update(signed_headers(self.secret, body, self.clock()))
        try:
            async with asyncio.timeout(self.timeout_s):
                status, ctype, charset, raw = await self._exchange(body, headers)
        except TimeoutError:
            raise AgentError(
                f"no answer from webhook {redact(self.url)} within {self.timeout_s:g} s"
            ) from None
        text, end_call, state = self._interpret(status, ctype, charset, raw)
        if state is not None:
            self._remote_state = state
        self._ended = end_call
        for piece in split_pieces(cap_text(text, self.max_text_chars)):
            yield piece

    async def _exchange(self, body: bytes, headers: dict[str, str]) -> tuple[int, str, str | None, bytes]:
        where = redact(self.url)
        async with session_scope(self.session) as session:
            try:
                async with session.post(self.url, data=body, headers=headers, allow_redirects=False) as resp:
                    if not 200 <= resp.status < 300:
                        raise AgentError(
                            f"webhook {where} answered HTTP {resp.status}: {await excerpt(resp)}"
                        )
                    if resp.content_length is not None and resp.content_length > self.max_body_bytes:
                        resp.close()
                        raise AgentError(
                            f"webhook {where} response is {resp.content_length} bytes, "
                            f"over the {self.max_body_bytes}-byte limit"
                        )
                    raw = bytearray()
                    async for chunk in resp.content.iter_any():
                        raw += chunk
                        if len(raw) > self.max_body_bytes:
                            resp.close()
                            raise AgentError(
                                f"webhook {where} response is over the {self.max_body_bytes}-byte limit"
                            )
                    return resp.status, resp.content_type, resp.charset, bytes(raw)
            except aiohttp.ClientError as exc:
                raise AgentError(f"cannot reach webhook {where}: {exc.__class__.__name__}: {exc}") from None

    def _interpret(
        self, status: int, ctype: str, charset: str | None, raw: bytes
    ) -> tuple[str, bool, dict[str, Any] | None]:
        where = redact(self.url)
        if status == 204 or not raw.strip():
            return "", False, None
        is_json = (
            ctype == "application/json"
            or ctype.endswith("+json")
            or (ctype == "application/octet-stream" and raw.lstrip()[:1] == b"{")
        )
        if not is_json:
            if ctype in ("text/plain", "application/octet-stream"):
                return raw.decode(charset or "utf-8", "replace"), False, None
            raise AgentError(f"webhook {where} answered {ctype!r}; expected application/json or text/plain")
        try:
            obj = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise AgentError(f"webhook {where} answered invalid JSON: {raw[:120]!r}") from None
        if not isinstance(obj, dict):
            raise AgentError(f"webhook {where} answered JSON {type(obj).__name__}, expected an object")
        text = obj.get("text")
        if text is None:
            text = ""
        if not isinstance(text, str):
            raise AgentError(f"webhook {where}: 'text' must be a string")
        end_call = obj.get("end_call", False)
        if end_call is None:
            end_call = False
        if not isinstance(end_call, bool):
            raise AgentError(f"webhook {where}: 'end_call' must be true or false")
        state = obj.get("state")
        if state is not None and not isinstance(state, dict):
            raise AgentError(f"webhook {where}: 'state' must be an object")
        return text, end_call, state
