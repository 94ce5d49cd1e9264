"""An agent backed by any OpenAI-compatible chat-completions endpoint, streamed.

``POST {base_url}/chat/completions`` with ``"stream": true``; the answer is Server-Sent
Events, ``data: {json}`` lines with ``choices[0].delta.content``, ended by ``data: [DONE]``.
llama.cpp's server, vLLM, Ollama (``/v1``) and hosted APIs all speak it; an endpoint that
ignores ``stream`` and answers one JSON completion is accepted too.

- Messages: the system prompt, the last ``max_history_turns`` turns (caller -> ``user``,
  agent -> ``assistant``), then the transcript as ``user``.
- ``api_key`` (optional) is sent as ``Authorization: Bearer``.
- ``max_tokens`` (0: no limit sent) goes in the body as ``max_tokens_param``:
  ``max_completion_tokens`` (OpenAI's current name; o-series and GPT-5 models refuse the
  deprecated ``max_tokens``) or ``max_tokens`` (servers that know only the old name). An
  endpoint that answers 400 naming the one sent as unsupported gets the request once more
  with the other name, which the agent then keeps.
- ``timeout_s`` bounds connecting and the response headers (first byte) only; the rest of
  the stream is the caller's to bound (it owns timeouts and retries).
- Errors raise ``AgentError``: unreachable, HTTP status (with a body excerpt), malformed SSE
  or JSON, an ``error`` object in the stream, a stream cut before ``[DONE]``/``finish_reason``.
- Abandoning or cancelling the reply closes the HTTP response (the connection is dropped,
  so the server stops generating).
- Tools (function calling): every request offers ``all_tools()`` (the agent's own, the
  user's served ones from ``TOOLS_URL`` and the telephony ones: ``end_call``,
  ``transfer_call``, ``send_dtmf``); ``tools=False`` offers none (servers without function
  calling). Streamed ``delta.tool_calls`` fragments are put together by ``index`` (the
  ``id`` and ``function.name`` come first, ``function.arguments`` in pieces); once the
  stream ends with tool calls (``finish_reason: "tool_calls"``), each is run through
  ``use_tool`` (checked, timed out, noted as ``tool.called``, a filler past 1 s), the
  assistant message with its ``tool_calls`` and one ``role: "tool"`` message per call
  (``tool_call_id``, the outcome's ``for_model()`` text; a failure is told to the model
  like a result) are appended, and the reply goes on with another request. Text the model
  says before a tool call streams to the caller at once. At most ``MAX_TOOL_ROUNDS``
  rounds of tool calls per turn; the request after the last round says ``tool_choice:
  "none"`` so the model answers in words, and tool calls it makes anyway are dropped.
- Ending the call: ``end_call`` (a telephony action: the call ends after the reply being
  spoken has played), or (heuristic) if the reply's last sentence is a farewell
  ("goodbye", "bye", "have a nice day"...) and not a question. The default system prompt
  asks the model to end with "Goodbye." exactly when the call is over.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncGenerator, Sequence
from typing import Any

import aiohttp
import orjson

from ..persona import DESK_PERSONA
from ..speech.vocabulary import Vocabulary
from ..tools import MAX_ARGS_BYTES, Tool
from ._http import check_url, excerpt, redact, session_scope
from .base import Agent, AgentError, Turn, split_pieces
from .desk_vocabulary import desk_vocabulary

log = logging.getLogger("callbridge.agent")

DEFAULT_SYSTEM_PROMPT = DESK_PERSONA
MAX_TOOL_ROUNDS = 5
"""Rounds of tool calls in one turn; the next request asks for words only."""
MAX_TOOL_CALLS = 16
"""Tool calls in one round; more is a malformed answer."""
MAX_EVENT_BYTES = 1 << 20
MAX_TOKENS_PARAMS = ("max_completion_tokens", "max_tokens")
_FAREWELL = re.compile(
    r"\b(?:good ?bye|bye(?: bye)?|bye for now|farewell|have a (?:nice|good|great|lovely|wonderful) "
    r"(?:day|one|evening|afternoon|morning|weekend))\b"
)


def says_goodbye(text: str) -> bool:
    """The heuristic for "the model ended the call": the last sentence is a farewell and
    not a question."""
    pieces = [p.strip() for p in split_pieces(text.strip()) if p.strip()]
    if not pieces:
        return False
    last = pieces[-1]
    return not last.endswith("?") and bool(_FAREWELL.search(last.lower()))


class SSEDecoder:
    """Bytes in, the ``data`` of each complete Server-Sent Event out (comments, ``event:``,
    ``id:`` and ``retry:`` fields ignored). ``\\n``, ``\\r\\n`` and ``\\r`` end lines."""

    def __init__(self, max_event_bytes: int = MAX_EVENT_BYTES) -> None:
        self._buf = b""
        self._data: list[str] = []
        self._size = 0
        self.max_event_bytes = max_event_bytes

    def feed(self, chunk: bytes) -> list[str]:
        self._buf += chunk
        events: list[str] = []
        while True:
            m = re.search(rb"\r\n|\r|\n", self._buf)
            if m is None:
                break
            if m.group() == b"\r" and m.end() == len(self._buf):
                break  # maybe the first half of \r\n
            line, self._buf = self._buf[: m.start()], self._buf[m.end() :]
            self._line(line, events)
        if len(self._buf) + self._size > self.max_event_bytes:
            raise AgentError(f"SSE event larger than {self.max_event_bytes} bytes")
        return events

    def close(self) -> list[str]:
        """The end of the stream: a last event without its blank line still counts."""
        events: list[str] = []
        if self._buf:
            self._line(self._buf.rstrip(b"\r"), events)
            self._buf = b""
        self._line(b"", events)
        return events

    def _line(self, line: bytes, events: list[str]) -> None:
        if not line:
            if self._data:
                events.append("\n".join(self._data))
            self._data, self._size = [], 0
            return
        if line.startswith(b":"):
            return
        name, _, value = line.partition(b":")
        if name != b"data":
            return
        if value.startswith(b" "):
            value = value[1:]
        self._data.append(value.decode("utf-8", "replace"))
        self._size += len(value)


class OpenAIChatAgent(Agent):
    name = "openai"
    CONFIG_KEYS = (
        "base_url",
        "model",
        "api_key",
        "system_prompt",
        "max_history_turns",
        "timeout_s",
        "temperature",
        "max_tokens",
        "max_tokens_param",
        "tools",
        "session",
        "call_sid",
        "greeting",
    )

    def __init__(
        self,
        *,
        base_url: str,
        model: str,
        api_key: str | None = None,
        system_prompt: str | None = None,
        max_history_turns: int = 20,
        timeout_s: float = 10.0,
        temperature: float | None = None,
        max_tokens: int | None = 300,
        max_tokens_param: str = "max_completion_tokens",
        tools: bool = True,
        session: aiohttp.ClientSession | None = None,
        call_sid: str | None = None,
        greeting: str | None = None,
    ) -> None:
        self.url = check_url(base_url, "base_url").rstrip("/") + "/chat/completions"
        self.model = model
        self.api_key = api_key or None
        self.system_prompt = DEFAULT_SYSTEM_PROMPT if system_prompt is None else system_prompt
        self.max_history_turns = max(0, int(max_history_turns))
        self.timeout_s = float(timeout_s)
        self.temperature = temperature
        self.max_tokens = max_tokens
        if max_tokens_param not in MAX_TOKENS_PARAMS:
            raise ValueError(
                f"max_tokens_param must be one of {', '.join(MAX_TOKENS_PARAMS)}, not {max_tokens_param!r}"
            )
        self.max_tokens_param = max_tokens_param
        self._param_switched = False
        self.offer_tools = bool(tools)
        self.session = session
        self.call_sid = call_sid
        self._greeting = greeting
        self._ended = False
        self._turns = 0
        self._last_finish: str | None = None
        self._tool_calls = 0

    def vocabulary(self) -> Vocabulary:
        """The desk's (the default persona is the desk's): Whisper (``STT=whisper``) takes only
        its hint and still hears any English; ``STT=sphinx`` hears only its words (the general
        pocketsphinx model costs ~5x the CPU and misheard the bundled turns: docs/stt.md)."""
        return desk_vocabulary()

    def state(self) -> dict[str, Any]:
        state: dict[str, Any] = {
            "model": self.model,
            "turns": self._turns,
            "finish_reason": self._last_finish,
        }
        if self._tool_calls:
            state["tool_calls"] = self._tool_calls
        return state

    def messages(self, transcript: str, history: Sequence[Turn]) -> list[dict[str, Any]]:
        msgs: list[dict[str, Any]] = []
        if self.system_prompt:
            msgs.append({"role": "system", "content": self.system_prompt})
        turns = [t for t in history if t.text.strip()]
        if turns and turns[-1].role == "caller" and turns[-1].text.strip() == transcript.strip():
            turns = turns[:-1]  # the caller already put the current turn in the history
        if self.max_history_turns:
            for t in turns[-self.max_history_turns :]:
                msgs.append({"role": "user" if t.role == "caller" else "assistant", "content": t.text})
        msgs.append({"role": "user", "content": transcript})
        return msgs

    def request_body(
        self, messages: list[dict[str, Any]], tools: dict[str, Tool], words_only: bool = False
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"model": self.model, "messages": messages, "stream": True}
        if self.max_tokens:
            body[self.max_tokens_param] = int(self.max_tokens)
        if self.temperature is not None:
            body["temperature"] = float(self.temperature)
        if tools:
            body["tools"] = [t.openai_chat() for t in tools.values()]
            if words_only:
                body["tool_choice"] = "none"
        if self.call_sid:
            body["user"] = self.call_sid
        return body

    async def reply(self, transcript: str, history: Sequence[Turn] = ()) -> AsyncGenerator[str, None]:
        self._turns += 1
        messages = self.messages(transcript, history)
        tools = self.all_tools() if self.offer_tools else {}
        said: list[str] = []
        ended = False
        async with session_scope(self.session) as session:
            for round_ in range(MAX_TOOL_ROUNDS + 1):
                state = _ReplyState()
                body = self.request_body(messages, tools, words_only=round_ == MAX_TOOL_ROUNDS)
                async for piece in self._complete(session, body, state):
                    said.append(piece)
                    yield piece
                self._last_finish = state.finish
                calls = state.calls()
                if not calls or round_ == MAX_TOOL_ROUNDS:
                    if calls:
                        log.warning(
                            "%s: tool calls past %d rounds dropped", redact(self.url), MAX_TOOL_ROUNDS
                        )
                    break
                messages.append(
                    {
                        "role": "assistant",
                        "content": "".join(state.text) or None,
                        "tool_calls": [c.to_json() for c in calls],
                    }
                )
                for call in calls:
                    self._tool_calls += 1
                    outcome = await self.use_tool(call.name, call.arguments)
                    ended |= call.name == "end_call" and outcome.ok
                    messages.append({"role": "tool", "tool_call_id": call.id, "content": outcome.for_model()})
        if ended and not said:
            said.append("Goodbye.")
            yield "Goodbye."
        self._ended = ended or says_goodbye("".join(said))

    async def _complete(
        self, session: aiohttp.ClientSession, body: dict[str, Any], state: _ReplyState
    ) -> AsyncGenerator[str, None]:
        """One request: its text pieces as they stream; its tool calls end up in ``state``."""
        where = redact(self.url)
        headers = {"Content-Type": "application/json", "Accept": "text/event-stream, application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        resp: aiohttp.ClientResponse | None = None
        try:
            resp = await self._post(session, headers, body, where)
            if resp.status == 400 and self.max_tokens and not self._param_switched:
                excerpt_ = await excerpt(resp)
                if not _refuses_param(excerpt_, self.max_tokens_param):
                    raise AgentError(f"{where} answered HTTP 400: {excerpt_}")
                resp.release()
                body[self.next_param()] = body.pop(self.max_tokens_param)
                self._switch_param(where)
                resp = await self._post(session, headers, body, where)
            if resp.status != 200:
                raise AgentError(f"{where} answered HTTP {resp.status}: {await excerpt(resp)}")
            if resp.content_type in ("application/json",):
                async for piece in self._whole(resp, state, where):
                    yield piece
            else:
                async for piece in self._stream(resp, state, where):
                    yield piece
            resp.release()
        finally:
            if resp is not None and not resp.closed and not state.complete:
                resp.close()  # abandoned, cancelled or failed: drop the connection

    def next_param(self) -> str:
        return next(p for p in MAX_TOKENS_PARAMS if p != self.max_tokens_param)

    async def _post(
        self,
        session: aiohttp.ClientSession,
        headers: dict[str, str],
        body: dict[str, Any],
        where: str,
    ) -> aiohttp.ClientResponse:
        data = orjson.dumps(body)
        try:
            async with asyncio.timeout(self.timeout_s):
                return await session.post(self.url, data=data, headers=headers)
        except TimeoutError:
            raise AgentError(f"no response from {where} within {self.timeout_s:g} s") from None
        except aiohttp.ClientError as exc:
            raise AgentError(f"cannot reach {where}: {exc.__class__.__name__}: {exc}") from None

    def _switch_param(self, where: str) -> None:
        """The endpoint refused the token limit's name: use the other one from now on."""
        old = self.max_tokens_param
        self.max_tokens_param = self.next_param()
        self._param_switched = True
        log.warning(
            "%s refuses %r; sending %r instead (set OPENAI_MAX_TOKENS_PARAM=%s)",
            where,
            old,
            self.max_tokens_param,
            self.max_tokens_param,
        )

    async def _stream(
        self, resp: aiohttp.ClientResponse, state: _ReplyState, where: str
    ) -> AsyncGenerator[str, None]:
        decoder = SSEDecoder()
        try:
            async for chunk in resp.content.iter_any():
                for event in decoder.feed(chunk):
                    for piece in state.event(event):
                        yield piece
                    if state.done:
                        break
                if state.done:
                    break
            else:
                for event in decoder.close():
                    for piece in state.event(event):
                        yield piece
        except (aiohttp.ClientError, OSError) as exc:
            raise AgentError(f"stream from {where} broke: {exc.__class__.__name__}: {exc}") from None
        if not state.done and state.finish is None:
            raise AgentError(f"stream from {where} ended before [DONE]")
        state.complete = True

    async def _whole(
        self, resp: aiohttp.ClientResponse, state: _ReplyState, where: str
    ) -> AsyncGenerator[str, None]:
        try:
            raw = await resp.content.read(MAX_EVENT_BYTES + 1)
        except (aiohttp.ClientError, OSError) as exc:
            raise AgentError(f"response from {where} broke: {exc}") from None
        if len(raw) > MAX_EVENT_BYTES:
            raise AgentError(f"response from {where} larger than {MAX_EVENT_BYTES} bytes")
        obj = _json(raw.decode("utf-8", "replace"))
        choice = _first_choice(obj)
        message = choice.get("message") if choice else None
        if choice is not None and not isinstance(message, dict):
            raise AgentError("malformed completion: choices[0].message is not an object")
        if message:
            content = message.get("content")
            if content is not None and not isinstance(content, str):
                raise AgentError("malformed completion: content is not a string")
            state.tools(message.get("tool_calls"))
            state.finish = choice.get("finish_reason") if choice else None
            if content:
                state.text.append(content)
                yield content
        state.done = state.complete = True


def _json(data: str) -> dict[str, Any]:
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError:
        short = data if len(data) <= 120 else data[:120] + "..."
        raise AgentError(f"malformed SSE/JSON data: {short!r}") from None
    if not isinstance(obj, dict):
        raise AgentError(f"malformed data: expected a JSON object, got {type(obj).__name__}")
    if obj.get("error"):
        err = obj["error"]
        msg = err.get("message") if isinstance(err, dict) else err
        raise AgentError(f"the model server reported an error: {str(msg)[:300]}")
    return obj


def _refuses_param(body: str, param: str) -> bool:
    """Whether a 400 body says ``param`` is not accepted: OpenAI's shape (``error.param``),
    or a message naming it as an unsupported or unrecognised parameter."""
    try:
        error = orjson.loads(body).get("error")
    except (orjson.JSONDecodeError, AttributeError):
        error = None  # not JSON, or cut short by the excerpt
    if isinstance(error, dict) and error.get("param") == param:
        return True
    return bool(
        re.search(
            rf"(?i)(?:unsupported parameter|unrecognized request argument supplied|unknown parameter)"
            rf"\W*{re.escape(param)}\b",
            body,
        )
    )


def _first_choice(obj: dict[str, Any]) -> dict[str, Any] | None:
    choices = obj.get("choices")
    if choices is None or choices == []:
        return None  # e.g. a final usage-only chunk
    if not isinstance(choices, list) or not isinstance(choices[0], dict):
        raise AgentError("malformed data: choices is not a list of objects")
    return choices[0]


class _ReplyState:
    """What one streamed reply has produced so far."""

    def __init__(self) -> None:
        self.text: list[str] = []
        self.done = False  # [DONE] seen
        self.complete = False  # the response was read to its end
        self.finish: str | None = None
        self._calls: dict[int, _ToolCall] = {}
        """Tool calls by slot (the order they started in)."""
        self._slots: dict[int, int] = {}
        """The server's ``index`` -> the slot of the call it is streaming."""

    def event(self, data: str) -> list[str]:
        if self.done:
            return []
        if data.strip() == "[DONE]":
            self.done = True
            return []
        try:
            objs = [_json(data)]
        except AgentError:
            lines = data.split("\n")  # tolerate events not separated by a blank line
            if len(lines) == 1:
                raise
            return [p for line in lines for p in self.event(line)]
        out: list[str] = []
        for obj in objs:
            choice = _first_choice(obj)
            if choice is None:
                continue
            delta = choice.get("delta")
            if delta is not None:
                if not isinstance(delta, dict):
                    raise AgentError("malformed SSE data: choices[0].delta is not an object")
                content = delta.get("content")
                if content is not None and not isinstance(content, str):
                    raise AgentError("malformed SSE data: delta.content is not a string")
                if content:
                    self.text.append(content)
                    out.append(content)
                self.tools(delta.get("tool_calls"))
            if choice.get("finish_reason"):
                self.finish = str(choice["finish_reason"])
        return out

    def tools(self, calls: Any) -> None:
        """Streamed tool calls arrive in fragments keyed by ``index``: the first carries the
        ``id`` and ``function.name``, later ones pieces of ``function.arguments``; a new
        ``id`` at an index already used starts another call. A whole (non-streamed)
        message's ``tool_calls`` are one fragment each."""
        if calls is None:
            return
        if not isinstance(calls, list):
            raise AgentError("malformed data: tool_calls is not a list")
        for i, call in enumerate(calls):
            if not isinstance(call, dict):
                raise AgentError("malformed data: a tool call is not an object")
            index = call.get("index", i)
            if not isinstance(index, int) or not 0 <= index < MAX_TOOL_CALLS:
                raise AgentError(
                    f"malformed data: tool call index {str(index)[:20]} (at most {MAX_TOOL_CALLS} calls)"
                )
            fn = call.get("function") or {}
            if not isinstance(fn, dict):
                raise AgentError("malformed data: a tool call's function is not an object")
            call_id, name, args = call.get("id"), fn.get("name"), fn.get("arguments")
            slot = self._slots.get(index)
            entry = self._calls.get(slot) if slot is not None else None
            if entry is None or (isinstance(call_id, str) and call_id and entry.id and call_id != entry.id):
                # a new call; a server that numbers every call 0 (Ollama) tells them apart by id
                if len(self._calls) >= MAX_TOOL_CALLS:
                    raise AgentError(f"malformed data: more than {MAX_TOOL_CALLS} tool calls")
                slot = self._slots[index] = len(self._calls)
                entry = self._calls[slot] = _ToolCall()
            if isinstance(call_id, str) and call_id:
                entry.id = call_id
            if isinstance(name, str) and name:
                entry.name = name
            if isinstance(args, str):
                entry.parts.append(args)
                entry.size += len(args)
                if entry.size > MAX_ARGS_BYTES:
                    raise AgentError(f"malformed data: tool call arguments over {MAX_ARGS_BYTES} bytes")
            elif isinstance(args, dict):  # a server that sends them parsed
                entry.parts = [orjson.dumps(args).decode()]

    def calls(self) -> list[_ToolCall]:
        """The complete tool calls, in index order; one without a name is malformed."""
        out = []
        for index in sorted(self._calls):
            call = self._calls[index]
            if not call.name:
                raise AgentError(f"malformed data: tool call {index} has no function name")
            if not call.id:
                call.id = f"call_{index}"  # servers that send none; the id only pairs our messages
            out.append(call)
        return out


class _ToolCall:
    """One tool call as it is streamed."""

    def __init__(self) -> None:
        self.id = ""
        self.name = ""
        self.parts: list[str] = []
        self.size = 0

    @property
    def arguments(self) -> str:
        return "".join(self.parts)

    def to_json(self) -> dict[str, Any]:
        """As the assistant message's ``tool_calls`` entry sent back to the model."""
        return {
            "id": self.id,
            "type": "function",
            "function": {"name": self.name, "arguments": self.arguments},
        }
