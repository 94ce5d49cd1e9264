"""EchoBackend: the caller's audio comes straight back as the agent's, at once.

No speech work at all, so a call costs only what the bridge itself costs: the gateway,
the actor hops, the in-order dejitter, both codec directions and the paced writer. Load
benchmarks use it to measure the bridge's own capacity and added latency
(``UPSTREAM=echo``); a person calling it hears themselves ~100 ms late.
"""

from __future__ import annotations

from ..actors import messages as m
from .base import Backend, BackendSpec


class EchoBackend(Backend):
    utterance = 0

    def start(self, call: m.CallStarted) -> None:
        # One endless utterance per stream (a restarted actor opens a new one).
        self.utterance = self.conversation.new_utterance()

    def caller_audio(self, msg: m.CallerAudio) -> None:
        self.port.audio(self.utterance, msg.pcm, msg.rate)

    def stop(self) -> None:
        pass


SPEC = BackendSpec(
    "echo", "the caller's audio straight back: the bridge's own cost, for load tests", EchoBackend
)
