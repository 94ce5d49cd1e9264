"""Configuration: environment variables, overridden by command-line flags.

Every setting is listed here once, with its variable, default and meaning; the README's
configuration table is generated from ``SETTINGS`` (``python run.py config``).
A value that does not parse raises ``ConfigError`` naming the variable.
"""

from __future__ import annotations

import json
import os
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from . import eventloop
from .agents.openai_chat import MAX_TOKENS_PARAMS
from .gateway.vapi_auth import auth_from


class ConfigError(ValueError):
    pass


def _bool(text: str) -> bool:
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"not a boolean: {text!r}")


@dataclass(frozen=True)
class Settings:
    host: str = field(
        default="127.0.0.1", metadata={"env": "HOST", "flag": "--host", "doc": "Address to listen on."}
    )
    port: int = field(
        default=8080,
        metadata={"env": "PORT", "flag": "--port", "doc": "TCP port to listen on (0 picks a free one)."},
    )
    mode: str = field(
        default="dev",
        metadata={
            "env": "MODE",
            "flag": "--mode",
            "doc": "`dev`: one process. `prod`: a thespian actor system with one gateway shard process per worker on the shared port, supervised; calls survive a shard's death.",
        },
    )
    workers: int = field(
        default=0,
        metadata={
            "env": "WORKERS",
            "flag": "--workers",
            "doc": "`prod`: gateway shard processes on this node (0: one per core).",
        },
    )
    admin_port: int = field(
        default=1900,
        metadata={
            "env": "ADMIN_PORT",
            "flag": "--admin-port",
            "doc": "`prod`: thespian admin port of this node's actor system (each node, or each system on one host, its own).",
        },
    )
    leader: str = field(
        default="",
        metadata={
            "env": "LEADER",
            "flag": "--leader",
            "doc": "`prod`: `host:admin_port` of the leader node; set on member nodes only (unset: this node leads and runs the pool supervisor).",
        },
    )
    node_name: str = field(
        default="",
        metadata={
            "env": "NODE_NAME",
            "flag": "--node",
            "doc": "`prod`: this node's name in placement and health (default: the host name).",
        },
    )
    actor_bind: str = field(
        default="127.0.0.1",
        metadata={
            "env": "THESPIAN_BASE_IPADDR",
            "doc": "`prod`: address thespian's sockets use. They accept pickles: keep it on a private network, never a public interface.",
        },
    )
    event_loop: str = field(
        default="auto",
        metadata={
            "env": "EVENT_LOOP",
            "doc": "The asyncio event loop of every serving process: `uvloop` (libuv: 7-9% less server CPU at 300 calls, see `bench/load.py` in the README), `asyncio` (the standard library's), or `auto`: uvloop where it is installed (a dependency except on Windows).",
        },
    )
    drain_s: float = field(
        default=30.0,
        metadata={
            "env": "DRAIN_S",
            "doc": "`prod`: on SIGTERM, how long running calls may go on before they are handed over (resumed elsewhere) and the node exits.",
        },
    )
    public_url: str = field(
        default="",
        metadata={
            "env": "PUBLIC_URL",
            "doc": "Public base URL Twilio uses, e.g. `https://voice.example.com`, or with a path prefix that the proxy strips, e.g. `https://example.com/voice-bridge` (every URL the gateway advertises or checks a signature over keeps the prefix; the gateway itself serves at `/`). Unset: taken from each request's Host header (dev only).",
        },
    )
    trust_proxy: bool = field(
        default=False,
        metadata={
            "env": "TRUST_PROXY",
            "doc": "Honour `X-Forwarded-Proto` (`https`/`wss` or `http`/`ws`) and `X-Forwarded-Host` when rebuilding the public URL, and `X-Forwarded-For` for per-source limits (set behind a TLS-terminating proxy).",
        },
    )
    twilio_auth_token: str = field(
        default="",
        metadata={
            "env": "TWILIO_AUTH_TOKEN",
            "doc": "Validates `X-Twilio-Signature` on the webhook and the stream handshake. Unset: dev mode skips the checks and warns at start.",
            "secret": True,
        },
    )
    twilio_shared_key: str = field(
        default="",
        metadata={
            "env": "TWILIO_SHARED_KEY",
            "doc": "The secret of a Twilio SharedKey (Webhook Settings, public beta; two comma-separated during a rotation): a request carrying `X-Twilio-Webhooks-Signature-Settings` is checked with it and the algorithm it names (`HMAC_SHA1`, `HMAC_SHA256`); requests without that header still need `TWILIO_AUTH_TOKEN`.",
            "secret": True,
        },
    )
    twilio_account_sid: str = field(
        default="",
        metadata={
            "env": "TWILIO_ACCOUNT_SID",
            "doc": "With `TWILIO_AUTH_TOKEN`: calls the agent (or a failure) ends are also completed through Twilio's REST API, and `TWILIO_NUMBER` can be pointed here at start.",
        },
    )
    twilio_number: str = field(
        default="",
        metadata={
            "env": "TWILIO_NUMBER",
            "doc": "A number of the account (E.164, e.g. `+15551234567`): at start its Voice URL is set to `{PUBLIC_URL}/voice/inbound` (needs `PUBLIC_URL` and `TWILIO_ACCOUNT_SID`).",
        },
    )
    twilio_api_url: str = field(
        default="https://api.twilio.com",
        metadata={
            "env": "TWILIO_API_URL",
            "doc": "Base of Twilio's REST API (tests point it at a local server).",
        },
    )
    secret: str = field(
        default="",
        metadata={
            "env": "CALLBRIDGE_SECRET",
            "doc": "HMAC key for stream tokens. Unset: derived from `TWILIO_AUTH_TOKEN`, else random per process.",
            "secret": True,
        },
    )
    stream_token_ttl_s: float = field(
        default=120.0,
        metadata={
            "env": "STREAM_TOKEN_TTL_S",
            "doc": "Seconds a stream token stays valid after the webhook answered.",
        },
    )
    webhook_rate: float = field(
        default=20.0,
        metadata={
            "env": "WEBHOOK_RATE",
            "doc": "Webhook requests per second per source address (a token bucket; with `TRUST_PROXY` the address the proxy saw); past it 429 with `Retry-After`. 0: no limit.",
        },
    )
    webhook_burst: int = field(
        default=100,
        metadata={
            "env": "WEBHOOK_BURST",
            "doc": "Webhook requests a source may send at once before `WEBHOOK_RATE` applies.",
        },
    )
    max_calls: int = field(
        default=500,
        metadata={
            "env": "MAX_CALLS",
            "flag": "--max-calls",
            "doc": 'Live calls per process (per shard in `prod`); past it the webhook answers a spoken "busy" and `<Hangup/>` (resumed calls are always taken). 0: no limit.',
        },
    )
    max_sockets_per_source: int = field(
        default=200,
        metadata={
            "env": "MAX_SOCKETS_PER_SOURCE",
            "doc": "Open media sockets per source address; past it the handshake gets 429. Twilio streams from a few addresses: size it to your peak calls. 0: no limit.",
        },
    )
    start_timeout_s: float = field(
        default=10.0,
        metadata={
            "env": "START_TIMEOUT_S",
            "doc": "A media socket must send `start` within this many seconds of the handshake (close 1008).",
        },
    )
    stream_idle_s: float = field(
        default=15.0,
        metadata={
            "env": "STREAM_IDLE_S",
            "doc": "A live stream with no message for this long (Twilio sends one every 20 ms) is dropped as vanished; the call stays resumable.",
        },
    )
    send_stall_s: float = field(
        default=5.0,
        metadata={
            "env": "SEND_STALL_S",
            "doc": "A peer that takes no outbound data for this long (its socket buffers full) is dropped.",
        },
    )
    inbound_rate: float = field(
        default=3.0,
        metadata={
            "env": "INBOUND_RATE",
            "doc": "Inbound audio per call, sustained, in multiples of real time (each message counts at least 20 ms); past it the socket closes with 1008. 0: no limit.",
        },
    )
    inbound_burst_s: float = field(
        default=2.0,
        metadata={
            "env": "INBOUND_BURST_S",
            "doc": "Seconds of audio a call may send at once above `INBOUND_RATE` (a mobile line catching up after a stall).",
        },
    )
    greeting: str = field(
        default="Hello, and thanks for calling. How can I help you today?",
        metadata={"env": "GREETING", "doc": "What the agent says when the call connects."},
    )
    tts_voice: str = field(
        default="en-us", metadata={"env": "TTS_VOICE", "doc": "espeak-ng voice of the embedded agent."}
    )
    tts_rate_wpm: int = field(
        default=165,
        metadata={"env": "TTS_RATE_WPM", "doc": "Speaking rate of the embedded voice, words per minute."},
    )
    agent: str = field(
        default="desk",
        metadata={
            "env": "AGENT",
            "doc": "The embedded pipeline's agent: `desk` (offline appointment desk), `openai` (any OpenAI-compatible chat endpoint), `webhook` (your URL answers each turn).",
        },
    )
    openai_base_url: str = field(
        default="http://127.0.0.1:8000/v1",
        metadata={
            "env": "OPENAI_BASE_URL",
            "doc": "`AGENT=openai`: base URL of the chat-completions API (llama.cpp, vLLM, Ollama, OpenAI).",
        },
    )
    openai_model: str = field(
        default="local", metadata={"env": "OPENAI_MODEL", "doc": "`AGENT=openai`: model name."}
    )
    openai_api_key: str = field(
        default="",
        metadata={
            "env": "OPENAI_API_KEY",
            "doc": "`AGENT=openai`: bearer key, if the endpoint needs one; also `UPSTREAM=openai-realtime`'s key (required there: `serve` refuses to start without it).",
            "secret": True,
        },
    )
    openai_max_tokens: int = field(
        default=300,
        metadata={
            "env": "OPENAI_MAX_TOKENS",
            "doc": "`AGENT=openai`: most tokens in one reply (0: no limit sent).",
        },
    )
    openai_max_tokens_param: str = field(
        default="max_completion_tokens",
        metadata={
            "env": "OPENAI_MAX_TOKENS_PARAM",
            "doc": "`AGENT=openai`: the request field that carries `OPENAI_MAX_TOKENS`: `max_completion_tokens` (OpenAI; its o-series and GPT-5 models refuse the deprecated `max_tokens`) or `max_tokens` (servers that know only the old name). A 400 naming the one sent as unsupported switches to the other for the rest of the call.",
        },
    )
    agent_webhook_url: str = field(
        default="",
        metadata={
            "env": "AGENT_WEBHOOK_URL",
            "doc": "`AGENT=webhook`: URL that gets each turn as JSON and answers the text to speak.",
        },
    )
    agent_webhook_secret: str = field(
        default="",
        metadata={
            "env": "AGENT_WEBHOOK_SECRET",
            "doc": "`AGENT=webhook`: signs each turn (HMAC-SHA256, timestamped) when set.",
            "secret": True,
        },
    )
    agent_timeout_s: float = field(
        default=5.0,
        metadata={
            "env": "AGENT_TIMEOUT_S",
            "doc": "Agent reply timeout (for each piece of a reply); then a spoken fallback and retries after the pauses of `UPSTREAM_RETRIES_S`; after that the call ends politely.",
        },
    )
    upstream: str = field(
        default="embedded",
        metadata={
            "env": "UPSTREAM",
            "doc": "The call's voice-AI back end: `embedded` (offline pipeline), `vapi` (Vapi WebSocket transport), `openai-realtime` (OpenAI Realtime, mu-law end to end), `echo` (the caller's audio straight back: the bridge's own cost, for load tests). A call may choose another with the stream parameter `upstream` (webhook query `?upstream=`).",
        },
    )
    upstream_timeout_s: float = field(
        default=10.0,
        metadata={
            "env": "UPSTREAM_TIMEOUT_S",
            "doc": "Remote back ends: limit for each request (call creation, connect, session ready); a dead socket is noticed within it too (1-60).",
        },
    )
    upstream_retries_s: str = field(
        default="1,2,4",
        metadata={
            "env": "UPSTREAM_RETRIES_S",
            "doc": "Pauses before each retry after a mid-call failure (a remote back end reconnecting, the embedded agent's turn); a filler is spoken meanwhile; after the last, an apology and hang-up.",
        },
    )
    upstream_buffer_bytes: int = field(
        default=5_000_000,
        metadata={
            "env": "UPSTREAM_BUFFER_BYTES",
            "doc": "Remote back ends: caller audio held while the remote is not ready (cold start, reconnect); past it the oldest is dropped and counted (64 KB-64 MB).",
        },
    )
    vapi_api_url: str = field(
        default="https://api.vapi.ai",
        metadata={
            "env": "VAPI_API_URL",
            "doc": "`UPSTREAM=vapi`: API base; calls are created with `POST {VAPI_API_URL}/call`.",
        },
    )
    vapi_api_key: str = field(
        default="",
        metadata={"env": "VAPI_API_KEY", "doc": "`UPSTREAM=vapi`: private API key (bearer).", "secret": True},
    )
    vapi_assistant_id: str = field(
        default="",
        metadata={
            "env": "VAPI_ASSISTANT_ID",
            "doc": "`UPSTREAM=vapi`: the assistant that answers (or `VAPI_ASSISTANT`).",
        },
    )
    vapi_assistant: str = field(
        default="",
        metadata={
            "env": "VAPI_ASSISTANT",
            "doc": "`UPSTREAM=vapi`: an inline assistant, as JSON, used when `VAPI_ASSISTANT_ID` is unset.",
        },
    )
    vapi_audio: str = field(
        default="pcm_s16le",
        metadata={
            "env": "VAPI_AUDIO",
            "doc": "`UPSTREAM=vapi`: audio on the transport: `pcm_s16le` (16 kHz; the Codec resamples) or `mulaw` (8 kHz, Twilio's bytes passed through untouched).",
        },
    )
    vapi_webhook_secret: str = field(
        default="",
        metadata={
            "env": "VAPI_WEBHOOK_SECRET",
            "doc": "Authenticates `POST /webhook/vapi` (Vapi's server URL). Unset: that route refuses everything.",
            "secret": True,
        },
    )
    vapi_webhook_auth: str = field(
        default="bearer",
        metadata={
            "env": "VAPI_WEBHOOK_AUTH",
            "doc": "How Vapi's server-URL requests are authenticated, as the assistant's server credential is set: `bearer` (Vapi's default: `VAPI_WEBHOOK_BEARER_HEADER` carries `Bearer <VAPI_WEBHOOK_SECRET>`), `secret` (legacy: header `X-Vapi-Secret` carries the secret), `hmac` (a signature, `VAPI_WEBHOOK_HMAC_*`). All: replays and messages older than 300 s refused.",
        },
    )
    vapi_webhook_bearer_header: str = field(
        default="Authorization",
        metadata={"env": "VAPI_WEBHOOK_BEARER_HEADER", "doc": "`bearer`: the credential's header name."},
    )
    vapi_webhook_bearer_prefix: bool = field(
        default=True,
        metadata={
            "env": "VAPI_WEBHOOK_BEARER_PREFIX",
            "doc": '`bearer`: whether the token is prefixed with `Bearer ` (the credential\'s "Include Bearer Prefix").',
        },
    )
    vapi_webhook_hmac_algorithm: str = field(
        default="sha256",
        metadata={"env": "VAPI_WEBHOOK_HMAC_ALGORITHM", "doc": "`hmac`: `sha256`, `sha512` or `sha1`."},
    )
    vapi_webhook_hmac_encoding: str = field(
        default="hex",
        metadata={
            "env": "VAPI_WEBHOOK_HMAC_ENCODING",
            "doc": "`hmac`: the signature's encoding, `hex` or `base64`.",
        },
    )
    vapi_webhook_hmac_signature_header: str = field(
        default="x-signature",
        metadata={
            "env": "VAPI_WEBHOOK_HMAC_SIGNATURE_HEADER",
            "doc": "`hmac`: the header carrying the signature.",
        },
    )
    vapi_webhook_hmac_prefix: str = field(
        default="",
        metadata={
            "env": "VAPI_WEBHOOK_HMAC_PREFIX",
            "doc": "`hmac`: text before the signature, e.g. `sha256=`.",
        },
    )
    vapi_webhook_hmac_timestamp_header: str = field(
        default="x-timestamp",
        metadata={
            "env": "VAPI_WEBHOOK_HMAC_TIMESTAMP_HEADER",
            "doc": "`hmac`: the header carrying the signed timestamp (unix seconds or milliseconds).",
        },
    )
    vapi_webhook_hmac_include_timestamp: bool = field(
        default=True,
        metadata={
            "env": "VAPI_WEBHOOK_HMAC_INCLUDE_TIMESTAMP",
            "doc": "`hmac`: whether a timestamp is signed (then it must be within 300 s of now).",
        },
    )
    vapi_webhook_hmac_payload: str = field(
        default="",
        metadata={
            "env": "VAPI_WEBHOOK_HMAC_PAYLOAD",
            "doc": "`hmac`: what is signed, with `{body}`, `{timestamp}`, `{method}`, `{url}`, `{svix-id}`. Unset: Vapi's default, `{timestamp}.{body}` (`{body}` without a timestamp).",
        },
    )
    vapi_webhook_hmac_message_id_header: str = field(
        default="",
        metadata={
            "env": "VAPI_WEBHOOK_HMAC_MESSAGE_ID_HEADER",
            "doc": "`hmac`: the header carrying the message id signed as `{svix-id}`.",
        },
    )
    vapi_webhook_hmac_secret_base64: bool = field(
        default=False,
        metadata={
            "env": "VAPI_WEBHOOK_HMAC_SECRET_BASE64",
            "doc": "`hmac`: the secret is base64 and is decoded to get the key.",
        },
    )
    openai_realtime_url: str = field(
        default="wss://api.openai.com/v1/realtime",
        metadata={
            "env": "OPENAI_REALTIME_URL",
            "doc": "`UPSTREAM=openai-realtime`: WebSocket endpoint (`?model=` is added); the key is `OPENAI_API_KEY`.",
        },
    )
    openai_realtime_model: str = field(
        default="gpt-realtime",
        metadata={"env": "OPENAI_REALTIME_MODEL", "doc": "`UPSTREAM=openai-realtime`: model."},
    )
    openai_realtime_voice: str = field(
        default="marin",
        metadata={"env": "OPENAI_REALTIME_VOICE", "doc": "`UPSTREAM=openai-realtime`: voice."},
    )
    endpoint_silence_ms: int = field(
        default=500,
        metadata={
            "env": "ENDPOINT_SILENCE_MS",
            "doc": "Silence that ends the caller's turn (users tune 300-800).",
        },
    )
    min_speech_ms: int = field(
        default=200,
        metadata={
            "env": "MIN_SPEECH_MS",
            "doc": "Caller speech must be sustained this long to start a turn or barge in over the agent (coughs, slams and barks are shorter).",
        },
    )
    jitter_min_ms: int = field(
        default=20,
        metadata={
            "env": "JITTER_MIN_MS",
            "doc": "Least playout depth of the inbound jitter buffer; it grows with the line's jitter (20-1000).",
        },
    )
    stt_decoders: int = field(
        default=2,
        metadata={
            "env": "STT_DECODERS",
            "doc": "Speech-recognition decoders shared by all calls of a process (1-16).",
        },
    )
    events_url: str = field(
        default="",
        metadata={
            "env": "EVENTS_URL",
            "doc": "POST `call.started`, `transcript.final`, `agent.reply`, `call.ended` here as signed JSON.",
        },
    )
    events_secret: str = field(
        default="",
        metadata={
            "env": "EVENTS_SECRET",
            "doc": "HMAC-SHA256 key for `EVENTS_URL` (required with it).",
            "secret": True,
        },
    )
    outbound_lead_ms: int = field(
        default=200,
        metadata={
            "env": "OUTBOUND_LEAD_MS",
            "doc": "How far ahead of real time agent audio is sent to Twilio (20-2000).",
        },
    )
    call_history: int = field(
        default=200,
        metadata={
            "env": "CALL_HISTORY",
            "doc": "Ended calls kept for `GET /calls/{callSid}` and the console.",
        },
    )
    console_token: str = field(
        default="",
        metadata={
            "env": "CONSOLE_TOKEN",
            "doc": "Bearer token for the console, `/calls` and `/metrics` (browsers sign in once: a cookie). Unset: open to loopback peers in dev mode, refused in prod.",
            "secret": True,
        },
    )
    fault_injection: bool = field(
        default=False,
        metadata={
            "env": "FAULT_INJECTION",
            "doc": "Enable `POST /calls/{callSid}/fault?child=ROLE` (ROLE: a child actor, or `socket` to drop the stream) for tests and chaos drills; warns at start.",
        },
    )
    check_messages: bool = field(
        default=False,
        metadata={
            "env": "CHECK_MESSAGES",
            "doc": "Round-trip every actor message through msgpack (tests; costs CPU).",
        },
    )
    log_level: str = field(default="INFO", metadata={"env": "LOG_LEVEL", "doc": "Python logging level."})
    log_format: str = field(
        default="auto",
        metadata={
            "env": "LOG_FORMAT",
            "doc": "`json` (one object per line, with callSid and streamSid), `text`, or `auto`: text in dev mode, JSON in prod.",
        },
    )

    def __post_init__(self) -> None:
        # "https://h/" and "https://h" are one public URL: every route is appended to it.
        object.__setattr__(self, "public_url", self.public_url.rstrip("/"))
        if self.mode not in ("dev", "prod"):
            raise ConfigError(f"MODE must be dev or prod, not {self.mode!r}")
        if self.event_loop not in ("auto", "uvloop", "asyncio"):
            raise ConfigError(f"EVENT_LOOP must be auto, uvloop or asyncio, not {self.event_loop!r}")
        if self.event_loop == "uvloop" and not eventloop.uvloop_installed():
            raise ConfigError("EVENT_LOOP=uvloop, but uvloop is not installed (pip install uvloop)")
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"PORT out of range: {self.port}")
        if not 20 <= self.outbound_lead_ms <= 2000:
            raise ConfigError(f"OUTBOUND_LEAD_MS must be 20..2000, not {self.outbound_lead_ms}")
        if not 1 <= self.stream_token_ttl_s <= 3600:
            raise ConfigError(f"STREAM_TOKEN_TTL_S must be 1..3600, not {self.stream_token_ttl_s}")
        if not 0 <= self.webhook_rate <= 100_000 or not 1 <= self.webhook_burst <= 1_000_000:
            raise ConfigError(
                f"WEBHOOK_RATE must be 0..100000 and WEBHOOK_BURST 1..1000000, not {self.webhook_rate}, {self.webhook_burst}"
            )
        if not 0 <= self.max_calls <= 100_000 or not 0 <= self.max_sockets_per_source <= 100_000:
            raise ConfigError(
                f"MAX_CALLS and MAX_SOCKETS_PER_SOURCE must be 0..100000, not {self.max_calls}, {self.max_sockets_per_source}"
            )
        for name in ("start_timeout_s", "stream_idle_s", "send_stall_s"):
            if not 0.1 <= getattr(self, name) <= 3600:
                raise ConfigError(f"{name.upper()} must be 0.1..3600, not {getattr(self, name)}")
        if not 0 <= self.inbound_rate <= 1000 or not 0.02 <= self.inbound_burst_s <= 60:
            raise ConfigError(
                f"INBOUND_RATE must be 0..1000 and INBOUND_BURST_S 0.02..60, not {self.inbound_rate}, {self.inbound_burst_s}"
            )
        if self.public_url and not self.public_url.startswith(("http://", "https://")):
            raise ConfigError(f"PUBLIC_URL must start with http:// or https://: {self.public_url!r}")
        if any(c in self.public_url for c in "?#") or not self.public_url.isascii():
            raise ConfigError(
                f"PUBLIC_URL must be ASCII (punycode a host), with no query or fragment: {self.public_url!r}"
            )
        if len(self.twilio_shared_keys) > 2:
            raise ConfigError(
                "TWILIO_SHARED_KEY holds at most two comma-separated secrets (during a rotation)"
            )
        if self.agent not in ("desk", "openai", "webhook"):
            raise ConfigError(f"AGENT must be desk, openai or webhook, not {self.agent!r}")
        if self.agent == "webhook" and not self.agent_webhook_url:
            raise ConfigError("AGENT=webhook needs AGENT_WEBHOOK_URL")
        if not 0 <= self.openai_max_tokens <= 1_000_000:
            raise ConfigError(f"OPENAI_MAX_TOKENS must be 0..1000000, not {self.openai_max_tokens}")
        if self.openai_max_tokens_param not in MAX_TOKENS_PARAMS:
            raise ConfigError(
                f"OPENAI_MAX_TOKENS_PARAM must be one of {', '.join(MAX_TOKENS_PARAMS)}, not {self.openai_max_tokens_param!r}"
            )
        if not 0.5 <= self.agent_timeout_s <= 60:
            raise ConfigError(f"AGENT_TIMEOUT_S must be 0.5..60, not {self.agent_timeout_s}")
        if self.twilio_account_sid and not re.fullmatch(r"AC[0-9a-fA-F]{32}", self.twilio_account_sid):
            raise ConfigError("TWILIO_ACCOUNT_SID must be AC followed by 32 hex digits")
        if self.twilio_number and not (
            self.twilio_account_sid and self.twilio_auth_token and self.public_url
        ):
            raise ConfigError("TWILIO_NUMBER needs TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN and PUBLIC_URL")
        if not self.twilio_api_url.startswith(("http://", "https://")):
            raise ConfigError(f"TWILIO_API_URL must start with http:// or https://: {self.twilio_api_url!r}")
        if self.upstream not in UPSTREAMS:
            raise ConfigError(f"UPSTREAM must be one of {', '.join(UPSTREAMS)}, not {self.upstream!r}")
        if not 1 <= self.upstream_timeout_s <= 60:
            raise ConfigError(f"UPSTREAM_TIMEOUT_S must be 1..60, not {self.upstream_timeout_s}")
        if not 65_536 <= self.upstream_buffer_bytes <= 64_000_000:
            raise ConfigError(f"UPSTREAM_BUFFER_BYTES must be 64 KB..64 MB, not {self.upstream_buffer_bytes}")
        try:
            self.retry_schedule
        except ValueError as exc:
            raise ConfigError(f"UPSTREAM_RETRIES_S: {exc}") from None
        if self.vapi_audio not in ("pcm_s16le", "mulaw"):
            raise ConfigError(f"VAPI_AUDIO must be pcm_s16le or mulaw, not {self.vapi_audio!r}")
        try:
            auth_from(self)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        if self.upstream != "embedded":
            problem = upstream_problem(self, self.upstream)
            if problem:
                raise ConfigError(f"UPSTREAM={self.upstream}: {problem}")
        if not 100 <= self.endpoint_silence_ms <= 3000:
            raise ConfigError(f"ENDPOINT_SILENCE_MS must be 100..3000, not {self.endpoint_silence_ms}")
        if not 0 <= self.min_speech_ms <= 2000:
            raise ConfigError(f"MIN_SPEECH_MS must be 0..2000, not {self.min_speech_ms}")
        if not 20 <= self.jitter_min_ms <= 1000:
            raise ConfigError(f"JITTER_MIN_MS must be 20..1000, not {self.jitter_min_ms}")
        if not 1 <= self.stt_decoders <= 16:
            raise ConfigError(f"STT_DECODERS must be 1..16, not {self.stt_decoders}")
        if self.log_format not in ("auto", "json", "text"):
            raise ConfigError(f"LOG_FORMAT must be auto, json or text, not {self.log_format!r}")
        if self.console_token and len(self.console_token) < 16:
            raise ConfigError("CONSOLE_TOKEN must be at least 16 characters")
        if self.events_url and not self.events_secret:
            raise ConfigError("EVENTS_URL needs EVENTS_SECRET (events are signed)")
        if not 0 <= self.workers <= 256:
            raise ConfigError(f"WORKERS must be 0..256, not {self.workers}")
        if not 1 <= self.admin_port <= 65535:
            raise ConfigError(f"ADMIN_PORT out of range: {self.admin_port}")
        if self.leader and not _host_port(self.leader):
            raise ConfigError(f"LEADER must be host:port, not {self.leader!r}")
        if not 0 <= self.drain_s <= 3600:
            raise ConfigError(f"DRAIN_S must be 0..3600, not {self.drain_s}")
        if self.mode == "prod" and not self.twilio_auth_token:
            raise ConfigError("prod mode requires TWILIO_AUTH_TOKEN (signature checks)")

    @property
    def retry_schedule(self) -> tuple[float, ...]:
        """``UPSTREAM_RETRIES_S`` as seconds: at most 10 pauses, each 0-60 s."""
        parts = [p.strip() for p in self.upstream_retries_s.split(",") if p.strip()]
        pauses = tuple(float(p) for p in parts)
        if len(pauses) > 10 or any(not 0 <= p <= 60 for p in pauses):
            raise ValueError(f"at most 10 pauses of 0-60 s, not {self.upstream_retries_s!r}")
        return pauses

    @property
    def twilio_shared_keys(self) -> tuple[str, ...]:
        return tuple(k.strip() for k in self.twilio_shared_key.split(",") if k.strip())

    @property
    def stream_secret(self) -> bytes:
        return (self.secret or self.twilio_auth_token or _PROCESS_SECRET).encode()

    def to_env(self) -> dict[str, str]:
        """The environment that reproduces these settings (``from_env(to_env()) ==
        self``): how production mode hands flags to its shard processes."""
        out = {}
        for f in fields(self):
            value = getattr(self, f.name)
            out[f.metadata["env"]] = ("1" if value else "0") if isinstance(value, bool) else str(value)
        return out

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Read the environment, then apply non-None ``overrides`` (command-line flags)."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = env.get(f.metadata["env"])
            if raw is None:
                continue
            try:
                values[f.name] = _bool(raw) if f.type == "bool" else _PARSERS[f.type](raw)
            except ValueError as exc:
                raise ConfigError(f"{f.metadata['env']}: {exc}") from None
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)


UPSTREAMS = ("embedded", "vapi", "openai-realtime", "echo")


def upstream_problem(settings: Settings, name: str) -> str:
    """Why back end ``name`` cannot run with ``settings`` ("" when it can)."""
    if name == "vapi":
        if not settings.vapi_api_key:
            return "needs VAPI_API_KEY"
        if not (settings.vapi_assistant_id or settings.vapi_assistant):
            return "needs VAPI_ASSISTANT_ID or VAPI_ASSISTANT"
        if settings.vapi_assistant and not settings.vapi_assistant_id:
            try:
                if not isinstance(json.loads(settings.vapi_assistant), dict):
                    return "VAPI_ASSISTANT must be a JSON object"
            except ValueError as exc:
                return f"VAPI_ASSISTANT is not JSON: {exc}"
        if not settings.vapi_api_url.startswith(("http://", "https://")):
            return "VAPI_API_URL must start with http:// or https://"
    elif name == "openai-realtime":
        if not settings.openai_api_key:
            return "needs OPENAI_API_KEY (the Realtime API refuses a connection without it)"
        if not settings.openai_realtime_url.startswith(("ws://", "wss://")):
            return "OPENAI_REALTIME_URL must start with ws:// or wss://"
    elif name not in ("embedded", "echo"):
        return f"unknown back end (one of {', '.join(UPSTREAMS)})"
    return ""


def choose_upstream(settings: Settings, parameters: Mapping[str, str]) -> tuple[str, str]:
    """The back end of one call: the stream parameter ``upstream`` if given and usable,
    else ``UPSTREAM``. Returns ``(name, error)``; ``error`` says why a requested one was
    not taken ("" if none was refused)."""
    wanted = parameters.get("upstream", "").strip()
    if not wanted or wanted == settings.upstream:
        return settings.upstream, ""
    problem = upstream_problem(settings, wanted)
    if problem:
        return settings.upstream, f"upstream {wanted[:40]!r} refused: {problem}"
    return wanted, ""


_PARSERS = {"str": str, "int": int, "float": float}


def _host_port(text: str) -> tuple[str, int] | None:
    host, _, port = text.rpartition(":")
    return (host, int(port)) if host and port.isdigit() and 0 < int(port) < 65536 else None


_PROCESS_SECRET = secrets.token_hex(32)


def settings_table() -> str:
    """The README's configuration table, in Markdown."""
    rows = ["| Variable | Flag (`serve`) | Default | Meaning |", "|---|---|---|---|"]
    for f in fields(Settings):
        default = "(unset)" if f.default in ("", None) else f"`{f.default}`"
        flag = f"`{f.metadata['flag']}`" if "flag" in f.metadata else ""
        rows.append(f"| `{f.metadata['env']}` | {flag} | {default} | {f.metadata['doc']} |")
    return "\n".join(rows)
