"""The embedded appointment desk: parser units, scripted conversations, properties."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from callbridge.agents import Agent, Turn, create_agent, reply_text
from callbridge.agents.base import split_pieces
from callbridge.agents.desk import Calendar, DeskAgent, say_time
from callbridge.agents.desk_parse import DayRef, TimeRef, parse, resolve_time, tokenize

MONDAY = dt.date(2025, 3, 10)  # a Monday: Wednesday is the 12th, Thursday the 13th, Friday the 14th
THU = dt.date(2025, 3, 13)
FRI = dt.date(2025, 3, 14)


def at(day: dt.date, hour: int, minute: int = 0) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(hour, minute))


def desk(**kw) -> DeskAgent:
    kw.setdefault("today", MONDAY)
    return DeskAgent(**kw)


class Script:
    """Talk to an agent turn by turn, through its streaming ``reply``, keeping the history."""

    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        self.history: list[Turn] = []

    async def say(self, text: str) -> str:
        pieces = [p async for p in self.agent.reply(text, list(self.history))]
        answer = "".join(pieces)
        assert answer.strip(), f"no reply to {text!r}"
        self.history += [Turn("caller", text), Turn("agent", answer)]
        return answer


# -- parser ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, kind, day, time",
    [
        ("I'd like to book an appointment for Thursday at 3 PM", "book", THU, dt.time(15)),
        ("book thursday 3pm", "book", THU, dt.time(15)),
        ("can i make an appointment thursday at three p.m.", "book", THU, dt.time(15)),
        ("ten thirty", "none", None, dt.time(10, 30)),
        ("nine in the morning", "none", None, dt.time(9)),
        ("noon", "none", None, dt.time(12)),
        ("twelve noon on friday", "none", FRI, dt.time(12)),
        ("half past two", "none", None, dt.time(14, 30)),
        ("quarter past ten", "none", None, dt.time(10, 15)),
        ("quarter to three", "none", None, dt.time(14, 45)),
        ("two o'clock", "none", None, dt.time(14)),
        ("two oclock", "none", None, dt.time(14)),
        ("three in the afternoon", "none", None, dt.time(15)),
        ("four thirty", "none", None, dt.time(16, 30)),
        ("at 4.30", "none", None, dt.time(16, 30)),
        ("11:15 am", "none", None, dt.time(11, 15)),
        ("15:00", "none", None, dt.time(15)),
        ("ten oh five", "none", None, dt.time(10, 5)),
        ("tomorrow afternoon", "none", dt.date(2025, 3, 11), None),
        ("today", "none", MONDAY, None),
        ("the day after tomorrow", "none", dt.date(2025, 3, 12), None),
        ("in two days", "none", dt.date(2025, 3, 12), None),
        ("next tuesday", "none", dt.date(2025, 3, 18), None),
        ("tuesday next week", "none", dt.date(2025, 3, 18), None),
        ("next week on tuesday", "none", dt.date(2025, 3, 18), None),
        ("this friday", "none", FRI, None),
        # misrecognitions
        ("book to morrow at to pm", "book", dt.date(2025, 3, 11), dt.time(14)),
        ("tues day at for", "none", dt.date(2025, 3, 11), dt.time(16)),
        ("thurs day at too thirty", "none", THU, dt.time(14, 30)),
        ("wensday at tree", "none", dt.date(2025, 3, 12), dt.time(15)),
        ("friday at won pm", "none", FRI, dt.time(13)),
        ("no make it for", "none", None, dt.time(16)),
        ("ten a clock", "none", None, dt.time(10)),
        ("can sell my appointment", "cancel", None, None),
        # not times
        ("i need two appointments", "book", None, None),
        ("the 14th", "none", None, None),
        ("book one for friday", "book", FRI, None),
        ("the friday one", "none", FRI, None),
        ("what would you like to", "none", None, None),
    ],
)
def test_parse_days_and_times(text, kind, day, time):
    intent = parse(text)
    assert intent.kind == kind
    assert (intent.day.resolve(MONDAY) if intent.day else None) == day
    assert (resolve_time(intent.time, intent.part) if intent.time else None) == time


@pytest.mark.parametrize(
    "text, kind",
    [
        ("i want to cancel", "cancel"),
        ("i can't make it on thursday", "cancel"),
        ("can i reschedule", "move"),
        ("i need to change my appointment", "move"),
        ("what do i have", "query"),
        ("when is my appointment", "query"),
        ("what time is my appointment", "query"),
        ("what are your opening hours", "hours"),
        ("what times do you have on friday", "availability"),
        ("schedule a visit", "book"),
        ("say that again", "repeat"),
        ("what can you do", "help"),
        ("never mind", "abort"),
        ("hello", "none"),
    ],
)
def test_parse_kinds(text, kind):
    assert parse(text).kind == kind


@pytest.mark.parametrize(
    "text, answer",
    [
        ("yes", "yes"),
        ("yeah sure", "yes"),
        ("that's right", "yes"),
        ("sounds good", "yes"),
        ("ok", "yes"),
        ("no", "no"),
        ("nope", "no"),
        ("no, make it four", "no"),
        ("no problem", "yes"),
        ("hmm", None),
    ],
)
def test_parse_yes_no(text, answer):
    assert parse(text).answer == answer


def test_parse_goodbye_done_thanks_ordinal():
    assert parse("thanks bye").goodbye and parse("thanks bye").thanks
    assert parse("good bye").goodbye
    assert parse("that's all").done and not parse("that's all").goodbye
    assert parse("the second one").ordinal == 1
    assert parse("the last one").ordinal == -1


def test_parse_move_source_and_target():
    i = parse("I want to move my thursday appointment to friday")
    assert i.kind == "move"
    assert i.from_day.resolve(MONDAY) == THU and i.day.resolve(MONDAY) == FRI
    i = parse("move it from 3 pm to 4")
    assert resolve_time(i.from_time) == dt.time(15) and resolve_time(i.time) == dt.time(16)
    i = parse("reschedule for friday at ten")
    assert i.from_day is None and i.day.resolve(MONDAY) == FRI and resolve_time(i.time) == dt.time(10)


def test_tokenize_normalises():
    assert tokenize("3PM") == ["3", "pm"]
    assert tokenize("It's 3 p.m.") == ["its", "3", "pm"]
    assert tokenize("Two O'Clock") == ["two", "oclock"]
    assert tokenize("Tues day, to morrow!") == ["tuesday", "tomorrow"]


def test_day_resolution_rules():
    wed = dt.date(2025, 3, 12)
    assert DayRef(weekday=2).resolve(wed) == dt.date(2025, 3, 19)  # same weekday: next week
    assert DayRef(weekday=2, relation="this").resolve(wed) == wed
    assert DayRef(weekday=4).resolve(wed) == dt.date(2025, 3, 14)
    assert DayRef(weekday=4, relation="next").resolve(wed) == dt.date(2025, 3, 21)
    assert DayRef(weekday=0, relation="next").resolve(wed) == dt.date(2025, 3, 17)
    assert DayRef(relation="next").resolve(wed) is None


def test_time_resolution_business_hours():
    assert resolve_time(TimeRef(2)) == dt.time(14)
    assert resolve_time(TimeRef(10)) == dt.time(10)
    assert resolve_time(TimeRef(12, 30)) == dt.time(12, 30)
    assert resolve_time(TimeRef(8)) == dt.time(8)
    assert resolve_time(TimeRef(6)) == dt.time(18)
    assert resolve_time(TimeRef(7), "evening") == dt.time(19)
    assert resolve_time(TimeRef(3, 0, "am")) == dt.time(3)
    assert resolve_time(TimeRef(8), opens=7, closes=12) == dt.time(8)
    assert say_time(dt.time(15)) == "3 PM" and say_time(dt.time(9, 5)) == "9:05 AM"
    assert say_time(dt.time(12)) == "noon"


@pytest.mark.slow
@given(st.text(max_size=200))
@settings(max_examples=300, deadline=None)
def test_parse_never_raises(text):
    intent = parse(text)
    assert intent.kind in (
        "book",
        "move",
        "cancel",
        "query",
        "hours",
        "availability",
        "repeat",
        "help",
        "person",
        "abort",
        "none",
    )


VOCAB = [
    "book",
    "move",
    "cancel",
    "my",
    "appointment",
    "to",
    "for",
    "at",
    "on",
    "the",
    "one",
    "two",
    "three",
    "four",
    "ten",
    "thirty",
    "half",
    "past",
    "quarter",
    "pm",
    "am",
    "oclock",
    "tuesday",
    "thursday",
    "saturday",
    "next",
    "week",
    "tomorrow",
    "today",
    "in",
    "days",
    "morning",
    "afternoon",
    "yes",
    "no",
    "thats",
    "all",
    "bye",
    "what",
    "do",
    "i",
    "have",
    "first",
    "last",
    "never",
    "mind",
    "15:30",
    "9",
    "1230",
    "instead",
    "from",
    "a",
    "p",
    "m",
]


@given(st.lists(st.lists(st.sampled_from(VOCAB), max_size=8).map(" ".join), min_size=1, max_size=12))
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_desk_never_raises_and_always_answers(turns):
    agent = desk(busy=[at(THU, 15)])
    for text in turns:
        answer = agent.respond(text)
        assert answer.strip()
        assert len(answer) < 300
        assert "".join(split_pieces(answer)) == answer
        if agent.ended:
            break
    state = agent.state()
    assert len(state["bookings"]) <= agent.max_bookings
    for b in state["bookings"]:  # never a booking outside business hours
        when = dt.datetime.fromisoformat(f"{b['date']}T{b['time']}")
        assert when.weekday() < 5 and dt.time(9) <= when.time() <= dt.time(16, 30)


# -- conversations ---------------------------------------------------------------------------


async def test_scripted_book_query_move_cancel_goodbye():
    agent = create_agent("desk", today=MONDAY)
    assert isinstance(agent, DeskAgent) and agent.name == "desk" and agent.greeting() is None
    s = Script(agent)
    assert await s.say("hi i'd like to book an appointment") == "What day and time would you like?"
    assert await s.say("thursday") == "What time on Thursday?"
    assert await s.say("three pm") == "Thursday at 3 PM. Shall I book it?"
    assert agent.state()["bookings"] == []  # nothing committed before the yes
    assert await s.say("yes") == "Done, you're booked for Thursday at 3 PM. Is there anything else?"
    assert agent.state()["bookings"] == [
        {"date": "2025-03-13", "time": "15:00", "spoken": "Thursday at 3 PM"}
    ]
    assert (
        await s.say("what do i have")
        == "You have an appointment on Thursday at 3 PM. Is there anything else?"
    )
    assert (
        await s.say("when is my appointment")
        == "You have an appointment on Thursday at 3 PM. Is there anything else?"
    )
    assert await s.say("can you move it to friday at ten thirty") == (
        "So, Friday at 10:30 AM instead of Thursday at 3 PM. Shall I move it?"
    )
    assert (
        await s.say("that's right")
        == "Done, your appointment is now Friday at 10:30 AM. Is there anything else?"
    )
    assert [b["time"] for b in agent.state()["bookings"]] == ["10:30"]
    assert (
        await s.say("actually cancel my appointment")
        == "Shall I cancel your appointment on Friday at 10:30 AM?"
    )
    assert (
        await s.say("sure")
        == "Done, your appointment on Friday at 10:30 AM is cancelled. Is there anything else?"
    )
    assert agent.state()["bookings"] == []
    assert not agent.ended
    assert await s.say("thanks bye") == "Thanks for calling. Goodbye!"
    assert agent.ended
    assert agent.state()["state"] == "ended"
    assert agent.state()["log"] == [
        "booked 2025-03-13T15:00",
        "moved 2025-03-13T15:00 to 2025-03-14T10:30",
        "cancelled 2025-03-14T10:30",
    ]


async def test_reply_streams_sentence_pieces():
    agent = desk()
    pieces = [p async for p in agent.reply("book thursday at 3 pm", [])]
    assert pieces == ["Thursday at 3 PM. ", "Shall I book it?"]


async def test_one_line_booking_and_goodbye_sees_you():
    s = Script(agent := desk())
    assert await s.say("book me in for thursday at ten") == "Thursday at 10 AM. Shall I book it?"
    await s.say("yep")
    assert await s.say("no thank you") == "Thanks for calling, see you Thursday at 10 AM. Goodbye!"
    assert agent.ended


async def test_partial_information_is_remembered():
    s = Script(desk())
    assert await s.say("book something in the afternoon") == "What day would you like, in the afternoon?"
    assert await s.say("wednesday") == "What time on Wednesday afternoon?"
    assert await s.say("um two") == "Wednesday at 2 PM. Shall I book it?"
    assert await s.say("no") == "Okay. What day and time would suit you better?"
    assert await s.say("can i come at ten thirty") == "What day would you like, at 10:30 AM?"
    assert await s.say("friday") == "Friday at 10:30 AM. Shall I book it?"
    assert await s.say("next week") == "Which day next week?"
    assert await s.say("tuesday") == "Tuesday, March 18th at 10:30 AM. Shall I book it?"


async def test_misrecognised_words():
    s = Script(agent := desk())
    assert await s.say("book to morrow at to pm") == "Tomorrow at 2 PM. Shall I book it?"
    assert await s.say("no make it for") == "Tomorrow at 4 PM. Shall I book it?"
    assert await s.say("yeah") == "Done, you're booked for tomorrow at 4 PM. Is there anything else?"
    assert await s.say("can sell my appointment") == "Shall I cancel your appointment tomorrow at 4 PM?"
    assert (
        await s.say("yes") == "Done, your appointment tomorrow at 4 PM is cancelled. Is there anything else?"
    )
    assert await s.say("i want to book on wensday at ten o clock") == "Wednesday at 10 AM. Shall I book it?"
    assert await s.say("uh huh") == "Done, you're booked for Wednesday at 10 AM. Is there anything else?"
    assert [b["date"] for b in agent.state()["bookings"]] == ["2025-03-12"]


async def test_confirmation_corrections():
    s = Script(desk())
    assert await s.say("book thursday at three") == "Thursday at 3 PM. Shall I book it?"
    assert await s.say("no, make it four") == "Thursday at 4 PM. Shall I book it?"
    assert await s.say("actually friday") == "Friday at 4 PM. Shall I book it?"
    assert await s.say("no in the morning") == "What time on Friday morning?"
    assert await s.say("nine") == "Friday at 9 AM. Shall I book it?"
    assert await s.say("never mind") == "Okay, I won't book anything. Is there anything else?"
    assert await s.say("thursday at noon") == "Thursday at noon. Shall I book it?"
    assert await s.say("book it") == "Done, you're booked for Thursday at noon. Is there anything else?"


async def test_out_of_hours_and_closed_days_refused():
    s = Script(agent := desk())
    answer = await s.say("book thursday at eight pm")
    assert answer == (
        "Sorry, we're open from 9 AM to 5 PM, and the last appointment is at 4:30 PM. "
        "What time on Thursday would suit you?"
    )
    assert await s.say("five") == answer  # 5 PM: the end of the day, not a start
    assert await s.say("seven in the morning") == answer
    assert await s.say("four thirty") == "Thursday at 4:30 PM. Shall I book it?"
    assert await s.say("no saturday") == (
        "Sorry, we're closed on Saturdays. We're open Monday to Friday. Which other day would suit you?"
    )
    assert await s.say("monday") == "Monday, March 17th at 4:30 PM. Shall I book it?"
    assert agent.state()["bookings"] == []


async def test_configurable_hours():
    agent = desk(opens="08:00", closes=12, open_days=["saturday", "sunday"], slot_minutes=60)
    s = Script(agent)
    assert await s.say("book saturday at eight") == "Saturday at 8 AM. Shall I book it?"
    assert (await s.say("make it eleven thirty")).startswith("Sorry, we're open from 8 AM to noon")
    assert await s.say("what are your hours") == (
        "We're open Saturday and Sunday, from 8 AM to noon. What time on Saturday?"
    )
    assert (await s.say("monday at ten")).startswith(
        "Sorry, we're closed on Mondays. We're open Saturday and Sunday."
    )


async def test_taken_slot_offers_nearest():
    s = Script(agent := desk(busy=[at(THU, 15)]))
    assert await s.say("book thursday at 3 pm") == (
        "Sorry, Thursday at 3 PM is taken. The nearest free time is 3:30 PM. Shall I book that?"
    )
    assert await s.say("ok") == "Done, you're booked for Thursday at 3:30 PM. Is there anything else?"
    assert await s.say("and another one thursday at half past three") == (
        "You already have Thursday at 3:30 PM. The nearest free time is 4 PM. Shall I book that?"
    )
    assert await s.say("no") == "Okay. What day and time would suit you better?"
    assert len(agent.state()["bookings"]) == 1


async def test_shared_calendar_between_calls():
    calendar = Calendar()
    first = desk(calendar=calendar, caller="+15550001")
    second = desk(calendar=calendar, caller="+15550002")
    await Script(first).say("book friday at 11")
    assert first.respond("yes").startswith("Done")
    assert second.respond("can i get friday at eleven") == (
        "Sorry, Friday at 11 AM is taken. The nearest free time is 11:30 AM. Shall I book that?"
    )
    # the first caller takes 11:30 too before the second one says yes: the second is re-offered
    first.respond("book friday 11:30")
    first.respond("yes")
    assert second.respond("yes") == (
        "Sorry, Friday at 11:30 AM is taken. The nearest free time is noon. Shall I book that?"
    )
    assert second.state()["bookings"] == []


async def test_day_fully_booked():
    busy = [at(THU, 9) + dt.timedelta(minutes=30 * k) for k in range(16)]
    s = Script(desk(busy=busy))
    assert (
        await s.say("book thursday at ten")
        == "Sorry, Thursday is fully booked. Which other day would suit you?"
    )
    assert await s.say("friday") == "Friday at 10 AM. Shall I book it?"


async def test_several_bookings_choose_which():
    s = Script(agent := desk())
    for text in ("book thursday at ten", "yes", "book friday at two", "yes"):
        await s.say(text)
    assert len(agent.state()["bookings"]) == 2
    assert await s.say("cancel my appointment") == "Which one: Thursday at 10 AM or Friday at 2 PM?"
    assert await s.say("the friday one") == "Shall I cancel your appointment on Friday at 2 PM?"
    assert await s.say("no") == "Okay, I'll keep it. Is there anything else?"
    assert await s.say("move my thursday appointment to wednesday") == (
        "So, Wednesday at 10 AM instead of Thursday at 10 AM. Shall I move it?"
    )
    assert await s.say("yes") == "Done, your appointment is now Wednesday at 10 AM. Is there anything else?"
    assert await s.say("reschedule") == "Which one: Wednesday at 10 AM or Friday at 2 PM?"
    assert await s.say("the second one") == (
        "Your appointment is on Friday at 2 PM. What day and time would you like instead?"
    )
    assert await s.say("three") == "So, Friday at 3 PM instead of Friday at 2 PM. Shall I move it?"
    assert await s.say("correct") == "Done, your appointment is now Friday at 3 PM. Is there anything else?"
    assert await s.say("what do i have") == (
        "You have 2 appointments: Wednesday at 10 AM and Friday at 3 PM. Is there anything else?"
    )


async def test_max_bookings_per_caller():
    s = Script(desk(max_bookings=1))
    await s.say("book thursday at ten")
    await s.say("yes")
    assert await s.say("book friday at ten") == (
        "You already have an appointment, which is the most I can book. I can move or cancel it."
    )
    assert (
        await s.say("move it to friday")
        == "So, Friday at 10 AM instead of Thursday at 10 AM. Shall I move it?"
    )


async def test_nothing_to_move_or_cancel():
    s = Script(desk())
    assert await s.say("what do i have") == "You don't have any appointments booked. Is there anything else?"
    assert (
        await s.say("move my appointment")
        == "You don't have an appointment to move. Would you like to book one?"
    )
    assert await s.say("yes") == "What day and time would you like?"
    assert await s.say("forget it") == "Okay, I won't book anything. Is there anything else?"
    assert await s.say("cancel my appointment") == (
        "You don't have any appointments to cancel. Is there anything else?"
    )


async def test_availability_and_hours():
    s = Script(desk(busy=[at(THU, 9)]))
    assert await s.say("what times do you have on thursday") == (
        "On Thursday, the earliest free times are 9:30 AM, 10 AM and 10:30 AM. Which would you like?"
    )
    assert await s.say("ten") == "Thursday at 10 AM. Shall I book it?"
    s = Script(desk())
    assert await s.say("anything free tomorrow afternoon") == (
        "Tomorrow, the earliest free times are noon, 12:30 PM and 1 PM. Which would you like?"
    )
    assert await s.say("when are you open") == (
        "We're open Monday to Friday, from 9 AM to 5 PM. What time tomorrow afternoon?"
    )


async def test_goodbye_phrasings_end_the_call():
    for first, bye in [
        ("book thursday at ten", "goodbye"),
        ("hello", "thanks bye"),
        ("what do i have", "that's all"),
        ("what do i have", "no thanks"),
        ("what do i have", "thank you"),
        ("book thursday at ten", "bye bye"),
    ]:
        agent = desk()
        agent.respond(first)
        answer = agent.respond(bye)
        assert answer.endswith("Goodbye!"), (first, bye, answer)
        assert agent.ended
    agent = desk()
    agent.respond("book thursday at ten")
    assert agent.respond("yes thanks bye") == (
        "Done, you're booked for Thursday at 10 AM. Thanks for calling, see you Thursday at 10 AM. Goodbye!"
    )
    assert agent.ended and len(agent.state()["bookings"]) == 1
    agent = desk()
    agent.respond("book thursday at ten")
    assert agent.respond("goodbye") == "Okay, I haven't booked anything. Thanks for calling. Goodbye!"


async def test_that_is_it_confirms_without_hanging_up():
    agent = desk()
    agent.respond("book thursday at ten")
    assert agent.respond("that's it") == "Done, you're booked for Thursday at 10 AM. Is there anything else?"
    assert not agent.ended
    assert agent.respond("that's it").endswith("Goodbye!")


async def test_fallback_then_offer_to_end():
    s = Script(agent := desk())
    fallback = "Sorry, I can book, move or cancel an appointment. What would you like to do?"
    assert await s.say("hello there") == fallback
    assert await s.say("purple monkey dishwasher") == fallback
    assert await s.say("hmm") == "Sorry, I'm having trouble understanding. Would you like to end the call?"
    assert await s.say("no") == "Okay, let's try again. You can say, for example: book Tuesday at 3 PM."
    assert await s.say("blah") == fallback  # the count starts again
    agent2 = desk()
    for text in ("la la", "blah", "hmm"):
        agent2.respond(text)
    assert agent2.respond("yes").endswith("Goodbye!") and agent2.ended
    assert not agent.ended


async def test_misunderstanding_inside_a_question_reasks_it():
    s = Script(desk())
    await s.say("book thursday")
    assert await s.say("banana") == "Sorry, I didn't get that. What time on Thursday?"
    assert await s.say("") == "Sorry, I didn't catch that. What time on Thursday?"
    assert await s.say("say that again") == "Sorry, I didn't catch that. What time on Thursday?"
    assert await s.say("what do i have") == "You don't have any appointments booked. What time on Thursday?"
    assert await s.say("half past nine") == "Thursday at 9:30 AM. Shall I book it?"
    assert await s.say("maybe") == "Sorry, I didn't get that. Thursday at 9:30 AM. Shall I book it?"


async def test_past_times_refused_with_now():
    agent = desk(now=dt.datetime(2025, 3, 10, 13, 5))
    assert agent.respond("book today at ten") == "Sorry, that time has passed. What time today?"
    assert agent.respond("three") == "Today at 3 PM. Shall I book it?"


async def test_after_the_end_the_desk_only_says_goodbye():
    agent = desk()
    agent.respond("goodbye")
    assert agent.ended
    assert agent.respond("book thursday at ten") == "Goodbye!"
    assert agent.state()["bookings"] == []


def test_create_agent_errors():
    assert isinstance(create_agent(""), DeskAgent)
    assert isinstance(create_agent("DESK", today=MONDAY, greeting=None), DeskAgent)
    assert create_agent("desk", greeting="Appointment desk, how can I help?").greeting() == (
        "Appointment desk, how can I help?"
    )
    with pytest.raises(ValueError, match="unknown agent kind 'gpt'"):
        create_agent("gpt")
    with pytest.raises(ValueError, match="needs base_url, model"):
        create_agent("openai")
    with pytest.raises(ValueError, match="needs url"):
        create_agent("webhook", secret="x")
    with pytest.raises(ValueError, match="unknown setting"):
        create_agent("desk", colour="blue")
    with pytest.raises(ValueError, match="http"):
        create_agent("webhook", url="ftp://example.com/x")
    with pytest.raises(ValueError):
        create_agent("desk", opens=18, closes=9)


async def test_reply_text_helper():
    assert await reply_text(desk(), "what are your hours") == (
        "We're open Monday to Friday, from 9 AM to 5 PM. Is there anything else?"
    )
