"""What the OpenAI Realtime API (GA interface) accepts in ``session.update``, for the fake in
tests/remote_fakes.py: ``check_session(session)`` returns the ``error`` object the API
would send (unknown parameter, wrong type, value out of range), or None.

From the GA reference: a ``realtime`` session has ``type``, ``model``,
``output_modalities``, ``instructions``, ``audio.input`` (``format``, ``transcription``,
``noise_reduction``, ``turn_detection``), ``audio.output`` (``format``, ``voice``,
``speed``), ``tools``, ``tool_choice``, ``max_output_tokens``, ``tracing``, ``truncation``,
``prompt``, ``include``. A tool is ``{"type": "function", "name", "description",
``"parameters"}`` (a JSON schema object); ``tool_choice`` is ``auto``, ``none``,
``required`` or ``{"type": "function", "name"}`` of an offered tool. Audio formats are ``{"type": "audio/pcm", "rate": 24000}``,
``{"type": "audio/pcmu"}`` and ``{"type": "audio/pcma"}`` (the beta strings such as
``g711_ulaw`` are refused). ``turn_detection`` is null, ``server_vad`` (``threshold``,
``prefix_padding_ms``, ``silence_duration_ms``, ``create_response``,
``interrupt_response``, ``idle_timeout_ms``) or ``semantic_vad`` (``eagerness``,
``create_response``, ``interrupt_response``).
"""

from __future__ import annotations

import re
from typing import Any, cast

SESSION_KEYS = {
    "type",
    "model",
    "output_modalities",
    "instructions",
    "audio",
    "tools",
    "tool_choice",
    "max_output_tokens",
    "tracing",
    "truncation",
    "prompt",
    "include",
}
MAX_TOOLS = 128
TOOL_NAME = re.compile(r"[a-zA-Z0-9_-]{1,64}")
FORMATS = ("audio/pcm", "audio/pcmu", "audio/pcma")
SERVER_VAD_KEYS = {
    "type",
    "threshold",
    "prefix_padding_ms",
    "silence_duration_ms",
    "create_response",
    "interrupt_response",
    "idle_timeout_ms",
}
SEMANTIC_VAD_KEYS = {"type", "eagerness", "create_response", "interrupt_response"}
DEFAULT_TURN_DETECTION = {
    "type": "server_vad",
    "threshold": 0.5,
    "prefix_padding_ms": 300,
    "silence_duration_ms": 500,
    "create_response": True,
    "interrupt_response": True,
}


class Refused(Exception):
    """One refusal: ``error`` is the API's error object."""

    def __init__(self, param: str, message: str, code: str) -> None:
        super().__init__(message)
        self.error = {"type": "invalid_request_error", "code": code, "message": message, "param": param}


def check_session(session: Any) -> dict[str, Any] | None:
    """The ``error`` object the API answers to this ``session.update``'s session, or None."""
    try:
        _session(session)
    except Refused as refused:
        return refused.error
    return None


def _object(value: Any, path: str, keys: set[str]) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise Refused(
            path,
            f"Invalid type for '{path}': expected an object, but got {type(value).__name__} instead.",
            "invalid_type",
        )
    for key in value:
        if key not in keys:
            raise Refused(f"{path}.{key}", f"Unknown parameter: '{path}.{key}'.", "unknown_parameter")
    return value


def _one_of(value: Any, path: str, allowed: tuple[Any, ...]) -> None:
    if value not in allowed:
        raise Refused(
            path,
            f"Invalid value: '{value}'. Supported values are: " + ", ".join(f"'{a}'" for a in allowed) + ".",
            "invalid_value",
        )


def _typed(
    value: Any, path: str, kind: type | tuple[type, ...], low: float | None = None, high: float | None = None
) -> None:
    if (isinstance(value, bool) and kind is not bool) or not isinstance(value, kind):
        raise Refused(path, f"Invalid type for '{path}'.", "invalid_type")
    number = cast(float, value)  # bounds come with a numeric kind
    if low is not None and number < low:
        raise Refused(
            path,
            f"Invalid '{path}': expected a value >= {low}, but got {value} instead.",
            "integer_below_min_value" if isinstance(value, int) else "decimal_below_min_value",
        )
    if high is not None and number > high:
        raise Refused(
            path,
            f"Invalid '{path}': expected a value <= {high}, but got {value} instead.",
            "integer_above_max_value" if isinstance(value, int) else "decimal_above_max_value",
        )


def _session(session: Any) -> None:
    s = _object(session, "session", SESSION_KEYS)
    if "type" not in s:
        raise Refused(
            "session.type", "Missing required parameter: 'session.type'.", "missing_required_parameter"
        )
    _one_of(s["type"], "session.type", ("realtime", "transcription"))
    if s["type"] != "realtime":
        raise Refused(
            "session.type",
            "Passing a transcription session update event to a realtime session is not allowed.",
            "invalid_value",
        )
    for key in ("model", "instructions"):
        if key in s:
            _typed(s[key], f"session.{key}", str)
    if "output_modalities" in s:
        mods = s["output_modalities"]
        if not isinstance(mods, list) or len(mods) != 1:
            raise Refused(
                "session.output_modalities",
                "Invalid 'session.output_modalities': expected one of ['audio'] or ['text'].",
                "invalid_value",
            )
        _one_of(mods[0], "session.output_modalities[0]", ("audio", "text"))
    if "audio" in s:
        audio = _object(s["audio"], "session.audio", {"input", "output"})
        if "input" in audio:
            _input(
                _object(
                    audio["input"],
                    "session.audio.input",
                    {"format", "transcription", "noise_reduction", "turn_detection"},
                )
            )
        if "output" in audio:
            out = _object(audio["output"], "session.audio.output", {"format", "voice", "speed"})
            if "format" in out:
                _format(out["format"], "session.audio.output.format")
            if "voice" in out:
                _typed(out["voice"], "session.audio.output.voice", str)
            if "speed" in out:
                _typed(out["speed"], "session.audio.output.speed", (int, float), 0.25, 1.5)
    if "tools" in s:
        if not isinstance(s["tools"], list):
            raise Refused(
                "session.tools", "Invalid type for 'session.tools': expected an array.", "invalid_type"
            )
        if len(s["tools"]) > MAX_TOOLS:
            raise Refused(
                "session.tools",
                f"Invalid 'session.tools': array too long. Expected an array with maximum length {MAX_TOOLS}.",
                "array_above_max_length",
            )
        names: set[str] = set()
        for i, tool in enumerate(s["tools"]):
            _tool(tool, f"session.tools[{i}]", names)
    if "tool_choice" in s:
        _tool_choice(s["tool_choice"], names if "tools" in s else None)
    if "max_output_tokens" in s and s["max_output_tokens"] != "inf":
        _typed(s["max_output_tokens"], "session.max_output_tokens", int, 1, 4096)


def _tool(tool: Any, path: str, names: set[str]) -> None:
    """A function tool: ``type`` function, a ``name`` of 1-64 ``[a-zA-Z0-9_-]`` (unique),
    an optional string ``description``, ``parameters`` a JSON schema object."""
    t = _object(tool, path, {"type", "name", "description", "parameters"})
    _one_of(t.get("type"), f"{path}.type", ("function",))
    if "name" not in t:
        raise Refused(
            f"{path}.name", f"Missing required parameter: '{path}.name'.", "missing_required_parameter"
        )
    _typed(t["name"], f"{path}.name", str)
    if not TOOL_NAME.fullmatch(t["name"]):
        raise Refused(
            f"{path}.name",
            f"Invalid '{path}.name': string does not match pattern. Expected a string that matches "
            "the pattern '^[a-zA-Z0-9_-]+$' of at most 64 characters.",
            "invalid_value",
        )
    if t["name"] in names:
        raise Refused(f"{path}.name", f"Duplicate tool name: '{t['name']}'.", "invalid_value")
    names.add(t["name"])
    if "description" in t:
        _typed(t["description"], f"{path}.description", str)
    if "parameters" in t:
        params = t["parameters"]
        if not isinstance(params, dict):
            raise Refused(
                f"{path}.parameters",
                f"Invalid type for '{path}.parameters': expected an object.",
                "invalid_type",
            )
        if params.get("type") != "object":
            raise Refused(
                f"{path}.parameters",
                f"Invalid schema for function '{t['name']}': schema must be a JSON Schema of 'type: \"object\"'.",
                "invalid_function_parameters",
            )


def _tool_choice(choice: Any, names: set[str] | None) -> None:
    path = "session.tool_choice"
    if not isinstance(choice, dict):
        _one_of(choice, path, ("auto", "none", "required"))
        return
    c = _object(choice, path, {"type", "name"})
    _one_of(c.get("type"), f"{path}.type", ("function",))
    _typed(c.get("name"), f"{path}.name", str)
    if names is not None and c["name"] not in names:
        raise Refused(f"{path}.name", f"Tool '{c['name']}' not found in 'session.tools'.", "invalid_value")


def _format(value: Any, path: str) -> None:
    fmt = _object(value, path, {"type", "rate"})
    _one_of(fmt.get("type"), f"{path}.type", FORMATS)
    if "rate" in fmt:
        if fmt["type"] != "audio/pcm":
            raise Refused(f"{path}.rate", f"Unknown parameter: '{path}.rate'.", "unknown_parameter")
        _one_of(fmt["rate"], f"{path}.rate", (24000,))


def _input(audio_in: dict[str, Any]) -> None:
    path = "session.audio.input"
    if "format" in audio_in:
        _format(audio_in["format"], f"{path}.format")
    if audio_in.get("transcription") is not None:
        tr = _object(audio_in["transcription"], f"{path}.transcription", {"model", "language", "prompt"})
        for key, value in tr.items():
            _typed(value, f"{path}.transcription.{key}", str)
    if audio_in.get("noise_reduction") is not None:
        nr = _object(audio_in["noise_reduction"], f"{path}.noise_reduction", {"type"})
        _one_of(nr.get("type"), f"{path}.noise_reduction.type", ("near_field", "far_field"))
    if audio_in.get("turn_detection") is not None:
        _turn_detection(audio_in["turn_detection"], f"{path}.turn_detection")


def _turn_detection(value: Any, path: str) -> None:
    if not isinstance(value, dict):
        raise Refused(path, f"Invalid type for '{path}': expected an object or null.", "invalid_type")
    _one_of(value.get("type"), f"{path}.type", ("server_vad", "semantic_vad"))
    td = _object(value, path, SERVER_VAD_KEYS if value["type"] == "server_vad" else SEMANTIC_VAD_KEYS)
    if "threshold" in td:
        _typed(td["threshold"], f"{path}.threshold", (int, float), 0.0, 1.0)
    for key in ("prefix_padding_ms", "silence_duration_ms", "idle_timeout_ms"):
        if key in td and not (key == "idle_timeout_ms" and td[key] is None):
            _typed(td[key], f"{path}.{key}", int, 0)
    for key in ("create_response", "interrupt_response"):
        if key in td:
            _typed(td[key], f"{path}.{key}", bool)
    if "eagerness" in td:
        _one_of(td["eagerness"], f"{path}.eagerness", ("low", "medium", "high", "auto"))


def merged(current: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """The session after an accepted update: objects merged key by key, the rest replaced
    (``turn_detection: null`` turns it off)."""
    out = dict(current)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict) and key != "format":
            out[key] = merged(out[key], value)
        else:
            out[key] = value
    return out


def turn_detection(session: dict[str, Any]) -> dict[str, Any] | None:
    """The turn detection in force (the API's defaults filled in), or None when off."""
    td = session.get("audio", {}).get("input", {}).get("turn_detection", DEFAULT_TURN_DETECTION)
    if td is None:
        return None
    defaults = (
        DEFAULT_TURN_DETECTION
        if td.get("type") == "server_vad"
        else {"create_response": True, "interrupt_response": True}
    )
    return {**defaults, **td}
