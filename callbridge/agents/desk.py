"""The default agent: a small, offline, rule-based appointment desk.

It books, moves and cancels appointments, says what the caller has booked, gives the
opening hours and the earliest free times, and ends the call on "goodbye". The ear is
``desk_parse.parse`` (pure functions); this module is the conversation: a state machine
whose states are frozen dataclasses (``Idle``, ``Collecting``, ``Confirming``, ``Choosing``,
``Ended``), one handler per state, and a ``Calendar``.

Policy (documented decisions):

- A caller may hold several appointments (``max_bookings``, default 3). "move" and "cancel"
  act on the one the caller names ("my Tuesday appointment", "the 3 PM one", "the first
  one"); with one appointment it is that one; otherwise the desk asks which.
- Nothing is committed without a yes: every book, move and cancel is read back first
  ("Tuesday at 3 PM. Shall I book it?"). "No, make it four" corrects the pending request.
- Partial requests are remembered across turns ("Tuesday" ... "what time?" ... "three").
  A move given only a new day keeps the old time, and only a new time keeps the old day.
- Business hours (default 9 AM-5 PM, Monday-Friday, 30-minute appointments) are
  configurable; an appointment must end by closing time. A time without AM/PM is read
  inside business hours ("two" is 2 PM). Out-of-hours and closed days are refused with
  the hours; a taken slot is refused with the nearest free time on that day offered.
- "Tuesday" is the next Tuesday after today; "next Tuesday" is Tuesday of next week
  (Monday-Sunday weeks); "this Tuesday" may be today.
- The ``Calendar`` is per agent by default; pass one ``calendar=`` to several agents to
  share slots between calls (single event loop; no awaits inside a turn, so no races).
  ``busy=`` pre-fills slots as taken by someone else.
- Three misunderstandings in a row: the desk offers to end the call; two more and it does.
- The conversation history passed to ``reply`` is not needed: the desk keeps its own state.
- ``greeting()`` is None unless ``greeting=`` is given: the configured greeting is used.
- A caller who asks for a person ("can I talk to someone", "a real person please", "an
  operator") is put through when ``transfer_to`` (``TRANSFER_TO``) is set: the desk says a
  short handover line, then (in the same reply) runs the ``transfer_call`` tool (cold) in
  the call; if that fails the caller is told so, and the desk carries on. Without
  ``transfer_to`` it says it cannot put them through and offers what it can do.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import AsyncGenerator, Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from ..speech.vocabulary import Vocabulary
from .base import Agent, Turn, split_pieces
from .desk_parse import WEEKDAYS, DayRef, Intent, PartOfDay, TimeRef, parse, resolve_time
from .desk_vocabulary import desk_vocabulary

FALLBACK = "Sorry, I can book, move or cancel an appointment. What would you like to do?"
HELP = (
    "I can book, move or cancel an appointment, or tell you what you have booked. What would you like to do?"
)
OFFER_END = "Sorry, I'm having trouble understanding. Would you like to end the call?"
HANDOVER = "Sure, I'll put you through to a colleague now. Please hold."
CANNOT_TRANSFER = "Sorry, I can't put you through to a person on this line, but I can book, move or cancel an appointment for you."
TRANSFER_FAILED = (
    "Sorry, I couldn't put you through just now. I can still book, move or cancel an appointment for you."
)
MAX_MISSES_BEFORE_OFFER = 3
MAX_MISSES_BEFORE_END = 5

Action = Literal["book", "move", "cancel"]


# -- calendar --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Hours:
    opens: dt.time = dt.time(9)
    closes: dt.time = dt.time(17)
    days: frozenset[int] = frozenset(range(5))  # 0 = Monday
    slot_minutes: int = 30

    @property
    def slot(self) -> dt.timedelta:
        return dt.timedelta(minutes=self.slot_minutes)

    def last_start(self, day: dt.date) -> dt.datetime:
        return dt.datetime.combine(day, self.closes) - self.slot

    def grid(self, day: dt.date) -> list[dt.datetime]:
        """The slot start times on ``day`` (empty on a closed day)."""
        if day.weekday() not in self.days:
            return []
        t = dt.datetime.combine(day, self.opens)
        out = []
        while t <= self.last_start(day):
            out.append(t)
            t += self.slot
        return out

    def within(self, when: dt.datetime) -> bool:
        return dt.datetime.combine(when.date(), self.opens) <= when <= self.last_start(when.date())


class Calendar:
    """Appointment start times and their owners. Two appointments conflict when they start
    less than one slot apart. Share one instance between agents to share the slots."""

    OTHER = "someone else"

    def __init__(self, slot_minutes: int = 30, busy: Iterable[dt.datetime] = ()) -> None:
        self.slot = dt.timedelta(minutes=slot_minutes)
        self._owners: dict[dt.datetime, str] = dict.fromkeys(busy, self.OTHER)

    def is_free(self, when: dt.datetime, ignore: dt.datetime | None = None) -> bool:
        return all(abs(s - when) >= self.slot for s in self._owners if s != ignore)

    def book(self, when: dt.datetime, owner: str) -> None:
        self._owners[when] = owner

    def release(self, when: dt.datetime, owner: str) -> None:
        if self._owners.get(when) == owner:
            del self._owners[when]

    def owned_by(self, owner: str) -> list[dt.datetime]:
        return sorted(s for s, o in self._owners.items() if o == owner)

    def free_slots(
        self, day: dt.date, hours: Hours, after: dt.datetime | None = None, ignore: dt.datetime | None = None
    ) -> list[dt.datetime]:
        return [s for s in hours.grid(day) if (after is None or s > after) and self.is_free(s, ignore)]


# -- speaking --------------------------------------------------------------------------------


def say_time(t: dt.time) -> str:
    if t.hour == 12 and t.minute == 0:
        return "noon"
    h = t.hour % 12 or 12
    suffix = "AM" if t.hour < 12 else "PM"
    return f"{h}:{t.minute:02d} {suffix}" if t.minute else f"{h} {suffix}"


def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def say_day(d: dt.date, today: dt.date) -> str:
    delta = (d - today).days
    if delta == 0:
        return "today"
    if delta == 1:
        return "tomorrow"
    if 1 < delta < 7:
        return d.strftime("%A")
    return f"{d:%A}, {d:%B} {_ordinal(d.day)}"


def say_when(when: dt.datetime, today: dt.date) -> str:
    t = say_time(when.time())
    return f"{say_day(when.date(), today)} at {t}"


def on_when(when: dt.datetime, today: dt.date) -> str:
    """ "on Tuesday at 3 PM", "today at 3 PM", "tomorrow at 3 PM"."""
    spoken = say_when(when, today)
    return spoken if spoken.startswith(("today", "tomorrow")) else f"on {spoken}"


def _cap(s: str) -> str:
    return s[:1].upper() + s[1:]


def _join_or(items: list[str], word: str = "or") -> str:
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + f" {word} " + items[-1]


def say_days(days: frozenset[int]) -> str:
    ds = sorted(days)
    if not ds:
        return "no days"
    if len(ds) > 2 and ds == list(range(ds[0], ds[-1] + 1)):
        return f"{WEEKDAYS[ds[0]].title()} to {WEEKDAYS[ds[-1]].title()}"
    return _join_or([WEEKDAYS[d].title() for d in ds], "and")


# -- states ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Draft:
    """What the caller has said so far about the day and time they want."""

    day: dt.date | None = None
    time: TimeRef | None = None
    part: PartOfDay | None = None
    next_week: bool = False


@dataclass(frozen=True)
class Idle:
    offer: Literal["", "anything_else", "book", "end"] = ""


@dataclass(frozen=True)
class Collecting:
    action: Literal["book", "move"]
    draft: Draft = field(default_factory=Draft)
    target: dt.datetime | None = None  # move: the appointment being moved


@dataclass(frozen=True)
class Confirming:
    action: Action
    when: dt.datetime | None  # book/move: the new time; cancel: None
    target: dt.datetime | None = None  # move/cancel: the existing appointment


@dataclass(frozen=True)
class Choosing:
    action: Literal["move", "cancel"]
    draft: Draft = field(default_factory=Draft)  # move: what was said about the new time
    among: tuple[dt.datetime, ...] = ()


@dataclass(frozen=True)
class Ended:
    pass


State = Idle | Collecting | Confirming | Choosing | Ended


def _as_time(value: dt.time | int | str) -> dt.time:
    if isinstance(value, dt.time):
        return value
    if isinstance(value, int):
        return dt.time(value)
    h, _, m = str(value).partition(":")
    return dt.time(int(h), int(m or 0))


def _as_days(value: Iterable[int | str]) -> frozenset[int]:
    out = set()
    for d in value:
        out.add(d if isinstance(d, int) else WEEKDAYS.index(str(d).strip().lower()))
    return frozenset(out)


# -- the agent -------------------------------------------------------------------------------


class DeskAgent(Agent):
    """One caller's conversation with the appointment desk."""

    name = "desk"
    CONFIG_KEYS = (
        "today",
        "now",
        "calendar",
        "busy",
        "opens",
        "closes",
        "open_days",
        "slot_minutes",
        "max_bookings",
        "caller",
        "call_sid",
        "greeting",
        "transfer_to",
    )

    def __init__(
        self,
        *,
        today: dt.date | None = None,
        now: dt.datetime | None = None,
        calendar: Calendar | None = None,
        busy: Iterable[dt.datetime] = (),
        opens: dt.time | int | str = dt.time(9),
        closes: dt.time | int | str = dt.time(17),
        open_days: Iterable[int | str] = range(5),
        slot_minutes: int = 30,
        max_bookings: int = 3,
        caller: str | None = None,
        call_sid: str | None = None,
        greeting: str | None = None,
        transfer_to: str | None = None,
    ) -> None:
        self.hours = Hours(_as_time(opens), _as_time(closes), _as_days(open_days), int(slot_minutes))
        if not (self.hours.opens < self.hours.closes and 5 <= self.hours.slot_minutes <= 240):
            raise ValueError("desk: opens must be before closes and slot_minutes 5..240")
        self.now = now
        self.today = today or (now.date() if now else dt.date.today())
        self.calendar = calendar if calendar is not None else Calendar(self.hours.slot_minutes)
        for b in busy:
            self.calendar.book(b, Calendar.OTHER)
        self.max_bookings = max(1, int(max_bookings))
        self.owner = caller or call_sid or uuid.uuid4().hex
        self._greeting = greeting
        self._state: State = Idle()
        self._misses = 0
        self._last = ""
        self._log: list[str] = []
        self.transfer_to = transfer_to or None
        self._transfer_asked = False

    # -- Agent interface --

    @property
    def ended(self) -> bool:
        return isinstance(self._state, Ended)

    def vocabulary(self) -> Vocabulary:
        return desk_vocabulary()

    def turn_complete(self, transcript: str) -> bool | None:
        """A whole request: one that needs no time (cancel, query, hours, a person); a
        booking, move or availability question with its time (or part of day); a time
        given on its own; a choice from a list offered. Anything else, answers and
        courtesies included, no opinion: the silence decides ("Yes, book it.", "Wait, I
        want...", "That's all, thank you. Goodbye." pause where they are not over)."""
        intent = parse(transcript)
        if intent.kind in ("cancel", "query", "hours", "person"):
            return True
        if intent.kind in ("book", "move", "availability", "none") and (
            intent.time is not None or intent.part is not None
        ):
            return True
        if intent.ordinal is not None and isinstance(self._state, Choosing):
            return True
        return None

    def state(self) -> dict[str, Any]:
        st = self._state
        view: dict[str, Any] = {
            "state": type(st).__name__.lower(),
            "bookings": [
                {"date": b.date().isoformat(), "time": b.strftime("%H:%M"), "spoken": say_when(b, self.today)}
                for b in self.bookings
            ],
            "misunderstood": self._misses,
        }
        if isinstance(st, (Collecting, Confirming, Choosing)):
            view["action"] = st.action
        if isinstance(st, Confirming) and st.when is not None:
            view["pending"] = st.when.isoformat(timespec="minutes")
        if self._log:
            view["log"] = self._log[-10:]
        return view

    async def reply(self, transcript: str, history: Sequence[Turn] = ()) -> AsyncGenerator[str, None]:
        text = self.respond(transcript)
        transfer, self._transfer_asked = self._transfer_asked, False
        for piece in split_pieces(text):
            yield piece
        if transfer:  # the handover line is out (a barge-in over it closes this reply first)
            outcome = await self.use_tool(
                "transfer_call", {"to": self.transfer_to, "mode": "cold", "summary": self._summary()}
            )
            self._log.append(f"transfer: {'ok' if outcome.ok else outcome.error[:100]}")
            if not outcome.ok:
                yield " " + TRANSFER_FAILED

    def _summary(self) -> str:
        """What the person taking the call is told (a warm transfer would say it)."""
        summary = "The caller asked for a person."
        if self.bookings:
            summary += " Booked: " + ", ".join(say_when(b, self.today) for b in self.bookings) + "."
        return summary

    # -- the conversation --

    @property
    def bookings(self) -> list[dt.datetime]:
        return self.calendar.owned_by(self.owner)

    def respond(self, transcript: str) -> str:
        """The desk's reply to one caller turn (synchronous; ``reply`` streams it)."""
        text = self._turn(parse(transcript))
        self._last = text
        return text

    def _turn(self, intent: Intent) -> str:
        st = self._state
        if isinstance(st, Ended):
            return "Goodbye!"
        if intent.empty:
            return self._miss("Sorry, I didn't catch that.")
        if intent.kind == "repeat" and self._last and not intent.has_when:
            return self._last
        if intent.goodbye:
            return self._goodbye(intent)
        if intent.kind == "person":  # before the state's own reading ("please" is a yes)
            self._misses = 0
            return self._person()
        handlers: dict[type, Callable[[Any, Intent], str | None]] = {
            Idle: self._on_idle,
            Collecting: self._on_collecting,
            Confirming: self._on_confirming,
            Choosing: self._on_choosing,
        }
        out = handlers[type(st)](st, intent)
        if out is None:
            out = self._on_general(intent)
        if out is None:
            return self._miss("Sorry, I didn't get that.")
        self._misses = 0
        return out

    def _set(self, state: State, text: str) -> str:
        self._state = state
        return text

    def _miss(self, prefix: str) -> str:
        self._misses += 1
        st = self._state
        if self._misses >= MAX_MISSES_BEFORE_END:
            return self._set(Ended(), "Sorry I couldn't help this time. Please call again. Goodbye!")
        if self._misses >= MAX_MISSES_BEFORE_OFFER:
            return self._set(
                Idle("end"),
                OFFER_END
                if self._misses == MAX_MISSES_BEFORE_OFFER
                else "Would you like to end the call? Please say yes or no.",
            )
        if isinstance(st, Idle) and st.offer in ("", "anything_else"):
            return FALLBACK
        return f"{prefix} {self._prompt(st)}"

    def _prompt(self, st: State) -> str:
        """The question pending in ``st`` (re-asked after an aside or a misunderstanding)."""
        if isinstance(st, Idle):
            return {
                "": "What would you like to do?",
                "anything_else": "Is there anything else?",
                "book": "Would you like to book one?",
                "end": "Would you like to end the call?",
            }[st.offer]
        if isinstance(st, Collecting):
            return self._ask(st.action, st.draft)
        if isinstance(st, Confirming):
            return self._confirm_question(st)
        if isinstance(st, Choosing):
            return self._which(st.among)
        return ""

    # -- per-state handlers: return the reply, or None for "not mine" (tried generally next) --

    def _on_idle(self, st: Idle, intent: Intent) -> str | None:
        bare = intent.kind == "none" and not intent.has_when
        if st.offer == "end":
            if intent.answer == "yes" or intent.done:
                return self._goodbye(intent)
            if intent.answer == "no" and bare:
                self._misses = 0
                return self._set(
                    Idle(), "Okay, let's try again. You can say, for example: book Tuesday at 3 PM."
                )
            return None
        if st.offer == "anything_else" and bare:
            if intent.answer == "no" or intent.done or (intent.thanks and intent.answer != "yes"):
                return self._goodbye(intent)
            if intent.answer == "yes":
                return self._set(Idle(), "Sure. What would you like to do?")
        if st.offer == "book" and intent.kind in ("none", "book"):
            if intent.answer == "yes" or intent.kind == "book" or intent.has_when:
                return self._start_book(intent)
            if intent.answer == "no":
                return self._set(Idle("anything_else"), "Okay. Is there anything else?")
        if bare and intent.answer == "yes" and st.offer == "":
            return "Sure. What would you like to do?"
        if intent.done and intent.kind == "none":
            return self._goodbye(intent)
        return None

    def _on_collecting(self, st: Collecting, intent: Intent) -> str | None:
        if intent.kind == "abort" or (intent.kind == "cancel" and not intent.has_when):
            return self._abort(st.action)
        if intent.kind == "cancel" or (intent.kind == "move" and (intent.from_day or intent.from_time)):
            return None  # a new request: handled generally
        if intent.kind == "availability" and intent.time is None:
            return self._availability(intent, st.draft)
        if intent.has_when:
            return self._advance(st.action, self._merge(st.draft, intent), st.target)
        if intent.kind in ("book", "move") and st.action == intent.kind:
            return f"Sure. {self._ask(st.action, st.draft)}"
        if intent.answer == "no":
            return self._abort(st.action)
        if intent.answer == "yes" and intent.kind == "none":
            return f"Okay. {self._ask(st.action, st.draft)}"
        return None

    def _on_confirming(self, st: Confirming, intent: Intent) -> str | None:
        if intent.kind == "abort" or (
            intent.kind == "cancel" and st.action != "cancel" and not intent.has_when
        ):
            return self._abort(st.action)
        correction = (
            intent.day is not None
            or intent.time is not None
            or (intent.part is not None and intent.answer == "no")
        )
        if correction:
            if st.action == "cancel":
                return self._start_cancel(intent)
            if st.when is not None:
                base = Draft(day=st.when.date(), time=TimeRef(st.when.hour, st.when.minute))
                if intent.part is not None and intent.time is None:
                    base = replace(base, time=None)
                return self._advance(st.action, self._merge(base, intent), st.target)
        if intent.answer == "yes" or (intent.done and intent.answer != "no"):
            return self._commit(st)
        if intent.answer == "no":
            if st.action == "cancel":
                return self._set(Idle("anything_else"), "Okay, I'll keep it. Is there anything else?")
            return self._set(
                Collecting(st.action, Draft(), st.target),
                "Okay. What day and time would suit you better?",
            )
        if intent.kind in ("query", "hours", "help", "availability"):
            return None
        if intent.kind == st.action and intent.answer != "no":  # "book it", "cancel it"
            return self._commit(st)
        if intent.kind in ("book", "move", "cancel"):
            return f"One thing at a time. {self._confirm_question(st)}"
        return None

    def _on_choosing(self, st: Choosing, intent: Intent) -> str | None:
        if intent.kind == "abort" or (
            intent.answer == "no" and not intent.has_when and intent.ordinal is None
        ):
            return self._abort(st.action)
        day = intent.day or intent.from_day
        time = intent.time or intent.from_time
        if day is None and time is None and intent.ordinal is None:
            return None
        matches = self._match(list(st.among), day, time, intent.part, intent.ordinal)
        if len(matches) == 1:
            return self._with_target(st.action, matches[0], st.draft)
        if not matches:
            return f"You don't have an appointment then. {self._which(st.among)}"
        return self._set(replace(st, among=tuple(matches)), self._which(tuple(matches)))

    def _on_general(self, intent: Intent) -> str | None:
        """Requests understood in any state: new actions, questions, asides."""
        st = self._state
        if intent.kind == "cancel":
            return self._start_cancel(intent)
        if intent.kind == "move":
            return self._start_move(intent)
        if intent.kind == "availability" and intent.time is None:
            return self._availability(intent, Draft())
        if intent.kind in ("book", "availability") or (intent.kind == "none" and intent.has_when):
            return self._start_book(intent)
        if intent.kind == "query":
            return self._aside(self._list_bookings())
        if intent.kind == "hours":
            return self._aside(self._say_hours(intent))
        if intent.kind == "help":
            return HELP if isinstance(st, Idle) else self._aside("I can book, move or cancel an appointment.")
        if intent.kind == "abort":
            return self._set(Idle("anything_else"), "Okay. Is there anything else?")
        if intent.done:
            return self._goodbye(intent)
        if intent.thanks:
            return self._aside("You're welcome.")
        return None

    def _aside(self, text: str) -> str:
        """Answer a question and return to what was pending (or ask for anything else)."""
        st = self._state
        if isinstance(st, Idle) and st.offer in ("", "anything_else"):
            return self._set(Idle("anything_else"), f"{text} Is there anything else?")
        return f"{text} {self._prompt(st)}"

    def _person(self) -> str:
        """The caller asked for a person: put them through (``reply`` starts the transfer
        after this line), or say it cannot be done and offer what can."""
        if self.transfer_to is None:
            st = self._state
            if isinstance(st, Idle):
                return self._set(Idle(), f"{CANNOT_TRANSFER} What would you like to do?")
            return f"{CANNOT_TRANSFER} {self._prompt(st)}"
        self._transfer_asked = True
        return self._set(Idle("anything_else"), HANDOVER)

    # -- actions --

    def _start_book(self, intent: Intent) -> str:
        if len(self.bookings) >= self.max_bookings:
            return self._set(Idle("anything_else"), self._too_many())
        return self._advance("book", self._merge(Draft(), intent), None)

    def _too_many(self) -> str:
        n = len(self.bookings)
        if n == 1:
            return "You already have an appointment, which is the most I can book. I can move or cancel it."
        return f"You already have {n} appointments, which is the most I can book. I can move or cancel one."

    def _start_move(self, intent: Intent) -> str:
        bookings = self.bookings
        if not bookings:
            return self._set(
                Idle("book"), "You don't have an appointment to move. Would you like to book one?"
            )
        draft = self._merge(Draft(), intent)
        if len(bookings) == 1:
            return self._with_target("move", bookings[0], draft)
        matches = self._match(bookings, intent.from_day, intent.from_time, intent.part, intent.ordinal)
        if len(matches) == 1:
            return self._with_target("move", matches[0], draft)
        among = tuple(matches or bookings)
        lost = (
            "I can't find an appointment then. "
            if (intent.from_day or intent.from_time) and not matches
            else ""
        )
        return self._set(Choosing("move", draft, among), lost + self._which(among))

    def _start_cancel(self, intent: Intent) -> str:
        bookings = self.bookings
        if not bookings:
            return self._set(
                Idle("anything_else"), "You don't have any appointments to cancel. Is there anything else?"
            )
        day, time = intent.day or intent.from_day, intent.time or intent.from_time
        matches = self._match(bookings, day, time, intent.part, intent.ordinal)
        if len(bookings) == 1:
            if (day is not None or time is not None) and not matches:
                st = Confirming("cancel", None, bookings[0])
                return self._set(
                    st,
                    f"I can't find an appointment then, but you have one "
                    f"{on_when(bookings[0], self.today)}. Shall I cancel that one?",
                )
            return self._with_target("cancel", bookings[0], Draft())
        if len(matches) == 1:
            return self._with_target("cancel", matches[0], Draft())
        among = tuple(matches or bookings)
        lost = "I can't find an appointment then. " if (day or time) and not matches else ""
        return self._set(Choosing("cancel", Draft(), among), lost + self._which(among))

    def _with_target(self, action: Literal["move", "cancel"], target: dt.datetime, draft: Draft) -> str:
        if action == "cancel":
            st = Confirming("cancel", None, target)
            return self._set(st, self._confirm_question(st))
        if draft == Draft():
            return self._set(
                Collecting("move", draft, target),
                f"Your appointment is {on_when(target, self.today)}. What day and time would you like instead?",
            )
        return self._advance("move", draft, target)

    def _advance(self, action: Literal["book", "move"], draft: Draft, target: dt.datetime | None) -> str:
        """Ask for what is missing, or check the slot and ask for confirmation."""
        if action == "move" and target is not None and (draft.day or draft.time):
            if draft.day is None:
                draft = replace(draft, day=target.date())
            if draft.time is None and draft.part is None:
                draft = replace(draft, time=TimeRef(target.hour, target.minute))
        if draft.day is None or draft.time is None:
            return self._set(Collecting(action, draft, target), self._ask(action, draft))
        t = resolve_time(draft.time, draft.part, self.hours.opens.hour, self.hours.closes.hour)
        return self._check(action, dt.datetime.combine(draft.day, t), target, draft)

    def _check(
        self, action: Literal["book", "move"], when: dt.datetime, target: dt.datetime | None, draft: Draft
    ) -> str:
        day = when.date()
        if action == "book" and len(self.bookings) >= self.max_bookings:
            return self._set(Idle("anything_else"), self._too_many())
        if day.weekday() not in self.hours.days:
            nd = replace(draft, day=None)
            return self._set(
                Collecting(action, nd, target),
                f"Sorry, we're closed on {WEEKDAYS[day.weekday()].title()}s. "
                f"We're open {say_days(self.hours.days)}. Which other day would suit you?",
            )
        if day < self.today or (self.now is not None and when <= self.now):
            nd = replace(draft, day=None if day < self.today else day, time=None, part=None)
            return self._set(
                Collecting(action, nd, target), f"Sorry, that time has passed. {self._ask(action, nd)}"
            )
        if not self.hours.within(when):
            nd = replace(draft, time=None, part=None)
            return self._set(
                Collecting(action, nd, target),
                f"Sorry, we're open from {say_time(self.hours.opens)} to {say_time(self.hours.closes)}, "
                f"and the last appointment is at {say_time(self.hours.last_start(day).time())}. "
                f"What time on {say_day(day, self.today)} would suit you?",
            )
        if target is not None and when == target:
            nd = Draft()
            return self._set(
                Collecting(action, nd, target),
                "That's already when your appointment is. What other day or time would suit you?",
            )
        if not self.calendar.is_free(when, ignore=target):
            mine = when in self.bookings and target is None
            nearest = self._nearest_free(when, target)
            taken = (
                f"You already have {say_when(when, self.today)}."
                if mine
                else f"Sorry, {say_when(when, self.today)} is taken."
            )
            if nearest is None:
                nd = replace(draft, day=None)
                return self._set(
                    Collecting(action, nd, target),
                    f"Sorry, {say_day(day, self.today)} is fully booked. Which other day would suit you?",
                )
            st = Confirming(action, nearest, target)
            what = "book" if action == "book" else "move it to"
            return self._set(
                st, f"{_cap(taken)} The nearest free time is {say_time(nearest.time())}. Shall I {what} that?"
            )
        st = Confirming(action, when, target)
        return self._set(st, self._confirm_question(st))

    def _nearest_free(self, when: dt.datetime, target: dt.datetime | None) -> dt.datetime | None:
        free = self.calendar.free_slots(when.date(), self.hours, after=self.now, ignore=target)
        free = [s for s in free if s != target]
        if not free:
            return None
        return min(free, key=lambda s: (abs(s - when), s < when))

    def _commit(self, st: Confirming) -> str:
        if st.action == "cancel":
            assert st.target is not None
            self.calendar.release(st.target, self.owner)
            self._log.append(f"cancelled {st.target.isoformat(timespec='minutes')}")
            return self._set(
                Idle("anything_else"),
                f"Done, your appointment {on_when(st.target, self.today)} is cancelled. Is there anything else?",
            )
        assert st.when is not None
        if not self.calendar.is_free(st.when, ignore=st.target):  # taken meanwhile (shared calendar)
            return self._check(st.action, st.when, st.target, Draft(day=st.when.date()))
        if st.action == "move":
            assert st.target is not None
            self.calendar.release(st.target, self.owner)
            self.calendar.book(st.when, self.owner)
            self._log.append(
                f"moved {st.target.isoformat(timespec='minutes')} to {st.when.isoformat(timespec='minutes')}"
            )
            return self._set(
                Idle("anything_else"),
                f"Done, your appointment is now {say_when(st.when, self.today)}. Is there anything else?",
            )
        self.calendar.book(st.when, self.owner)
        self._log.append(f"booked {st.when.isoformat(timespec='minutes')}")
        return self._set(
            Idle("anything_else"),
            f"Done, you're booked for {say_when(st.when, self.today)}. Is there anything else?",
        )

    def _abort(self, action: str) -> str:
        what = {
            "book": "I won't book anything",
            "move": "I'll leave it as it is",
            "cancel": "I'll keep it",
        }.get(action, "never mind")
        return self._set(Idle("anything_else"), f"Okay, {what}. Is there anything else?")

    def _goodbye(self, intent: Intent) -> str:
        st = self._state
        prefix = ""
        if isinstance(st, Confirming) and intent.answer == "yes":
            done = self._commit(st)
            prefix = done.removesuffix(" Is there anything else?") + " "
        elif isinstance(st, (Confirming, Collecting, Choosing)):
            prefix = {
                "book": "Okay, I haven't booked anything. ",
                "move": "Okay, I haven't changed anything. ",
                "cancel": "Okay, I haven't cancelled anything. ",
            }[st.action]
        upcoming = self.bookings
        see_you = f", see you {say_when(upcoming[0], self.today)}" if len(upcoming) == 1 else ""
        return self._set(Ended(), f"{prefix}Thanks for calling{see_you}. Goodbye!")

    # -- questions and answers --

    def _merge(self, draft: Draft, intent: Intent) -> Draft:
        day, next_week = draft.day, draft.next_week
        ref = intent.day
        if ref is not None:
            if ref.weekday is None and ref.offset is None:  # "next week"
                day, next_week = None, True
            else:
                if next_week and ref.weekday is not None and ref.relation == "":
                    ref = DayRef(weekday=ref.weekday, relation="next")
                day, next_week = ref.resolve(self.today), False
        time = intent.time if intent.time is not None else draft.time
        part = intent.part if intent.part is not None else (draft.part if intent.time is None else None)
        return Draft(day=day, time=time, part=part, next_week=next_week)

    def _ask(self, action: str, draft: Draft) -> str:
        if draft.day is None and draft.next_week:
            return "Which day next week?"
        if draft.day is None and draft.time is None:
            if draft.part:
                return f"What day would you like, in the {draft.part}?"
            return (
                "What day and time would you like?"
                if action == "book"
                else "What day and time would you like instead?"
            )
        if draft.day is None:
            assert draft.time is not None
            t = resolve_time(draft.time, draft.part, self.hours.opens.hour, self.hours.closes.hour)
            return f"What day would you like, at {say_time(t)}?"
        part = f" {draft.part}" if draft.part else ""
        day = say_day(draft.day, self.today)
        if day == "today":
            return f"What time this {draft.part}?" if draft.part else "What time today?"
        if day == "tomorrow":
            return f"What time tomorrow{part}?"
        return f"What time on {day}{part}?"

    def _confirm_question(self, st: Confirming) -> str:
        if st.action == "cancel":
            assert st.target is not None
            return f"Shall I cancel your appointment {on_when(st.target, self.today)}?"
        assert st.when is not None
        if st.action == "move":
            assert st.target is not None
            return (
                f"So, {say_when(st.when, self.today)} instead of {say_when(st.target, self.today)}. "
                "Shall I move it?"
            )
        return f"{_cap(say_when(st.when, self.today))}. Shall I book it?"

    def _which(self, among: Sequence[dt.datetime]) -> str:
        return f"Which one: {_join_or([say_when(b, self.today) for b in among])}?"

    def _match(
        self,
        bookings: list[dt.datetime],
        day: DayRef | None,
        time: TimeRef | None,
        part: PartOfDay | None,
        ordinal: int | None,
    ) -> list[dt.datetime]:
        out = sorted(bookings)
        if day is not None:
            d = day.resolve(self.today)
            if d is not None:
                out = [b for b in out if b.date() == d]
        if time is not None:

            def same(b: dt.datetime) -> bool:
                if time.minute != b.minute:
                    return False
                if time.meridiem is None and 1 <= time.hour <= 12 and part is None:
                    return b.hour % 12 == time.hour % 12
                return b.time().replace(second=0) == resolve_time(time, part)

            out = [b for b in out if same(b)]
        if ordinal is not None and day is None and time is None and out and -len(out) <= ordinal < len(out):
            out = [out[ordinal]]
        return out

    def _list_bookings(self) -> str:
        b = self.bookings
        if not b:
            return "You don't have any appointments booked."
        if len(b) == 1:
            return f"You have an appointment {on_when(b[0], self.today)}."
        return f"You have {len(b)} appointments: {_join_or([say_when(x, self.today) for x in b], 'and')}."

    def _say_hours(self, intent: Intent) -> str:
        hours = (
            f"We're open {say_days(self.hours.days)}, from {say_time(self.hours.opens)} "
            f"to {say_time(self.hours.closes)}."
        )
        if intent.day is not None:
            d = intent.day.resolve(self.today)
            if d is not None and d.weekday() not in self.hours.days:
                return f"Sorry, we're closed on {WEEKDAYS[d.weekday()].title()}s. {hours}"
        return hours

    def _availability(self, intent: Intent, draft: Draft) -> str:
        draft = self._merge(draft, intent)
        day = draft.day
        if day is None:
            day = self.today + dt.timedelta(days=1)
            for _ in range(14):
                if day.weekday() in self.hours.days and self.calendar.free_slots(
                    day, self.hours, after=self.now
                ):
                    break
                day += dt.timedelta(days=1)
        spoken = say_day(day, self.today)
        if day.weekday() not in self.hours.days:
            return self._set(
                Collecting("book", replace(draft, day=None)),
                f"Sorry, we're closed on {WEEKDAYS[day.weekday()].title()}s. Which other day would suit you?",
            )
        free = self.calendar.free_slots(day, self.hours, after=self.now)
        if draft.part == "morning":
            free = [s for s in free if s.hour < 12]
        elif draft.part in ("afternoon", "evening"):
            free = [s for s in free if s.hour >= 12]
        if not free:
            return self._set(
                Collecting("book", replace(draft, day=None, part=None)),
                f"Sorry, {spoken} is fully booked. Which other day would suit you?",
            )
        times = _join_or([say_time(s.time()) for s in free[:3]], "and")
        lead = "the earliest free times are" if len(free) > 1 else "the only free time is"
        on = spoken if spoken in ("today", "tomorrow") else f"on {spoken}"
        return self._set(
            Collecting("book", replace(draft, day=day)), f"{_cap(on)}, {lead} {times}. Which would you like?"
        )
