"""An agent that asks the user's own HTTP endpoint what to say.

Each caller turn is one ``POST url`` with a JSON body::

    {"callSid": "CA...", "transcript": "what the caller said",
     "history": [{"role": "caller"|"agent", "text": "..."}, ...],
     "state": {...}}            # what the endpoint returned last time ({} at first)

and the endpoint answers either ``application/json``::

    {"text": "what to say", "end_call": false, "state": {...},      # every field optional
     "actions": [{"type": "transfer", "to": "+15551234567", "mode": "cold", "summary": "..."},
                 {"type": "send_dtmf", "digits": "1#"}, {"type": "hang_up"}]}

or ``text/plain`` (the text to say). ``204 No Content`` says nothing. The returned
``state`` is kept and sent back on the next turn, so a stateless endpoint can hold the
conversation's state with us; ``end_call: true`` ends the call after the text plays.

``actions`` are telephony actions (``callbridge.actions``), at most ``MAX_ACTIONS``,
checked (``actions.check``) when the answer arrives:

- ``{"type": "transfer", "to"?, "mode"?: "cold"|"warm", "summary"?}`` and
  ``{"type": "send_dtmf", "digits"}`` are carried out in order once the text has been
  handed to the voice, through the telephony tools (``transfer_call``, ``send_dtmf``: the
  call's ``ToolContext.act``, timed out, noted as ``tool.called``), as the end of the same
  reply (the next turn waits for them), stopping at the first that fails. A barge-in over
  the text ends the reply, and with it the actions not yet started.
- ``{"type": "hang_up", "reason"?}`` is ``end_call: true``: the call ends once the text
  has played (never mid-sentence, and never while a transfer it also asked for is on).

A bad action (unknown type, bad or unknown arguments, not an object, a hang-up beside a
transfer) is dropped and noted on the timeline as ``agent.action`` (``type``, ``ok: false``,
``error``), and logged once per call; the text is still spoken and the others still run.

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
import logging
import re
import time
from collections.abc import AsyncGenerator, Callable, Mapping, Sequence
from typing import Any

import aiohttp
import orjson

from .. import actions
from ..speech.vocabulary import Vocabulary
from ._http import check_url, excerpt, redact, session_scope
from .base import Agent, AgentError, Turn, split_pieces
from .desk_vocabulary import desk_vocabulary
from .signing import signed_headers

MAX_BODY_BYTES = 64 * 1024
MAX_TEXT_CHARS = 1000
MAX_ACTIONS = 8
TOOL_FOR = {"transfer": "transfer_call", "send_dtmf": "send_dtmf"}
"""The telephony tool that carries out each action an answer may ask for (but hang-up)."""
log = logging.getLogger("callbridge.agent")


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
        self._warned = False

    def vocabulary(self) -> Vocabulary:
        """The desk's, as the desk's callers are the likely ones: Whisper (``STT=whisper``) takes
        only its hint and still hears any English; ``STT=sphinx`` hears only its words."""
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
        text, end_call, state, asked = self._interpret(status, ctype, charset, raw)
        if state is not None:
            self._remote_state = state
        self._ended = end_call
        todo = self._checked(asked)
        for piece in split_pieces(cap_text(text, self.max_text_chars)):
            yield piece
        if todo:  # the text has been handed over whole: now the actions
            await self._carry_out(todo)

    def _checked(self, asked: list[Any]) -> list[tuple[str, dict[str, Any]]]:
        """The answer's actions that pass ``actions.check`` (a hang-up sets ``ended``); each
        bad one is noted."""
        todo: list[tuple[str, dict[str, Any]]] = []
        hang_up = False
        for i, item in enumerate(asked):
            if not isinstance(item, dict):
                self._bad(i, "?", f"an action must be an object, not {type(item).__name__}")
                continue
            kind = item.get("type")
            args = {k: v for k, v in item.items() if k != "type"}
            try:
                if not isinstance(kind, str):
                    raise actions.ActionError("'type' must be one of " + ", ".join(actions.KINDS))
                checked = actions.check(kind, args)
            except actions.ActionError as exc:
                self._bad(i, str(kind)[:40], str(exc))
                continue
            if kind == "hang_up":
                hang_up = True
            else:
                todo.append((kind, checked))
        if hang_up and any(kind == "transfer" for kind, _ in todo):
            self._bad(len(asked), "hang_up", "hang_up beside a transfer: the transfer ends the agent's part")
        elif hang_up:
            self._ended = True
        return todo

    def _bad(self, index: int, kind: str, error: str) -> None:
        if not self._warned:  # once per call: a webhook that is wrong is wrong every turn
            self._warned = True
            log.warning(
                "webhook %s asked for a bad action (#%d %s): %s", redact(self.url), index, kind, error
            )
        if self.context is not None:
            self.context.note("agent.action", type=kind, ok=False, error=error[:200])

    async def _carry_out(self, todo: list[tuple[str, dict[str, Any]]]) -> None:
        """Each action through its telephony tool, in order, until one fails."""
        for kind, args in todo:
            outcome = await self.use_tool(TOOL_FOR[kind], args)
            if not outcome.ok:
                if self.context is None and not self._warned:
                    self._warned = True
                    log.warning("webhook %s asked for %s outside a call", redact(self.url), kind)
                return

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
    ) -> tuple[str, bool, dict[str, Any] | None, list[Any]]:
        where = redact(self.url)
        if status == 204 or not raw.strip():
            return "", False, None, []
        is_json = (
            ctype == "application/json"
            or ctype.endswith("+json")
            or (ctype == "application/octet-stream" and raw.lstrip()[:1] == b"{")
        )
        if not is_json:
            if ctype in ("text/plain", "application/octet-stream"):
                return raw.decode(charset or "utf-8", "replace"), False, None, []
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
        asked = obj.get("actions")
        if asked is None:
            asked = []
        if not isinstance(asked, list):
            raise AgentError(f"webhook {where}: 'actions' must be a list")
        if len(asked) > MAX_ACTIONS:
            raise AgentError(f"webhook {where}: {len(asked)} actions, at most {MAX_ACTIONS}")
        return text, end_call, state, asked
