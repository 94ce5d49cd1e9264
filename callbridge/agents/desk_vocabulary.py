"""What callers of the appointment desk say: the sentences its speech recognition is tuned to.

``desk_vocabulary()`` is what ``DeskAgent.vocabulary()`` hands the recogniser: replies
(yes / no / confirm, thanks / goodbye), actions (book / move / reschedule / cancel an
appointment), asking for a person ("can I talk to someone", "a real person please", "an
operator") and when (Monday..Sunday, today / tomorrow, clock times), ~170 words in all.
Words outside it cannot be recognised on the desk's calls. Edit the lists here, not in the
speech layer; every word must be in pocketsphinx's CMU dictionary (the recogniser checks).
"""

from __future__ import annotations

import functools
import random

from ..speech.vocabulary import Vocabulary
from .desk_parse import WEEKDAYS

_HOURS = ["one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve"]
_PARTS = ["morning", "afternoon", "evening"]
_ACTIONS = [
    "book an appointment",
    "make an appointment",
    "make a booking",
    "book a time",
    "move my appointment",
    "move it",
    "change my appointment",
    "change the time",
    "reschedule my appointment",
    "reschedule it",
    "reschedule",
    "cancel my appointment",
    "cancel the appointment",
    "cancel my booking",
    "cancel it",
]
_WANTS = [
    "i would like to",
    "i'd like to",
    "i want to",
    "i need to",
    "can i",
    "could i",
    "can you",
    "could you",
    "please",
    "i have to",
    "we need to",
    "",
]
_REPLIES = [
    "yes",
    "no",
    "yes please",
    "no thanks",
    "no thank you",
    "yeah",
    "yep",
    "nope",
    "okay",
    "ok",
    "sure",
    "right",
    "correct",
    "that is correct",
    "that's correct",
    "that is right",
    "that's right",
    "that's fine",
    "that is fine",
    "that works",
    "that works for me",
    "that is wrong",
    "that's wrong",
    "that is not right",
    "that's not right",
    "no that is wrong",
    "yes that is correct",
    "yes that's right",
    "please confirm",
    "confirm",
    "yes confirm",
    "i confirm",
    "confirm the booking",
    "confirm my appointment",
    "yes please confirm the booking",
    "thank you",
    "thanks",
    "thank you very much",
    "thanks a lot",
    "thank you goodbye",
    "thanks bye",
    "goodbye",
    "bye",
    "bye bye",
    "hello",
    "hi",
    "good morning",
    "good afternoon",
    "sorry",
    "sorry what was that",
    "can you repeat that",
    "say that again",
    "i said",
    "i can't make it",
    "i can't do that",
    "perfect",
    "great",
    "no that doesn't work",
    "that doesn't work",
    "is that available",
    "what times are available",
    "what do you have",
    "do you have anything",
    "is there anything available",
    "anything earlier",
    "anything later",
    "is there anything else",
    "that's all",
    "that is all",
    "nothing else",
    "no that's all thanks",
    "wait",
    "hold on",
    "one moment",
]
_PERSON = [
    "can i talk to someone",
    "can i speak to someone",
    "could i speak to someone",
    "i want to talk to someone",
    "i need to talk to someone",
    "i would like to speak to a person",
    "i would like to talk to someone",
    "i'd like to talk to a person",
    "can i talk to a real person",
    "can i speak to a real person",
    "i want to speak to a real person",
    "a real person please",
    "a real person",
    "real person",
    "a person please",
    "a human please",
    "a human",
    "i want a human",
    "can i speak to a human",
    "can i talk to a human",
    "an operator",
    "operator",
    "operator please",
    "can i speak to an operator",
    "transfer me to a person",
    "put me through to someone",
    "can i talk to somebody",
    "let me speak to the receptionist",
    "a representative please",
]
_ASKS = [
    "what about",
    "how about",
    "do you have anything",
    "is there anything",
    "can i come in",
    "can you do",
    "i could do",
    "is",
    "maybe",
    "or",
    "book me for",
    "book me in for",
    "move it to",
    "reschedule it to",
    "change it to",
    "put me down for",
    "i can come",
]
_TAILS = [
    "",
    "",
    "",
    " please",
    " is that available",
    " would be great",
    " if possible",
    " instead",
    " works for me",
    " thanks",
]


def _person_requests() -> list[str]:
    """Asking for a person in every phrasing the desk's lists combine (~300 sentences, so the
    language model gives them weight beside the thousands of booking sentences)."""
    whos = ["someone", "somebody", "a person", "a real person", "a human", "an operator", "the receptionist"]
    verbs = ["talk to", "speak to", "speak with"]
    return [f"{w} {v} {who}".strip() for w in _WANTS for v in verbs for who in whos]


def _times() -> list[str]:
    out = [
        "noon",
        "midday",
        "lunchtime",
        "midnight",
        "the morning",
        "the afternoon",
        "the evening",
        "first thing in the morning",
        "any time",
    ]
    for h in _HOURS:
        out += [h, f"{h} am", f"{h} pm", f"{h} o'clock", f"{h} o'clock in the morning"]
        out += [f"{h} in the {p}" for p in _PARTS]
        for m in ("oh five", "ten", "fifteen", "twenty", "thirty", "forty", "forty five", "fifty"):
            out += [f"{h} {m}", f"{h} {m} am", f"{h} {m} pm"]
        out += [f"half past {h}", f"a quarter past {h}", f"a quarter to {h}"]
    return out


def _days() -> list[str]:
    out = ["today", "tomorrow", "next week", "this week", "the day after tomorrow"]
    out += [f"this {p}" for p in _PARTS] + [f"tomorrow {p}" for p in _PARTS]
    for d in WEEKDAYS:
        out += [d, f"on {d}", f"next {d}", f"this {d}", f"on {d} {_PARTS[0]}"]
        out += [f"{d} {p}" for p in _PARTS] + [f"on {d} {p}" for p in _PARTS[1:]]
    return out


def desk_corpus(n: int = 6000, seed: int = 0) -> list[str]:
    """Every reply, request for a person and action once, then ``n`` random action/day/time combinations
    (deterministic for a seed)."""
    rnd = random.Random(seed)
    times, days = _times(), _days()
    out = list(_REPLIES) + _PERSON + _person_requests()
    out += [f"{w} {a}".strip() for w in _WANTS for a in _ACTIONS]
    for _ in range(n):
        day, at, act, want = rnd.choice(days), rnd.choice(times), rnd.choice(_ACTIONS), rnd.choice(_WANTS)
        when = rnd.choice([f"{day} at {at}", f"at {at} {day}", day, f"at {at}", f"{day} {at}"])
        form = rnd.randrange(6)
        if form == 0:
            s = f"{want} {act} {rnd.choice(['for', 'to', 'on', ''])} {when}"
        elif form == 1:
            s = f"{rnd.choice(_ASKS)} {when}{rnd.choice(_TAILS)}"
        elif form == 2:
            s = f"{rnd.choice(['yes', 'no', 'okay', 'hi', 'hello', 'sorry'])} {want} {act} {when}"
        elif form == 3:
            s = f"{when}{rnd.choice(_TAILS)}"
        elif form == 4:
            s = f"{rnd.choice(_REPLIES)} {rnd.choice(_ASKS)} {when}"
        else:
            s = f"{want} {act}{rnd.choice(_TAILS)}"
        out.append(" ".join(s.split()))
    return out


@functools.cache
def desk_vocabulary() -> Vocabulary:
    """The desk's vocabulary (built once per process, ~20 ms)."""
    return Vocabulary("desk", tuple(desk_corpus()), hint=DESK_HINT)


DESK_HINT = (
    "I'd like to book an appointment on Monday at 3 PM. Yes, book it. Can I move my appointment "
    "to Thursday morning? Cancel it. No thanks, goodbye."
)
"""What the desk's callers say, for a general recogniser (``Vocabulary.hint``)."""
