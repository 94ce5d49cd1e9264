"""The appointment desk's ear: ``parse(text) -> Intent``, pure functions, no state, no clock.

Input is a speech-recognition transcript: often lowercase, unpunctuated, with numbers as
words or digits and the usual misrecognitions. ``tokenize`` normalises it (``3pm``,
``3 p.m.`` -> ``3 pm``; ``o'clock`` -> ``oclock``; ``to morrow`` -> ``tomorrow``;
``tues day`` -> ``tuesday``; ``tree`` -> ``three``), then small scanners find the days
(``find_days``), the times (``find_times``) and the part of the day, and phrase tables give
the intent's kind, a yes/no answer and flags (goodbye, thanks, "that's all").

Misheard numbers (``to``/``too`` for two, ``for``/``fore`` for four, ``won`` for one,
``ate`` for eight) and the ambiguous ``one`` are only read as an hour with context:
followed by am/pm/o'clock or minutes, after "at"/"around"/..., or as the whole answer.
Other number words (two..twelve, digits) are read as an hour unless a noun follows
("two days", "three people").

Days and times stay symbolic (``DayRef``, ``TimeRef``): ``DayRef.resolve(today)`` gives the
date, and ``resolve_time`` turns an hour with no am/pm into business hours ("two" -> 14:00).
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from typing import Literal, TypeVar

WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")

_DAY_ALIASES = {
    "mon": "monday",
    "mondays": "monday",
    "tue": "tuesday",
    "tues": "tuesday",
    "tuesdays": "tuesday",
    "chewsday": "tuesday",
    "wed": "wednesday",
    "weds": "wednesday",
    "wednesdays": "wednesday",
    "wensday": "wednesday",
    "wendsday": "wednesday",
    "wednsday": "wednesday",
    "thu": "thursday",
    "thur": "thursday",
    "thurs": "thursday",
    "thursdays": "thursday",
    "thirsday": "thursday",
    "fri": "friday",
    "fridays": "friday",
    "fryday": "friday",
    "saturdays": "saturday",
    "sundays": "sunday",
    "tomorow": "tomorrow",
    "tommorow": "tomorrow",
    "tommorrow": "tomorrow",
    "tomorrows": "tomorrow",
    "2morrow": "tomorrow",
    "todays": "today",
    "tree": "three",
    "fourty": "forty",
    "passed": "past",
    "midday": "noon",
    "okay": "ok",
}
# Two tokens that a recogniser splits: "tues day", "to morrow", "good bye", "o clock".
_JOIN = {
    ("mon", "day"): "monday",
    ("tues", "day"): "tuesday",
    ("tue", "day"): "tuesday",
    ("wednes", "day"): "wednesday",
    ("wens", "day"): "wednesday",
    ("thurs", "day"): "thursday",
    ("thur", "day"): "thursday",
    ("fri", "day"): "friday",
    ("satur", "day"): "saturday",
    ("sun", "day"): "sunday",
    ("to", "morrow"): "tomorrow",
    ("to", "day"): "today",
    ("good", "bye"): "goodbye",
    ("o", "clock"): "oclock",
    ("mid", "day"): "noon",
    ("after", "noon"): "afternoon",
    ("p", "m"): "pm",
}

HOUR_WORDS = {
    "one": 1,
    "two": 2,
    "three": 3,
    "four": 4,
    "five": 5,
    "six": 6,
    "seven": 7,
    "eight": 8,
    "nine": 9,
    "ten": 10,
    "eleven": 11,
    "twelve": 12,
}
MISHEARD_HOURS = {"to": 2, "too": 2, "for": 4, "fore": 4, "won": 1, "ate": 8}
_UNITS = {"one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9}
_TEENS = {
    "ten": 10,
    "eleven": 11,
    "twelve": 12,
    "thirteen": 13,
    "fourteen": 14,
    "fifteen": 15,
    "sixteen": 16,
    "seventeen": 17,
    "eighteen": 18,
    "nineteen": 19,
}
_TENS = {"twenty": 20, "thirty": 30, "forty": 40, "fifty": 50}
_COUNT_WORDS = {
    "a": 1,
    "an": 1,
    "one": 1,
    "two": 2,
    "three": 3,
    "four": 4,
    "five": 5,
    "six": 6,
    "seven": 7,
    "couple": 2,
    "few": 3,
}

_TIME_PREPS = {
    "at",
    "around",
    "about",
    "by",
    "until",
    "till",
    "til",
    "after",
    "before",
    "from",
    "say",
    "maybe",
    "try",
    "approximately",
    "roughly",
}
_NOT_A_TIME_AFTER = {
    "day",
    "days",
    "week",
    "weeks",
    "month",
    "months",
    "year",
    "years",
    "people",
    "persons",
    "of",
    "minute",
    "minutes",
    "mins",
    "hour",
    "hours",
    "times",
    "appointments",
    "appointment",
    "bookings",
    "slots",
    "kids",
    "children",
    "more",
    "other",
    "others",
    "things",
    "dollars",
    "percent",
    "thousand",
    "hundred",
    "point",
    "them",
}
_NOT_A_TIME_BEFORE = {
    "the",
    "that",
    "this",
    "which",
    "another",
    "a",
    "an",
    "first",
    "new",
    "other",
    "any",
    "no",
    "every",
    "each",
    "those",
    "these",
    "number",
    "option",
    "press",
}
_MERIDIEM: dict[str, Literal["am", "pm"]] = {"am": "am", "pm": "pm"}
FILLERS = {
    "um",
    "uh",
    "er",
    "erm",
    "ah",
    "hmm",
    "mm",
    "at",
    "around",
    "about",
    "say",
    "lets",
    "let",
    "us",
    "make",
    "it",
    "how",
    "maybe",
    "please",
    "ok",
    "yes",
    "yeah",
    "no",
    "then",
    "the",
    "well",
    "so",
    "oh",
    "i",
    "guess",
    "think",
    "would",
    "be",
    "fine",
    "try",
    "actually",
    "instead",
    "and",
    "sure",
    "is",
    "that",
    "good",
    "can",
    "you",
    "do",
    "on",
    "for",
    "just",
    "like",
    "thanks",
}

Kind = Literal[
    "book", "move", "cancel", "query", "hours", "availability", "repeat", "help", "person", "abort", "none"
]
PartOfDay = Literal["morning", "afternoon", "evening"]


@dataclass(frozen=True)
class DayRef:
    """A day as said. ``offset``: days from today; else ``weekday`` (0 = Monday) with
    ``relation``: "" (the next one after today), "this" (today counts) or "next" (in next
    calendar week, Monday to Sunday). A bare "next week" has no weekday."""

    weekday: int | None = None
    offset: int | None = None
    relation: Literal["", "this", "next"] = ""

    def resolve(self, today: dt.date) -> dt.date | None:
        if self.offset is not None:
            return today + dt.timedelta(days=self.offset)
        if self.weekday is None:
            return None
        if self.relation == "next":
            monday = today + dt.timedelta(days=7 - today.weekday())
            return monday + dt.timedelta(days=self.weekday)
        delta = (self.weekday - today.weekday()) % 7
        if delta == 0 and self.relation != "this":
            delta = 7
        return today + dt.timedelta(days=delta)


@dataclass(frozen=True)
class TimeRef:
    """A time as said: ``hour`` 0..23; with ``meridiem`` None and hour 1..12 it is ambiguous
    (``resolve_time`` decides); 0 and 13..23 are absolute."""

    hour: int
    minute: int = 0
    meridiem: Literal["am", "pm"] | None = None


@dataclass(frozen=True)
class Intent:
    kind: Kind = "none"
    day: DayRef | None = None  # the day mentioned (for "move": the new day)
    time: TimeRef | None = None  # the time mentioned (for "move": the new time)
    part: PartOfDay | None = None  # morning / afternoon / evening
    from_day: DayRef | None = None  # "move": the appointment being moved
    from_time: TimeRef | None = None
    answer: Literal["yes", "no"] | None = None
    goodbye: bool = False  # bye, goodbye, hang up, have a nice day
    done: bool = False  # that's all, that's it, nothing else, all set
    thanks: bool = False
    ordinal: int | None = None  # "the first one" 0, "second" 1, "last" -1
    text: str = ""  # the normalised words

    @property
    def has_when(self) -> bool:
        return self.day is not None or self.time is not None or self.part is not None

    @property
    def empty(self) -> bool:
        return not self.text


# -- tokenising ------------------------------------------------------------------------------


def tokenize(text: str) -> list[str]:
    """Lowercase words and digits (``h:mm`` kept whole); misheard splits and spellings joined."""
    t = str(text).lower().replace("\u2019", "'")
    t = re.sub(r"(\d)\s*([ap])\.?\s*m\b\.?", r"\1 \2m", t)  # 3pm, 3 p.m. -> 3 pm
    t = re.sub(r"\b([ap])\.\s*m\.", r"\1m", t)  # p.m. -> pm
    t = t.replace("'", "")  # o'clock -> oclock, that's -> thats
    t = re.sub(r"(\d{1,2})\.(\d{2})\b", r"\1:\2", t)  # 3.30 -> 3:30
    t = re.sub(r"[^a-z0-9:]+", " ", t)
    t = re.sub(r"(?<!\d):|:(?!\d)", " ", t)
    t = re.sub(r"\b(\d+)(?:st|nd|rd|th)\b", r"dom\1", t)  # "the 14th": inert (no dates)
    t = re.sub(r"(\d)([a-z])", r"\1 \2", t)  # 3ish -> 3 ish
    raw = t.split()
    out: list[str] = []
    i = 0
    while i < len(raw):
        w = raw[i]
        if i + 1 < len(raw) and (w, raw[i + 1]) in _JOIN:
            out.append(_JOIN[(w, raw[i + 1])])
            i += 2
            continue
        if w in ("a", "p") and i + 1 < len(raw) and raw[i + 1] == "m" and out and _numberish(out[-1]):
            out.append(w + "m")
            i += 2
            continue
        if w == "a" and i + 1 < len(raw) and raw[i + 1] == "clock" and out and _numberish(out[-1]):
            out.append("oclock")
            i += 2
            continue
        out.append(_DAY_ALIASES.get(w, w))
        i += 1
    return out


def _numberish(w: str) -> bool:
    return w in HOUR_WORDS or w in MISHEARD_HOURS or w in _TENS or w in _TEENS or w[:1].isdigit()


# -- days ------------------------------------------------------------------------------------

Span = tuple[int, int]  # [start, end) token indices
_Ref = TypeVar("_Ref", DayRef, TimeRef)


def find_days(tokens: list[str]) -> list[tuple[Span, DayRef]]:
    found: list[tuple[Span, DayRef]] = []
    i = 0
    n = len(tokens)
    while i < n:
        w = tokens[i]
        if w in ("today", "tonight"):
            found.append(((i, i + 1), DayRef(offset=0)))
            i += 1
        elif w == "tomorrow":
            start = i
            if i >= 2 and tokens[i - 2 : i] == ["day", "after"]:
                start = i - 2
                if found and found[-1][0][1] > start:
                    found.pop()
                found.append(((start, i + 1), DayRef(offset=2)))
            else:
                found.append(((i, i + 1), DayRef(offset=1)))
            i += 1
        elif (
            w == "in"
            and i + 2 < n
            and _count(tokens[i + 1]) is not None
            and tokens[i + 2] in ("day", "days", "week", "weeks")
        ):
            k = _count(tokens[i + 1]) or 0
            days = k * 7 if tokens[i + 2].startswith("week") else k
            found.append(((i, i + 3), DayRef(offset=min(days, 366))))
            i += 3
        elif (
            w == "in"
            and i + 3 < n
            and tokens[i + 1] == "a"
            and tokens[i + 2] == "couple"
            and tokens[i + 3] in ("days", "weeks")
        ):
            found.append(((i, i + 4), DayRef(offset=2 if tokens[i + 3] == "days" else 14)))
            i += 4
        elif w in WEEKDAYS:
            start = i
            relation: Literal["", "this", "next"] = ""
            if i >= 1 and tokens[i - 1] in ("next", "this", "coming"):
                relation = "next" if tokens[i - 1] == "next" else "this"
                start = i - 1
            end = i + 1
            if tokens[i + 1 : i + 3] == ["next", "week"]:
                relation, end = "next", i + 3
            elif tokens[i + 1 : i + 3] == ["this", "week"]:
                relation, end = "this", i + 3
            elif i >= 2 and tokens[i - 2 : i] == ["next", "week"] and (found and found[-1][0] == (i - 2, i)):
                found.pop()
                relation, start = "next", i - 2
            found.append(((start, end), DayRef(weekday=WEEKDAYS.index(w), relation=relation)))
            i = end
        elif w == "next" and i + 1 < n and tokens[i + 1] == "week":
            found.append(((i, i + 2), DayRef(relation="next")))
            i += 2
        else:
            i += 1
    return found


def _count(w: str) -> int | None:
    if w.isdigit():
        return int(w) if len(w) <= 3 else None
    return _COUNT_WORDS.get(w)


# -- times -----------------------------------------------------------------------------------


def _minutes_at(tokens: list[str], j: int) -> tuple[int, int] | None:
    """Minutes after an hour at ``j``: "thirty", "forty five", "oh five", "30"; (minute, end)."""
    if j >= len(tokens):
        return None
    w = tokens[j]
    nxt = tokens[j + 1] if j + 1 < len(tokens) else ""
    if w in _TENS:
        if nxt in _UNITS:
            return _TENS[w] + _UNITS[nxt], j + 2
        return _TENS[w], j + 1
    if w in _TEENS:
        return _TEENS[w], j + 1
    if w in ("oh", "o", "zero") and nxt in _UNITS:
        return _UNITS[nxt], j + 2
    if w in ("oh", "o") and nxt.isdigit() and len(nxt) == 1:
        return int(nxt), j + 2
    if w.isdigit() and len(w) == 2 and int(w) < 60:
        return int(w), j + 1
    return None


_PAST_MINUTES = {"quarter": 15, "half": 30, "five": 5, "ten": 10, "twenty": 20}


def _hour_value(w: str) -> int | None:
    if w in HOUR_WORDS:
        return HOUR_WORDS[w]
    if w.isdigit() and len(w) <= 2 and 0 <= int(w) <= 23:
        return int(w)
    return None


def _time_at(tokens: list[str], i: int, consumed: set[int]) -> tuple[int, TimeRef] | None:
    """A time starting at token ``i``: (end index, TimeRef), or None."""
    n = len(tokens)
    w = tokens[i]
    prev = tokens[i - 1] if i > 0 else ""
    nxt = tokens[i + 1] if i + 1 < n else ""
    if w == "noon":
        return i + 1, TimeRef(12, 0, "pm")
    if w == "midnight":
        return i + 1, TimeRef(0, 0, "am")
    # "half past two", "quarter past ten", "twenty five past three", "quarter to three"
    j, before = i, None
    if w == "a" and nxt == "quarter":
        j = i + 1
    if tokens[j] == "twenty" and j + 1 < n and tokens[j + 1] == "five":
        before, j = 25, j + 2
    elif tokens[j] in _PAST_MINUTES:
        before, j = _PAST_MINUTES[tokens[j]], j + 1
    if before is not None and j < n and j + 1 < n:
        if tokens[j] == "minutes" and j + 1 < n:
            j += 1
        rel = tokens[j] if j < n else ""
        target = _hour_value(tokens[j + 1]) if j + 1 < n else None
        if target is None and j + 1 < n:
            target = MISHEARD_HOURS.get(tokens[j + 1])
        if target is not None and 1 <= target <= 23:
            end = _meridiem_end(tokens, j + 2)
            mer = _MERIDIEM.get(tokens[j + 2]) if j + 2 < n else None
            if rel in ("past", "after"):
                return end, TimeRef(target, before, mer)
            if rel in ("to", "till", "til", "of") and (
                before in (15, 20, 25) or tokens[i:j][-1:] == ["minutes"]
            ):
                last_hour = target - 1 if target > 1 else 12
                if target == 12 and mer is None:
                    last_hour = 11
                return end, TimeRef(last_hour, 60 - before, mer)
    if w == "half" and (h := _hour_value(nxt)) is not None and 1 <= h <= 12:  # British "half two"
        return _meridiem_end(tokens, i + 2), TimeRef(h, 30, _mer(tokens, i + 2))
    # "3:30", "1530"
    m = re.fullmatch(r"(\d{1,2}):(\d{2})", w)
    if m:
        h, mi = int(m.group(1)), int(m.group(2))
        if h <= 23 and mi < 60:
            return _meridiem_end(tokens, i + 1), TimeRef(h, mi, _mer(tokens, i + 1) if h <= 12 else None)
        return None
    if w.isdigit() and len(w) in (3, 4):
        h, mi = int(w[:-2]), int(w[-2:])
        if h <= 23 and mi < 60 and (nxt in _MERIDIEM or prev in ("at", "around")):
            return _meridiem_end(tokens, i + 1), TimeRef(h, mi, _mer(tokens, i + 1) if h <= 12 else None)
        return None
    # an hour word, digit or misheard word, then minutes, o'clock, am/pm
    hour = _hour_value(w)
    misheard = hour is None and w in MISHEARD_HOURS
    if misheard:
        hour = MISHEARD_HOURS[w]
    if hour is None:
        return None
    j = i + 1
    minute = 0
    mins = _minutes_at(tokens, j)
    had_minutes = False
    if mins is not None:
        minute, j = mins
        had_minutes = True
        if j < n and tokens[j] in ("minutes", "mins", "minute"):
            return None  # "for thirty minutes": a duration, not a time
    oclock = j < n and tokens[j] == "oclock"
    if oclock:
        j += 1
    mer = _MERIDIEM.get(tokens[j]) if j < n else None
    noon = j < n and tokens[j] == "noon" and hour == 12
    if mer or noon:
        j += 1
    strong = bool(mer or noon or oclock or had_minutes)
    after = tokens[j] if j < n else ""
    if after in _NOT_A_TIME_AFTER and not (mer or oclock):
        return None
    if hour > 12:
        return j, TimeRef(hour, minute, None)
    if hour == 0 and not had_minutes:
        return None
    if not strong:
        if prev in _NOT_A_TIME_BEFORE:
            return None
        if w == "one" and (i - 1 in consumed or prev in ("am", "pm", "oclock", "noon")):
            return None  # "the tuesday one", "the 3 pm one"
        if misheard or w == "one":
            alone = all(t in FILLERS for k, t in enumerate(tokens) if k != i and k not in consumed)
            if misheard:
                at_end = i == n - 1 or after in ("in", "this", "on", "tomorrow", "today")
                ok = (prev in _TIME_PREPS or prev in ("it", "at")) and at_end
                if not ok and not (alone and w not in ("to", "for")):
                    return None
            elif not (prev in _TIME_PREPS or alone or after in ("in", "this", "tomorrow", "today")):
                return None
    meridiem = "pm" if noon else mer
    return j, TimeRef(hour, minute, meridiem)


def _mer(tokens: list[str], j: int) -> Literal["am", "pm"] | None:
    return _MERIDIEM.get(tokens[j]) if j < len(tokens) else None


def _meridiem_end(tokens: list[str], j: int) -> int:
    return j + 1 if j < len(tokens) and tokens[j] in _MERIDIEM else j


def find_times(tokens: list[str], consumed: set[int] | None = None) -> list[tuple[Span, TimeRef]]:
    """Times in ``tokens``, skipping ``consumed`` indices (days already found)."""
    consumed = consumed or set()
    found: list[tuple[Span, TimeRef]] = []
    i = 0
    while i < len(tokens):
        if i in consumed:
            i += 1
            continue
        hit = _time_at(tokens, i, consumed)
        if hit is not None and not any(k in consumed for k in range(i, hit[0])):
            found.append(((i, hit[0]), hit[1]))
            i = hit[0]
        else:
            i += 1
    return found


def find_part(tokens: list[str]) -> PartOfDay | None:
    part: PartOfDay | None = None
    for w in tokens:
        if w == "morning":
            part = "morning"
        elif w in ("afternoon", "lunchtime"):
            part = "afternoon"
        elif w in ("evening", "tonight", "night"):
            part = "evening"
    return part


def resolve_time(ref: TimeRef, part: PartOfDay | None = None, opens: int = 9, closes: int = 17) -> dt.time:
    """The clock time meant. Without am/pm or a part of the day, an hour 1..12 is read as the
    one inside business hours [opens, closes) ("two" -> 14:00, "ten" -> 10:00); if both or
    neither are, 1..6 are PM and 7..12 AM/noon (12 is always noon)."""
    h, mi = ref.hour, ref.minute
    if h == 0 or h > 12:
        return dt.time(h % 24, mi)
    if ref.meridiem == "am" or (ref.meridiem is None and part == "morning"):
        return dt.time(h % 12, mi)
    if ref.meridiem == "pm" or (ref.meridiem is None and part in ("afternoon", "evening")):
        return dt.time(h % 12 + 12, mi)
    if h == 12:
        return dt.time(12, mi)
    am_ok = opens <= h < closes
    pm_ok = opens <= h + 12 < closes
    if am_ok != pm_ok:
        return dt.time(h if am_ok else h + 12, mi)
    return dt.time(h + 12 if h <= 6 else h, mi)


# -- phrases ---------------------------------------------------------------------------------


def _rx(*alternatives: str) -> re.Pattern[str]:
    return re.compile(r"\b(?:" + "|".join(alternatives) + r")\b")


_CANCEL = _rx(
    r"cancel\w*",
    r"can sell",
    r"council",
    r"call (?:it |that )?off",
    r"delete",
    r"remove",
    r"scrap",
    r"(?:cant|cannot|can not|wont|will not|wont be able to) (?:make|come|attend)",
)
_MOVE = _rx(
    r"move",
    r"moving",
    r"reschedul\w*",
    r"re schedule",
    r"change",
    r"changing",
    r"push",
    r"postpone",
    r"bring (?:it |that )?forward",
    r"switch",
    r"rebook",
    r"(?:different|another|other) (?:time|day)",
    r"instead",
)
_QUERY = _rx(
    r"what do i have",
    r"what have i got",
    r"whats booked",
    r"what is booked",
    r"what did i book",
    r"what have i booked",
    r"when is my",
    r"whens my",
    r"when s my",
    r"what time is my",
    r"what day is my",
    r"which day is my",
    r"whats my",
    r"what is my",
    r"do i have",
    r"my (?:appointments|bookings)",
    r"remind me",
    r"check my",
    r"what are my",
    r"is my appointment",
    r"am i booked",
    r"read (?:it|them) back",
    r"when am i (?:booked|coming|in)",
)
_HOURS = _rx(
    r"opening hours",
    r"your hours",
    r"what hours",
    r"when are you open",
    r"when do you (?:open|close)",
    r"what time do you (?:open|close)",
    r"are you open",
    r"business hours",
    r"office hours",
)
_AVAIL = _rx(
    r"what times?",
    r"which times?",
    r"what (?:do|have) you (?:got|have)",
    r"(?:are|is) (?:you|there|it|that|this) (?:free|available)",
    r"any (?:openings|availability|slots|times|free)",
    r"availability",
    r"available",
    r"free slots?",
    r"openings",
    r"when can i come",
    r"earliest",
    r"first available",
    r"anything (?:free|open)",
    r"(?:is|are) there any(?:thing)?",
    r"do you have any(?:thing)?",
)
_BOOK = _rx(
    r"book",
    r"booking",
    r"appointment",
    r"appointments",
    r"a point meant",
    r"schedule",
    r"reserve",
    r"set up",
    r"come in",
    r"get in",
    r"see (?:the )?(?:doctor|dentist)",
    r"an? (?:slot|visit)",
    r"i need",
    r"id like",
    r"i would like",
    r"i want",
    r"can i (?:get|have)",
    r"make an?",
)
_REPEAT = _rx(
    r"repeat",
    r"say (?:that|it) again",
    r"come again",
    r"pardon",
    r"didnt (?:catch|hear|get|understand) (?:that|it|you)",
    r"what did you say",
    r"sorry what",
)
_HELP = _rx(
    r"help",
    r"what can you do",
    r"options",
    r"menu",
    r"who are you",
    r"what is this",
)
_PERSON = _rx(
    r"(?:talk|speak|speaking|talking) (?:to|with) (?:someone|somebody|anyone|anybody|a person|a human|"
    r"a real person|a live person|an? (?:actual )?(?:human|person|agent|operator|receptionist|representative)|"
    r"(?:the |a )?(?:front desk|reception|receptionist|manager|staff))",
    r"(?:real|live|actual) (?:person|human|people)",
    r"an? (?:person|human)",
    r"humans?",
    r"operator",
    r"receptionist",
    r"representative",
    # only asking for a person puts these words in the desk's vocabulary: alone, or beside a
    # misheard word ("a real thirty please", "can the someone"), they still ask for one
    r"someone",
    r"somebody",
    r"person",
    r"real",
    r"(?:talk|speak|speaking|talking) (?:to|with)",
    r"transfer me",
    r"put me through",
    r"connect me",
)
_ABORT = _rx(r"never ?mind", r"forget (?:it|that|about it)", r"scratch that", r"dont bother", r"stop")
_YES = _rx(
    r"yes",
    r"yeah",
    r"yea",
    r"yep",
    r"yup",
    r"ya",
    r"yah",
    r"yeh",
    r"sure",
    r"ok",
    r"correct",
    r"right",
    r"sounds good",
    r"perfect",
    r"great",
    r"please do",
    r"go ahead",
    r"do it",
    r"absolutely",
    r"definitely",
    r"fine",
    r"that works",
    r"works for me",
    r"alright",
    r"all right",
    r"affirmative",
    r"uh huh",
    r"mhm",
    r"mm hmm",
    r"confirm",
    r"exactly",
    r"of course",
    r"lovely",
    r"excellent",
    r"brilliant",
    r"thats it",
    r"that is it",
    r"please",
)
_NO = _rx(
    r"no",
    r"nope",
    r"nah",
    r"not",
    r"thats not",
    r"wrong",
    r"incorrect",
    r"negative",
    r"dont",
    r"do not",
    r"rather not",
    r"hold on",
    r"wait",
)
_GOODBYE = _rx(
    r"bye",
    r"goodbye",
    r"bye bye",
    r"hang up",
    r"see you",
    r"see ya",
    r"take care",
    r"have a (?:good|nice|great|lovely) (?:day|one|evening|weekend|afternoon)",
)
_DONE = _rx(
    r"thats all",
    r"that is all",
    r"thats everything",
    r"nothing else",
    r"thats it",
    r"that is it",
    r"im done",
    r"i am done",
    r"were done",
    r"all done",
    r"all set",
    r"im good",
    r"no more",
    r"nothing more",
)
_THANKS = _rx(r"thanks", r"thank you", r"thank u", r"cheers", r"appreciate it", r"much appreciated")
_ORDINALS = {
    "first": 0,
    "former": 0,
    "earlier": 0,
    "earliest": 0,
    "second": 1,
    "third": 2,
    "last": -1,
    "latter": -1,
    "later": -1,
    "latest": -1,
}
_MOVE_MARKERS = ("to", "till", "until", "into")
_SOURCE_NOUNS = ("appointment", "booking", "one", "slot", "appt", "a point meant")
_SKIP_BEFORE_WHEN = {"the", "on", "at", "around", "about", "a", "for"}


def parse(text: str) -> Intent:
    """What the caller said, as an ``Intent``. Never raises."""
    tokens = tokenize(text)
    s = " ".join(tokens)
    if not tokens:
        return Intent()
    days = find_days(tokens)
    if any(r.weekday is None and r.offset is None for _, r in days):  # "next week, on tuesday"
        days = [
            (
                sp,
                DayRef(weekday=r.weekday, relation="next") if r.weekday is not None and not r.relation else r,
            )
            for sp, r in days
            if r.weekday is not None or r.offset is not None
        ] or days
    consumed = {k for (a, b), _ in days for k in range(a, b)}
    times = find_times(tokens, consumed)

    if _PERSON.search(s):  # "can i talk to someone": before book ("i would like ...")
        kind: Kind = "person"
    elif _CANCEL.search(s):
        kind = "cancel"
    elif _MOVE.search(s):
        kind = "move"
    elif _QUERY.search(s):
        kind = "query"
    elif _HOURS.search(s):
        kind = "hours"
    elif _AVAIL.search(s):
        kind = "availability"
    elif _BOOK.search(s):
        kind = "book"
    elif _REPEAT.search(s):
        kind = "repeat"
    elif _HELP.search(s):
        kind = "help"
    elif _ABORT.search(s):
        kind = "abort"
    else:
        kind = "none"

    yn = re.sub(r"\bno (?:problem|worries)\b", "ok", s)
    yes, no = _YES.search(yn), _NO.search(yn)
    answer: Literal["yes", "no"] | None = None
    if yes and no:
        answer = "yes" if yes.start() < no.start() else "no"
    elif yes or no:
        answer = "yes" if yes else "no"

    ordinal = None
    for w in tokens:
        if w in _ORDINALS:
            ordinal = _ORDINALS[w]

    day = days[-1][1] if days else None
    time = times[-1][1] if times else None
    from_day = from_time = None
    if kind == "move":
        day, time, from_day, from_time = _split_move(tokens, days, times)

    return Intent(
        kind=kind,
        day=day,
        time=time,
        part=find_part(tokens),
        from_day=from_day,
        from_time=from_time,
        answer=answer,
        goodbye=bool(_GOODBYE.search(s)),
        done=bool(_DONE.search(s)),
        thanks=bool(_THANKS.search(s)),
        ordinal=ordinal,
        text=s,
    )


def _split_move(
    tokens: list[str], days: list[tuple[Span, DayRef]], times: list[tuple[Span, TimeRef]]
) -> tuple[DayRef | None, TimeRef | None, DayRef | None, TimeRef | None]:
    """Split a move request into the new day/time and the appointment being moved.

    "move my tuesday appointment to thursday", "move it from 3 pm to 4", "reschedule for
    friday": a marker (to/till/until/into, else for) directly before a day or time splits
    source from target; with no marker, a day/time before "appointment"/"one" or after
    "my"/"from"/"the" is the source and any other is the target."""
    spans: list[tuple[Span, DayRef | TimeRef]] = [*days, *times]
    starts = {a for (a, _), _ in spans}
    inside = {k for (a, b), _ in spans for k in range(a, b)}

    def marker_ok(m: int) -> bool:
        k = m + 1
        while k < len(tokens) and tokens[k] in _SKIP_BEFORE_WHEN and k not in starts:
            k += 1
        return k in starts and m not in inside

    marker = next((m for m, w in enumerate(tokens) if w in _MOVE_MARKERS and marker_ok(m)), None)
    if marker is None:
        marker = next((m for m, w in enumerate(tokens) if w == "for" and marker_ok(m)), None)

    src: list[tuple[Span, DayRef | TimeRef]] = []
    dst: list[tuple[Span, DayRef | TimeRef]] = []
    for span, ref in sorted(spans, key=lambda x: x[0]):
        a, b = span
        if marker is not None:
            (src if b <= marker else dst).append((span, ref))
            continue
        after = " ".join(tokens[b : b + 3])
        before = tokens[a - 1] if a > 0 else ""
        is_src = any(after.startswith(nn) for nn in _SOURCE_NOUNS) or before in ("my", "from", "the")
        (src if is_src else dst).append((span, ref))

    def last(items: list[tuple[Span, DayRef | TimeRef]], cls: type[_Ref]) -> _Ref | None:
        picked = [r for _, r in items if isinstance(r, cls)]
        return picked[-1] if picked else None

    return (last(dst, DayRef), last(dst, TimeRef), last(src, DayRef), last(src, TimeRef))
