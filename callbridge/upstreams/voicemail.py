"""The back end that leaves a voicemail message: what an outbound call's Upstream becomes
once Twilio's answering-machine detection reports a machine (``messages.LeaveVoicemail``),
whatever back end had the call (the remote ones are stopped first: their sessions end).

The message is said once with the embedded TTS (``VOICEMAIL_MESSAGE``; unset: the call's
``greeting`` stream parameter, else the agent's own greeting, else ``GREETING``); the call
ends once its end mark has come back played. What the machine sends meanwhile is ignored.
A message cut short (a barge-in: the machine's line was noisy) ends the call too: no one
is there to hear a repeat.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..actors import messages as m
from .base import Backend, Conversation, Port
from .speaker import Speaker, shared_tts

if TYPE_CHECKING:
    from ..config import Settings

ENDED = "the agent ended the call"


def voicemail_text(settings: Settings, conversation: Conversation, parameters: dict[str, str]) -> str:
    """What the machine records: the first of ``VOICEMAIL_MESSAGE``, the call's greeting,
    the agent's greeting, ``GREETING`` that is not blank."""
    agent = conversation.agent.greeting() if conversation.agent is not None else ""
    for text in (settings.outbound.voicemail_message, parameters.get("greeting", ""), agent):
        if text and text.strip():
            return text
    return settings.speech.greeting


class Voicemail(Backend):
    def __init__(self, port: Port, conversation: Conversation, settings: Settings, text: str) -> None:
        super().__init__(port, conversation)
        self.text = text
        self.speaker = Speaker(
            port,
            shared_tts(settings.speech),
            conversation.new_utterance,
        )

    def start(self, call: m.CallStarted | None = None) -> None:
        utterance = self.speaker.say(self.text, "voicemail")
        self.port.note("voicemail.left", text=self.text[:500])
        if utterance is None or not self.text.strip():
            self.port.end_call(ENDED)
            return
        self.conversation.hang_up_after = utterance.number

    def caller_audio(self, msg: m.CallerAudio) -> None:
        return None

    def interrupted(self, utterance: int, played_ms: int) -> None:
        if self.conversation.hang_up_after is not None and utterance >= self.conversation.hang_up_after:
            self.port.end_call(ENDED)

    def stop(self) -> None:
        self.speaker.cancel()
