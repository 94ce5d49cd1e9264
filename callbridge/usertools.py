"""Your tools, served over HTTP at ``TOOLS_URL``: offered to every agent, signed like events.

Protocol (docs/backends.md, "Your tools over HTTP"):

- Definitions: at start-up the bridge sends ``GET TOOLS_URL`` (signed over an empty body)
  and expects ``200`` with ``{"tools": [{"name", "description", "parameters", "timeout_s"?,
  "filler"?}]}``: ``parameters`` a JSON schema of type object, ``timeout_s`` in (0, 60]
  (default 10), ``filler`` the line said when the tool runs past 1 s (default "One moment,
  please."; null: nothing). Fetched once; a failed fetch is logged and tried again at most
  once a minute, on a later call (that call goes on without them).
- Each call: ``POST TOOLS_URL`` with ``{"callSid", "name", "arguments"}`` as the raw JSON
  body, with ``X-Callbridge-Timestamp`` and ``X-Callbridge-Signature`` exactly as events
  (``callbridge.agents.signing``; keyed by ``TOOLS_SECRET``). Answer ``2xx`` with
  ``{"result": <any JSON>}``, or ``{"error": "text"}`` for a failure the model should hear
  about; any other status is a failure too (with an excerpt of the body). Redirects are
  not followed.

Limits: the definitions at most ``MAX_DEFINITIONS_BYTES`` and ``MAX_SERVED`` tools, read
within ``LOAD_TIMEOUT_S``; an answer at most ``MAX_ANSWER_BYTES`` (the result itself at most
``tools.MAX_RESULT_BYTES`` of JSON); each call within its tool's ``timeout_s``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import aiohttp
import orjson

from .agents._http import check_url, excerpt, redact, session_scope
from .agents.signing import signed_headers
from .tools import DEFAULT_TIMEOUT_S, Tool, ToolContext, toolbox

if TYPE_CHECKING:
    from .config import ToolOptions

log = logging.getLogger("callbridge.tools")

MAX_SERVED = 32
MAX_DEFINITIONS_BYTES = 256 << 10
MAX_ANSWER_BYTES = 64 << 10
MAX_TOOL_TIMEOUT_S = 60.0
LOAD_TIMEOUT_S = 5.0
RELOAD_AFTER_S = 60.0
DEFINITION_KEYS = {"name", "description", "parameters", "timeout_s", "filler"}


class ServedToolError(Exception):
    """The tools endpoint failed or answered something this protocol does not allow."""


async def _read_bounded(resp: aiohttp.ClientResponse, limit: int, what: str) -> bytes:
    if resp.content_length is not None and resp.content_length > limit:
        raise ServedToolError(f"{what} is {resp.content_length} bytes, over the {limit}-byte limit")
    raw = bytearray()
    async for chunk in resp.content.iter_any():
        raw += chunk
        if len(raw) > limit:
            raise ServedToolError(f"{what} is over the {limit}-byte limit")
    return bytes(raw)


def _json_object(raw: bytes, what: str) -> dict[str, Any]:
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise ServedToolError(f"{what} is not JSON: {raw[:80]!r}") from None
    if not isinstance(obj, dict):
        raise ServedToolError(f"{what} must be a JSON object, not {type(obj).__name__}")
    return obj


class ServedTools:
    """The tools at one ``TOOLS_URL``: ``load()`` reads their definitions; each becomes a
    ``Tool`` whose handler POSTs the call there, signed."""

    def __init__(self, url: str, secret: str, clock: Callable[[], float] = time.time) -> None:
        self.url = check_url(url, "TOOLS_URL")
        if not secret:
            raise ValueError("TOOLS_URL needs TOOLS_SECRET (tool calls are signed)")
        self.secret = secret
        self.clock = clock
        self.where = redact(url)

    async def load(self, session: aiohttp.ClientSession | None = None) -> tuple[Tool, ...]:
        """The definitions, checked; ``ServedToolError`` (or ``ValueError``) if unusable."""
        headers = {"Accept": "application/json", **signed_headers(self.secret, b"", self.clock())}
        async with session_scope(session) as s:
            try:
                async with asyncio.timeout(LOAD_TIMEOUT_S):
                    async with s.get(self.url, headers=headers, allow_redirects=False) as resp:
                        if resp.status != 200:
                            raise ServedToolError(
                                f"GET {self.where} answered HTTP {resp.status}: {await excerpt(resp)}"
                            )
                        raw = await _read_bounded(resp, MAX_DEFINITIONS_BYTES, f"GET {self.where}'s answer")
            except TimeoutError:
                raise ServedToolError(f"GET {self.where}: no answer within {LOAD_TIMEOUT_S:g} s") from None
            except aiohttp.ClientError as exc:
                raise ServedToolError(f"cannot reach {self.where}: {type(exc).__name__}: {exc}") from None
        return self.definitions(_json_object(raw, f"GET {self.where}'s answer"))

    def definitions(self, obj: dict[str, Any]) -> tuple[Tool, ...]:
        """``{"tools": [...]}`` as ``Tool``s; ``ServedToolError`` naming what is wrong."""
        listed = obj.get("tools")
        if not isinstance(listed, list):
            raise ServedToolError('the definitions must be {"tools": [...]}')
        if len(listed) > MAX_SERVED:
            raise ServedToolError(f"{len(listed)} tools: at most {MAX_SERVED}")
        tools = []
        for i, d in enumerate(listed):
            if not isinstance(d, dict):
                raise ServedToolError(f"tools[{i}] must be an object")
            unknown = sorted(set(d) - DEFINITION_KEYS)
            if unknown:
                raise ServedToolError(f"tools[{i}]: unknown field(s) {', '.join(unknown)}")
            name, description = d.get("name"), d.get("description", "")
            parameters = d.get("parameters", {"type": "object", "properties": {}})
            timeout_s, filler = d.get("timeout_s", DEFAULT_TIMEOUT_S), d.get("filler", "One moment, please.")
            if (
                not isinstance(name, str)
                or not isinstance(description, str)
                or not isinstance(parameters, dict)
            ):
                raise ServedToolError(f"tools[{i}]: name and description are strings, parameters an object")
            if not isinstance(timeout_s, (int, float)) or not 0 < timeout_s <= MAX_TOOL_TIMEOUT_S:
                raise ServedToolError(
                    f"tools[{i}] ({name}): timeout_s must be in (0, {MAX_TOOL_TIMEOUT_S:g}]"
                )
            if filler is not None and (not isinstance(filler, str) or len(filler) > 200):
                raise ServedToolError(
                    f"tools[{i}] ({name}): filler must be a string of at most 200 characters or null"
                )
            try:
                tools.append(
                    Tool(
                        name,
                        description[:1000],
                        parameters,
                        self.handler(name),
                        float(timeout_s),
                        filler or None,
                    )
                )
            except ValueError as exc:
                raise ServedToolError(f"tools[{i}]: {exc}") from None
        try:
            return tuple(toolbox(tools).values())
        except ValueError as exc:
            raise ServedToolError(str(exc)) from None

    def handler(self, name: str) -> Callable[[dict[str, Any], ToolContext], Any]:
        async def call(args: dict[str, Any], ctx: ToolContext) -> Any:
            return await self.call(name, args, ctx.call_sid)

        return call

    async def call(
        self, name: str, args: dict[str, Any], call_sid: str, session: aiohttp.ClientSession | None = None
    ) -> Any:
        """One tool call; its ``result``, or ``ServedToolError`` (the model is told)."""
        body = orjson.dumps({"callSid": call_sid, "name": name, "arguments": args})
        headers = {
            "Content-Type": "application/json",
            "Accept": "application/json",
            **signed_headers(self.secret, body, self.clock()),
        }
        async with session_scope(session) as s:
            try:
                async with s.post(self.url, data=body, headers=headers, allow_redirects=False) as resp:
                    if not 200 <= resp.status < 300:
                        raise ServedToolError(
                            f"the tool server answered HTTP {resp.status}: {await excerpt(resp)}"
                        )
                    raw = await _read_bounded(resp, MAX_ANSWER_BYTES, "the tool server's answer")
            except aiohttp.ClientError as exc:
                raise ServedToolError(f"cannot reach the tool server: {type(exc).__name__}") from None
        answer = _json_object(raw, "the tool server's answer")
        if "error" in answer and answer["error"] is not None:
            raise ServedToolError(str(answer["error"])[:300])
        if "result" not in answer:
            raise ServedToolError('the tool server must answer {"result": ...} or {"error": "..."}')
        return answer["result"]


_loaded: dict[tuple[str, str], tuple[Tool, ...]] = {}
_tried: dict[tuple[str, str], float] = {}
_loading: dict[tuple[str, str], asyncio.Task[Any]] = {}
"""The fetch in flight per endpoint (one at a time)."""


async def load_served(options: ToolOptions) -> tuple[Tool, ...]:
    """The tools at ``TOOLS_URL`` (none when it is unset), fetched once per process and
    kept; a failure is logged and leaves none (``served_tools`` tries again later)."""
    if not options.url:
        return ()
    key = (options.url, options.secret)
    if key in _loaded:
        return _loaded[key]
    _tried[key] = time.monotonic()
    try:
        tools = await ServedTools(options.url, options.secret).load()
    except (ServedToolError, ValueError) as exc:
        log.error("TOOLS_URL: no tools loaded: %s", exc)
        return ()
    _loaded[key] = tools
    log.info("TOOLS_URL: %d tool(s): %s", len(tools), ", ".join(t.name for t in tools) or "none")
    return tools


def served_tools(options: ToolOptions) -> tuple[Tool, ...]:
    """The tools loaded from ``TOOLS_URL``; if they are not (yet), another fetch is started
    in the background when the last try is ``RELOAD_AFTER_S`` old, and none is returned."""
    if not options.url:
        return ()
    key = (options.url, options.secret)
    tools = _loaded.get(key)
    if tools is not None:
        return tools
    if key not in _loading and time.monotonic() - _tried.get(key, -RELOAD_AFTER_S) >= RELOAD_AFTER_S:
        _loading[key] = task = asyncio.get_running_loop().create_task(load_served(options), name="tools-load")
        task.add_done_callback(lambda _: _loading.pop(key, None))
    return ()
