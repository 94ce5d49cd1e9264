"""Command line: ``serve``, ``call``, ``dial``, ``demo``, ``config``, ``bench``.

The ``callbridge`` command (installed by ``pip install``), ``python -m callbridge`` and
``python run.py`` (a source checkout) are the same program; ``<command> --help`` lists each
command's flags with their defaults. ``serve``'s flags and their help come from ``Settings``
(``configview.options()``), so they match the configuration reference.

callbridge serve [--host H] [--port 8080] [--mode dev|prod] [--workers N] [--leader H:P] ...
callbridge call  [--url http://127.0.0.1:8080] [--wav FILE] [--out agent.wav] [--console-token T] ...
callbridge dial  +15551234567 [--from +1...] [--agent NAME] [--greeting TEXT] [--metadata JSON]
                 [--url http://127.0.0.1:8080] [--console-token T]   # POST /calls on a running bridge
callbridge demo  [--out-dir out]
callbridge config [serve's flags]    # the settings in force and where each came from
callbridge config --reference        # every setting, as a Markdown table (docs/configuration.md)
callbridge bench [--quick] [--out bench/results.md] [--json bench/results.json] [--only codec,...]
                                     # the benchmark suite (a source checkout: bench/suite.py)

A usage or configuration error, or caller audio that cannot be read, exits 2 with one line
on stderr; a call that cannot be placed exits 1.

``dial`` asks a running bridge to place an outbound call (``POST /calls`` with the operator
token) rather than calling Twilio itself: the bridge is what takes the call's webhook and
stream, and its limits (``MAX_CALLS``, ``DIAL_RATE``) and Twilio credentials apply.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import sys
from importlib import resources
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
from aiohttp import web

from . import eventloop
from .config import ConfigError, Settings, settings_table
from .configview import in_force, options, plain, render
from .gateway.app import create_app
from .gateway.store import CallStore
from .logs import resolve_format, say, setup_logging
from .sim.caller import CallResult, SimulatedCall, StreamUrlRefused, WebhookRefused
from .sim.impair import Impairment
from .sim.wavio import read_wav, write_wav

log = logging.getLogger("callbridge")


DEMO_TURNS = ("caller-1-book.wav", "caller-2-confirm.wav", "caller-3-bye.wav")
DEMO_LINES = (
    "I would like to book an appointment on Monday at three pm.",
    "Yes, book it.",
    "That's all, thank you. Goodbye.",
)
"""The demo caller's lines (synthesised with espeak-ng, en-us, 150 wpm): "I would like
to book an appointment on Monday at three pm." / "Yes, book it." / "That's all, thank you.
Goodbye." Chosen because the embedded recogniser gets their key words every time."""


def bundled_turns() -> list[Path]:
    assets = resources.files("callbridge") / "assets"
    return [Path(str(assets / name)) for name in DEMO_TURNS]


class Server:
    """The gateway on a real socket, started and stopped from one event loop."""

    def __init__(self, settings: Settings, store: CallStore | None = None, reuse_port: bool = False) -> None:
        """``store``: where calls checkpoint (default: this process's memory);
        ``reuse_port``: share the port with other processes (production shards)."""
        self.settings = settings
        self.store = store
        self.reuse_port = reuse_port
        self.runner: web.AppRunner | None = None
        self.app: web.Application | None = None
        self.site: web.TCPSite | None = None
        self.port = settings.server.port

    async def start(self) -> str:
        self.app = create_app(self.settings, self.store)
        self.runner = web.AppRunner(self.app, handle_signals=False, shutdown_timeout=5)
        await self.runner.setup()
        site = web.TCPSite(
            self.runner,
            self.settings.server.host,
            self.settings.server.port,
            reuse_address=True,
            reuse_port=self.reuse_port or None,
        )
        await site.start()
        self.site = site
        self.port = self.runner.addresses[0][1]
        return self.url

    @property
    def url(self) -> str:
        host = self.settings.server.host
        if host in ("0.0.0.0", "::", ""):
            host = socket.gethostname()
        return f"http://{host}:{self.port}"

    async def stop_listening(self) -> None:
        """Take no new connections (other processes on the port get them); open
        connections carry on."""
        if self.site is not None:
            site, self.site = self.site, None
            await site.stop()

    async def stop(self) -> None:
        self.site = None
        if self.runner is not None:
            runner, self.runner = self.runner, None
            await runner.cleanup()


async def _serve(settings: Settings) -> None:
    server = Server(settings)
    url = await server.start()
    say(
        f"callbridge {settings.server.mode} mode listening on {url} ({eventloop.resolve(settings.server.event_loop)} event loop)"
    )
    say(f"  voice webhook: {settings.server.public_url or url}/voice/inbound")
    say(f"  console:       {url}/console    metrics: {url}/metrics")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    say("shutting down")
    await server.stop()


def format_timeline(record: dict[str, Any] | None, refused: str = "") -> str:
    """The call's record as text; ``refused``: why the server did not return it."""
    if not record:
        if refused.startswith(("401", "403")):
            return (
                f"(no timeline: GET /calls/{{callSid}} answered {refused}; "
                "pass the server's CONSOLE_TOKEN with --console-token or the CONSOLE_TOKEN variable)"
            )
        return f"(no timeline: the server did not return the call{': ' + refused if refused else ''})"
    lines = [f"call {record['callSid']}  stream {record['streamSid']}  ({record.get('stop_reason', '')})"]
    for e in record["timeline"]:
        extra = {k: v for k, v in e.items() if k not in ("t_ms", "event")}
        detail = " ".join(f"{k}={json.dumps(v)}" for k, v in extra.items())
        lines.append(f"  {e['t_ms']:>9.1f} ms  {e['event']:<22} {detail}")
    lines.append("  stats: " + json.dumps(record.get("stats", {})))
    return "\n".join(lines)


def _report(result: CallResult, out: str | None, record_both: str | None) -> None:
    """Print what the call did; write the WAVs asked for (``OSError`` if one cannot be)."""
    print(format_timeline(result.record, result.record_refused))
    heard_ms = len(result.agent_audio) // 8
    print(
        f"agent media messages: {len(result.media_received)}, marks echoed: {len(result.marks_echoed)}, "
        f"clears: {len(result.clears)}, call length: {heard_ms} ms, close code: {result.close_code}"
    )
    if out:
        write_wav(out, result.agent_pcm(), 8000)
        print(f"agent audio written to {out}")
    if record_both:
        write_wav(record_both, result.stereo(), 8000)
        print(f"both sides (caller left, agent right) written to {record_both}")


class UsageError(Exception):
    """A one-line error for the command line (exit status 2)."""


def read_turns(paths: list[str]) -> list[np.ndarray]:
    """The caller's turns from ``--wav`` files; ``UsageError`` names a file that cannot be read."""
    turns = []
    for path in paths:
        try:
            turns.append(read_wav(path))
        except ValueError as exc:  # not a PCM WAV: the message names the file
            raise UsageError(f"--wav {exc}") from None
        except OSError as exc:
            hint = ""
            if isinstance(exc, FileNotFoundError):
                bundled = bundled_turns()
                where = bundled[0].parent
                with contextlib.suppress(ValueError):
                    where = where.relative_to(Path.cwd())
                hint = f" (bundled caller lines: {', '.join(str(where / p.name) for p in bundled)})"
            raise UsageError(f"--wav {path}: {exc.strerror or exc}{hint}") from None
    return turns


async def _call(args: argparse.Namespace, audio: list[np.ndarray]) -> int:
    impairment = None
    if args.loss or args.jitter or args.gaps:
        try:
            impairment = Impairment.from_cli(
                loss=args.loss, jitter=args.jitter, gap=args.gaps, seed=args.seed
            )
        except ValueError as exc:
            print(f"bad impairment: {exc}", file=sys.stderr)
            return 2
    call = SimulatedCall(
        args.url,
        audio=audio,
        auth_token=args.auth_token,
        public_url=args.public_url,
        polite=not args.no_wait,
        gap_s=args.gap,
        echo_db=args.echo_db,
        impairment=impairment,
        dtmf=args.dtmf,
        hold_s=args.hold,
        allow_ws=True if args.allow_ws else None,
        console_token=args.console_token,
    )
    try:
        result = await call.run()
    except (WebhookRefused, StreamUrlRefused) as exc:
        print(f"call refused: {exc}", file=sys.stderr)
        return 1
    except (aiohttp.ClientError, OSError) as exc:
        print(f"cannot reach {args.url}: {exc}", file=sys.stderr)
        return 1
    try:
        _report(result, args.out, args.record)
    except OSError as exc:
        print(f"cannot write {exc.filename}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    return 0


async def _dial(args: argparse.Namespace) -> int:
    body: dict[str, Any] = {"to": args.to}
    for key in ("from_", "agent", "greeting"):
        if getattr(args, key):
            body[key.rstrip("_")] = getattr(args, key)
    if args.metadata:
        try:
            body["metadata"] = json.loads(args.metadata)
        except ValueError as exc:
            print(f"dial: --metadata is not JSON: {exc}", file=sys.stderr)
            return 2
    headers = {"Authorization": f"Bearer {args.console_token}"} if args.console_token else {}
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http,
            http.post(f"{args.url.rstrip('/')}/calls", json=body, headers=headers) as resp,
        ):
            text = await resp.text()
            status = resp.status
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        print(f"cannot reach {args.url}: {exc}", file=sys.stderr)
        return 1
    if status != 201:
        print(f"call refused: {status} {text.strip()[:500]}", file=sys.stderr)
        return 1
    print(text.strip())
    return 0


async def _demo(args: argparse.Namespace) -> int:
    settings = Settings.from_env(port=0, mode="dev", host="127.0.0.1")
    server = Server(settings)
    url = await server.start()
    print(f"callbridge dev server on {url}; placing one simulated call ...", flush=True)
    out_dir = Path(args.out_dir)
    try:
        call = SimulatedCall(
            url,
            audio=[read_wav(path) for path in bundled_turns()],
            auth_token=settings.twilio.auth_token,
            polite=True,
            hold_s=1.0,
        )
        result = await call.run()
    finally:
        await server.stop()
    _report(result, str(out_dir / "agent.wav"), str(out_dir / "call.wav"))
    (out_dir / "timeline.json").write_text(json.dumps(result.record, indent=2))
    print(f"timeline written to {out_dir / 'timeline.json'}")
    events = result.timeline_events()
    return 0 if "greeting_audio" in events and "agent.reply" in events else 1


def _bench(argv: list[str], prog: str) -> int:
    """``bench/`` is not an installed package: it lives next to ``callbridge/`` in a source
    checkout, so it is found relative to this file and imported from the repository root."""
    root = Path(__file__).resolve().parents[1]
    if not (root / "bench" / "suite.py").is_file():
        print(
            f"{prog} bench needs a source checkout: {root / 'bench' / 'suite.py'} not found", file=sys.stderr
        )
        return 2
    sys.path.insert(0, str(root))
    from bench.suite import main as suite_main

    return suite_main(argv, prog=f"{prog} bench")


_TYPES = {"str": str, "int": int, "float": float}


def _with_default(text: str, default: object) -> str:
    """Help text ending in its default (argparse's ``%`` escaped)."""
    return f"{text} (default: {default})".replace("%", "%%")


def _add_setting_flags(parser: argparse.ArgumentParser) -> None:
    """``serve``'s flags: the settings that have one, each overriding its variable."""
    for option in options():
        if option.flag:
            default = "unset" if option.default in ("", None) else option.default
            parser.add_argument(
                option.flag,
                dest=option.name,
                type=_TYPES[option.kind],
                metavar=option.env,
                help=f"{plain(option.doc)} [env {option.env}; default: {default}]".replace("%", "%%"),
            )


def _setting_flags(args: argparse.Namespace) -> dict[str, Any]:
    return {o.name: getattr(args, o.name) for o in options() if o.flag}


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="callbridge: a bridge between Twilio phone calls and voice AI. "
        "Settings come from environment variables (see 'config --reference'); serve's flags override them.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p_serve = sub.add_parser(
        "serve",
        help="run the gateway",
        description="Run the gateway: Twilio's webhook, its media streams, the console and /metrics. "
        "Each flag overrides its environment variable.",
    )
    _add_setting_flags(p_serve)
    p_call = sub.add_parser(
        "call",
        help="place a simulated Twilio call",
        description="Play Twilio's side of a call against a running server: sign and post the webhook, "
        "stream the caller's audio, then print the call's timeline.",
    )
    p_call.add_argument(
        "--url",
        default=os.environ.get("CALLBRIDGE_URL", "http://127.0.0.1:8080"),
        help="the server to call (default: $CALLBRIDGE_URL, else http://127.0.0.1:8080)",
    )
    p_call.add_argument("--public-url", help="URL Twilio would sign (default: --url)")
    p_call.add_argument(
        "--auth-token",
        default=os.environ.get("TWILIO_AUTH_TOKEN", ""),
        help="the server's TWILIO_AUTH_TOKEN, to sign as Twilio does (default: $TWILIO_AUTH_TOKEN)",
    )
    p_call.add_argument(
        "--console-token",
        default=os.environ.get("CONSOLE_TOKEN", ""),
        help="the server's CONSOLE_TOKEN, to fetch the call's timeline from /calls/{callSid} "
        "(a prod server requires it; default: $CONSOLE_TOKEN)",
    )
    p_call.add_argument(
        "--allow-ws",
        action="store_true",
        help="accept a ws:// Stream URL on any host (default: loopback only; Twilio itself needs wss://)",
    )
    p_call.add_argument(
        "--wav",
        action="append",
        default=[],
        metavar="FILE",
        help="caller audio (PCM WAV, any rate); repeat for several turns (default: silence; "
        "the bundled lines are callbridge/assets/caller-*.wav)",
    )
    p_call.add_argument("--out", metavar="FILE", help="write the agent's audio, as heard, to this WAV")
    p_call.add_argument(
        "--record", metavar="FILE", help="write both sides (stereo WAV: caller left, agent right)"
    )
    p_call.add_argument("--dtmf", default="", help="keys to press after the caller's audio")
    p_call.add_argument(
        "--hold", type=float, default=2.0, help=_with_default("seconds to stay on after the last action", 2.0)
    )
    p_call.add_argument(
        "--no-wait",
        action="store_true",
        help="speak at once, not after the agent has answered (greeting, then each reply)",
    )
    p_call.add_argument(
        "--gap", type=float, default=0.3, help=_with_default("with --no-wait: seconds before each turn", 0.3)
    )
    p_call.add_argument(
        "--echo-db",
        type=float,
        help="mix the agent's voice back into the caller's audio at this level (e.g. -20)",
    )
    p_call.add_argument("--loss", help="drop this share of frames before Twilio, e.g. 3%%")
    p_call.add_argument("--jitter", help="stalls then bursts on the line, e.g. 200-800ms")
    p_call.add_argument(
        "--gaps",
        nargs="?",
        const="",
        default=None,
        help="timestamp gaps as Twilio shows upstream loss, e.g. 100-400ms (default range if no value)",
    )
    p_call.add_argument(
        "--seed", type=int, default=0, help=_with_default("seed of the impairments (repeatable)", 0)
    )
    p_dial = sub.add_parser(
        "dial",
        help="place an outbound call through a running bridge",
        description="Ask a running bridge to call a number (POST /calls): Twilio calls it and the bridge's "
        "agent talks to whoever answers; an answering machine gets VOICEMAIL_MESSAGE. Prints the call's Sid.",
    )
    p_dial.add_argument("to", help="the number to call, E.164 (+15551234567)")
    p_dial.add_argument(
        "--from",
        dest="from_",
        metavar="NUMBER",
        help="caller id, E.164 (default: the bridge's TWILIO_NUMBER)",
    )
    p_dial.add_argument("--agent", help="the call's back end, an UPSTREAM value (default: the bridge's)")
    p_dial.add_argument("--greeting", help="what the agent says first (default: its own greeting)")
    p_dial.add_argument("--metadata", help="a JSON object kept with the call (its stream parameters, events)")
    p_dial.add_argument(
        "--url",
        default=os.environ.get("CALLBRIDGE_URL", "http://127.0.0.1:8080"),
        help="the bridge (default: $CALLBRIDGE_URL, else http://127.0.0.1:8080)",
    )
    p_dial.add_argument(
        "--console-token",
        default=os.environ.get("CONSOLE_TOKEN", ""),
        help="the bridge's CONSOLE_TOKEN (default: $CONSOLE_TOKEN; without one, only a loopback dev bridge answers)",
    )
    p_demo = sub.add_parser(
        "demo",
        help="start a server and place one simulated call",
        description="Start a dev server on a free port, place one call with the bundled caller lines, "
        "and write what both sides said.",
    )
    p_demo.add_argument(
        "--out-dir",
        default="out",
        metavar="DIR",
        help=_with_default("where agent.wav, call.wav and timeline.json go", "out"),
    )
    p_config = sub.add_parser(
        "config",
        help="show the settings in force (--reference: every setting explained)",
        description="Show the settings serve would run with (the environment and these flags), "
        "secrets masked, and where each value came from.",
    )
    p_config.add_argument(
        "--reference",
        action="store_true",
        help="print every setting (variable, flag, default, meaning) as a Markdown table instead",
    )
    _add_setting_flags(p_config)
    sub.add_parser(
        "bench", add_help=False, help="run the benchmark suite (bench/suite.py; --help for its options)"
    )
    return parser


def _page(text: str) -> int:
    """Print ``text``; a reader that stops early (``| head``) is no error."""
    try:
        print(text, flush=True)
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
    return 0


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    """Run one command; returns the exit status. ``prog``: the name in usage lines
    (default: the program's file name: ``callbridge``, ``run.py``)."""
    parser = build_parser(prog)
    args, rest = parser.parse_known_args(argv)
    if args.command == "bench":
        return _bench(rest, parser.prog)
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")

    if args.command == "config" and args.reference:
        return _page(settings_table())
    try:
        if args.command in ("serve", "config"):
            settings, sources = in_force(os.environ, _setting_flags(args))
        else:
            settings = Settings.from_env()
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    if args.command == "config":
        return _page(render(settings, sources))
    try:
        audio = read_turns(args.wav) if args.command == "call" else []
    except UsageError as exc:
        print(f"{parser.prog} {args.command}: {exc}", file=sys.stderr)
        return 2
    setup_logging(settings.server.log_level, resolve_format(settings.server.log_format, settings.server.mode))
    if args.command == "serve":
        if settings.server.mode == "prod":
            from .prod.system import serve_prod

            return serve_prod(settings)
        eventloop.run(_serve(settings), settings.server.event_loop)
        return 0
    if args.command == "call":
        return eventloop.run(_call(args, audio), settings.server.event_loop)
    if args.command == "dial":
        return eventloop.run(_dial(args), settings.server.event_loop)
    return eventloop.run(_demo(args), settings.server.event_loop)
