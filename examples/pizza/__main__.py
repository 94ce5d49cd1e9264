"""``python -m examples.pizza``: one simulated Twilio call to the pizza agent, offline.

Starts a dev gateway on a free loopback port with ``AGENT=examples.pizza.agent:PizzaAgent``,
places one call through the simulator (``callbridge.sim``) in which the caller's turns are
synthesised by the bridge's own voice, prints the call's timeline, and writes the call
(caller left, agent right) to ``--record`` if given. ``--say`` replaces the caller's turns.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from callbridge.cli import Server, format_timeline
from callbridge.config import Settings
from callbridge.sim.caller import SimulatedCall
from callbridge.sim.wavio import write_wav
from callbridge.speech.tts import EspeakTTS
from callbridge.testing.audio import speech

TURNS = ["order number one two three", "can I talk to someone", "thank you goodbye"]


async def main(turns: list[str], record: str | None) -> int:
    settings = Settings.from_env(
        port=0, host="127.0.0.1", mode="dev", agent="examples.pizza.agent:PizzaAgent"
    )
    tts = EspeakTTS(rate_wpm=150)
    audio = [speech(tts, text) for text in turns]
    server = Server(settings)
    url = await server.start()
    try:
        result = await SimulatedCall(url, audio=audio, polite=True, hold_s=4.0).run()
    finally:
        await server.stop()
    print(format_timeline(result.record, result.record_refused))
    if record:
        write_wav(record, result.stereo(), 8000)
        print(f"both sides (caller left, agent right) written to {record}")
    said = [e for e in (result.record or {}).get("timeline", []) if e["event"] == "agent.reply"]
    return 0 if said else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m examples.pizza", description=__doc__.splitlines()[0])
    parser.add_argument("--say", action="append", help="a caller turn (repeatable); default: three turns")
    parser.add_argument("--record", help="write the call here as a stereo WAV")
    args = parser.parse_args()
    sys.exit(asyncio.run(main(args.say or TURNS, args.record)))
