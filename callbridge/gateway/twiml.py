"""The TwiML documents telephony actions give a live call (``gateway/telephony.py``). Pure.

Each is what Twilio runs in place of the call's current TwiML when the bridge updates the
call (``Calls/{CallSid}.json`` with ``Twiml``): Twilio then stops the call's Media Stream
(``stop``) and runs the new document.

- ``dial``: a cold transfer, ``<Dial><Number>`` or ``<Dial><Sip>``; its ``action`` (the
  bridge's ``/voice/transfer``) hears how the dial ended.
- ``hold``: the caller waits in a conference (``startConferenceOnEnter="false"``: hold audio
  from ``waitUrl`` until the human joins).
- ``brief_and_join``: the human's call: the summary, then the same conference.
- ``back_to_bridge``: optional ``<Say>`` and ``<Play digits>``, then ``<Connect><Stream>``
  back to the bridge with ``resume=1``: the call carries on on a new stream.

Twilio refuses a ``Twiml`` over ``MAX_TWIML`` characters (error 32018) and relative
``action`` URLs in it (15004): every URL here is absolute, and ``TwimlTooLong`` is raised
before a request Twilio would refuse.
"""

from __future__ import annotations

from twilio.twiml.voice_response import Connect, Dial, VoiceResponse

MAX_TWIML = 4000


class TwimlTooLong(ValueError):
    pass


def _done(response: VoiceResponse) -> str:
    text = str(response)
    if len(text) > MAX_TWIML:
        raise TwimlTooLong(f"TwiML of {len(text)} characters: Twilio takes at most {MAX_TWIML} (32018)")
    return text


def dial(to: str, timeout_s: int, action: str | None) -> str:
    """Connect the caller to ``to`` (E.164 or ``sip:``); ``action`` hears the outcome."""
    response = VoiceResponse()
    options = {"timeout": timeout_s, **({"action": action, "method": "POST"} if action else {})}
    verb = Dial(**options)
    if to.startswith(("sip:", "sips:")):
        verb.sip(to)
    else:
        verb.number(to)
    response.append(verb)
    return _done(response)


def hold(room: str, wait_url: str, say: str) -> str:
    """Say ``say``, then wait in conference ``room`` (hold audio from ``wait_url``; empty:
    Twilio's default) until the human joins; the conference ends when the caller leaves."""
    response = VoiceResponse()
    if say:
        response.say(say)
    verb = Dial()
    options: dict[str, object] = {"start_conference_on_enter": False, "end_conference_on_exit": True}
    if wait_url:
        options["wait_url"] = wait_url
        options["wait_method"] = "GET"
    verb.conference(room, **options)
    response.append(verb)
    return _done(response)


def brief_and_join(summary: str, room: str) -> str:
    """The human's call: hear ``summary``, then join ``room`` (which starts the conference:
    the caller stops hearing hold audio and hears the human); it ends when they hang up."""
    response = VoiceResponse()
    if summary:
        response.say(summary)
    verb = Dial()
    verb.conference(room, start_conference_on_enter=True, end_conference_on_exit=True, beep=False)
    response.append(verb)
    return _done(response)


def back_to_bridge(
    stream_url: str,
    action: str,
    parameters: dict[str, str],
    say: str = "",
    digits: str = "",
) -> str:
    """Optionally say ``say`` and play ``digits``, then stream the call to the bridge
    again (``parameters`` such as the stream token and ``resume=1``); ``action`` is the
    ``<Connect>``'s, as the voice webhook sets it."""
    response = VoiceResponse()
    if say:
        response.say(say)
    if digits:
        response.play(digits=digits)
    connect = Connect(action=action, method="POST")
    stream = connect.stream(url=stream_url)
    for name, value in parameters.items():
        stream.parameter(name=name, value=value)
    response.append(connect)
    return _done(response)


def hang_up() -> str:
    response = VoiceResponse()
    response.hangup()
    return _done(response)
