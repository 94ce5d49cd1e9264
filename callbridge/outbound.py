"""Outbound calls, the pure part (no I/O): what ``POST /calls`` accepts, and how the
call's own settings travel to the voice webhook.

A request body (JSON, at most ``MAX_BODY_BYTES``) is an object with ``to`` (E.164,
required), ``from`` (E.164; default ``TWILIO_NUMBER``), ``agent`` (the call's back end:
an ``UPSTREAM`` value), ``greeting`` (what the agent says first, at most
``MAX_GREETING_CHARS``) and ``metadata`` (a JSON object, at most ``MAX_METADATA_CHARS``
written compactly); any other field, or a value of the wrong type or size, is refused
(``DialError``, the message says which).

The call's ``agent`` (as ``upstream``), ``greeting`` and ``metadata`` (as ``call``, base64url
JSON) ride in the query of the webhook URL given to Twilio as ``Url`` (``webhook_query``):
Twilio signs the URL it requests, query
included, with the auth token, so they come back covered by ``X-Twilio-Signature`` and no
one else can forge them. The webhook reads them back (``from_query``) and hands them to
the stream as ``<Parameter>`` s (``direction=outbound``, ``greeting``, ``metadata``).
Twilio caps the length of stream parameters (error 31103, no figure published), hence the
small limits.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from .actions import E164

MAX_BODY_BYTES = 8 * 1024
MAX_GREETING_CHARS = 300
MAX_METADATA_CHARS = 512
FIELDS = ("to", "from", "agent", "greeting", "metadata")
ANSWERED_BY = (
    "human",
    "machine_start",
    "machine_end_beep",
    "machine_end_silence",
    "machine_end_other",
    "fax",
    "unknown",
)
"""The ``AnsweredBy`` values Twilio's answering-machine detection reports."""


class DialError(ValueError):
    """A ``POST /calls`` body that is refused (the message says why)."""


@dataclass(frozen=True)
class DialRequest:
    to: str
    from_: str
    agent: str | None = None
    greeting: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)


def _number(body: dict[str, Any], key: str, default: str) -> str:
    value = body.get(key, default)
    if not isinstance(value, str) or not value:
        if key == "from":
            raise DialError("from: no caller id: give one or set TWILIO_NUMBER")
        raise DialError(f"{key}: required, an E.164 number such as +15551234567")
    if not E164.match(value):
        raise DialError(f"{key}: {value[:40]!r} is not an E.164 number (+15551234567)")
    return value


def parse_dial(raw: bytes, default_from: str, agents: tuple[str, ...]) -> DialRequest:
    """The call ``raw`` (a request body) asks for; ``DialError`` if it is refused.
    ``agents``: the back ends a call may name."""
    if len(raw) > MAX_BODY_BYTES:
        raise DialError(f"body larger than {MAX_BODY_BYTES} bytes")
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise DialError("body is not JSON") from None
    if not isinstance(body, dict):
        raise DialError("body must be a JSON object")
    unknown = sorted(set(body) - set(FIELDS))
    if unknown:
        raise DialError(f"unknown field(s): {', '.join(k[:40] for k in unknown[:5])}")
    to = _number(body, "to", "")
    from_ = _number(body, "from", default_from)
    agent = body.get("agent")
    if agent is not None and (not isinstance(agent, str) or agent not in agents):
        raise DialError(f"agent must be one of {', '.join(agents)}")
    greeting = body.get("greeting", "")
    if not isinstance(greeting, str) or len(greeting) > MAX_GREETING_CHARS:
        raise DialError(f"greeting must be a string of at most {MAX_GREETING_CHARS} characters")
    metadata = body.get("metadata", {})
    if not isinstance(metadata, dict):
        raise DialError("metadata must be a JSON object")
    if len(compact(metadata)) > MAX_METADATA_CHARS:
        raise DialError(f"metadata larger than {MAX_METADATA_CHARS} characters of JSON")
    return DialRequest(to, from_, agent, greeting.strip(), metadata)


def compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def webhook_query(dial: DialRequest) -> str:
    """The query (with its ``?``) of the webhook URL Twilio is given for ``dial``: the
    greeting and metadata as one base64url JSON value, ``call`` (nothing in it that a URL
    library could re-encode differently from what was signed)."""
    query = {"outbound": "1"}
    if dial.agent:
        query["upstream"] = dial.agent
    own = {k: v for k, v in (("greeting", dial.greeting), ("metadata", dial.metadata)) if v}
    if own:
        query["call"] = base64.urlsafe_b64encode(compact(own).encode()).decode().rstrip("=")
    return "?" + urlencode(query)


MAX_CALL_CHARS = 4 * (MAX_GREETING_CHARS * 4 + MAX_METADATA_CHARS * 4 + 64) // 3


def stream_parameters(query: dict[str, str]) -> dict[str, str]:
    """The ``<Parameter>`` s of an outbound call's stream, from its (signed) webhook query;
    ``DialError`` for a ``call`` value that ``webhook_query`` would not have written."""
    out = {"direction": "outbound"}
    packed = query.get("call", "")
    if not packed:
        return out
    try:
        if len(packed) > MAX_CALL_CHARS:
            raise ValueError("too long")
        own = json.loads(base64.urlsafe_b64decode(packed + "=" * (-len(packed) % 4)))
        greeting, metadata = own.get("greeting", ""), own.get("metadata", {})
        if not isinstance(greeting, str) or not isinstance(metadata, dict):
            raise ValueError("wrong types")
    except (ValueError, AttributeError, UnicodeDecodeError):
        raise DialError("malformed call parameters") from None
    if len(greeting) > MAX_GREETING_CHARS or len(compact(metadata)) > MAX_METADATA_CHARS:
        raise DialError("greeting or metadata too long")
    if greeting:
        out["greeting"] = greeting
    if metadata:
        out["metadata"] = compact(metadata)
    return out
