"""A lightweight in-process actor runtime for one call, on the asyncio loop.

Why not thespian for the frame path: a thespian message hop costs 150-430 us of CPU in
the multi-process bases (docs/architecture.md), so a 20 ms frame crossing four hops caps a
2-core machine at ~15 calls. Here a hop is a deque append and a method call (~1 us).
Thespian carries supervision and control between processes (production mode).

Semantics, kept close to thespian's so the actors read the same:

- Actors are addressed by role name within their call (``"codec"``, ``"jitter"``, ...).
- ``tell`` never runs the receiver inside the sender: messages go to the call's run
  queue and are delivered one at a time, in order, to completion (no re-entrancy).
  System messages (``Message.system``) are delivered before any pending data message.
- Handlers are ``receiveMsg_<ClassName>`` (like thespian's ``ActorTypeDispatcher``);
  a message with no handler is ignored.
- A handler that raises, or a task or ticker the actor started that raises, fails the
  actor: the message is dropped, the actor's tasks and tickers are cancelled, and its
  parent (the supervisor) gets ``ChildFailed`` and decides (restart with fresh state, or
  give up).
- With ``check_messages`` every message is round-tripped through msgpack, proving the
  traffic could cross a process boundary (tests run with it on).

Limits: ``MAX_QUEUED`` messages pending per call; past it data messages are dropped
and counted (system messages are always kept) — a runaway producer cannot grow memory.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Coroutine
from typing import Any

from . import messages as m

log = logging.getLogger("callbridge.actors")

MAX_QUEUED = 2000
"""Pending messages per call before data messages are dropped (40 s of 20 ms frames)."""


class InjectedFault(RuntimeError):
    """Raised on purpose by ``InjectFault`` (fault-injection endpoint and tests)."""


class Actor:
    """Base class. Subclasses define ``role`` and ``receiveMsg_<ClassName>`` methods."""

    role: str = "actor"

    def __init__(self, ctx: ActorContext) -> None:
        self.ctx = ctx

    def started(self) -> None:
        """Called once the actor is registered, before any message."""

    def stopped(self) -> None:
        """Called when the actor is removed (call ended or being replaced)."""

    def receiveMsg_InjectFault(self, msg: m.InjectFault) -> None:
        raise InjectedFault(f"fault injected into {self.role}: {msg.note}")


class ActorContext:
    """What an actor may do: send, spawn tasks, log to the timeline, read the clock."""

    __slots__ = ("dispatcher", "role")

    def __init__(self, dispatcher: Dispatcher, role: str) -> None:
        self.dispatcher = dispatcher
        self.role = role

    def tell(self, role: str, msg: m.Message) -> None:
        self.dispatcher.tell(role, msg)

    def tell_parent(self, msg: m.Message) -> None:
        self.dispatcher.tell(self.dispatcher.parent_of(self.role), msg)

    def note(self, event: str, **data: Any) -> None:
        """Record ``event`` in the call's timeline (through the supervisor)."""
        self.tell_parent(m.TimelineNote(event, data))

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str = "") -> asyncio.Task[Any]:
        """Run ``coro`` for this actor; it is cancelled when the actor is replaced or
        stopped, and its exception fails the actor."""
        return self.dispatcher.spawn(self.role, coro, name)

    def every(self, period_s: float, fn: Callable[[], None]) -> Ticker:
        """Call ``fn()`` every ``period_s`` (see ``Ticker``); stopped with the actor, and
        its exception fails the actor."""
        return self.dispatcher.every(self.role, period_s, fn)

    def now(self) -> float:
        return self.dispatcher.clock()


class Dispatcher:
    """The run queue and actor table of one call. Single-threaded (the event loop)."""

    def __init__(
        self,
        clock: Callable[[], float],
        check_messages: bool = False,
        name: str = "call",
    ) -> None:
        self.clock = clock
        self.check_messages = check_messages
        self.name = name
        self.actors: dict[str, Actor] = {}
        self._parents: dict[str, str] = {}
        self._tasks: dict[str, set[asyncio.Task[Any] | Ticker]] = {}
        """Each actor's tasks and tickers (cancelled with it)."""
        self._system: deque[tuple[str, m.Message]] = deque()
        self._data: deque[tuple[str, m.Message]] = deque()
        self._handlers: dict[tuple[str, type], Callable[[Any], None] | None] = {}
        """(role, message class) -> the actor's bound handler (None: it has none)."""
        self._draining = False
        self.closed = False
        self.dropped = 0
        self.delivered = 0

    # -- actor table -------------------------------------------------------------

    def add(self, actor_cls: type[Actor], parent: str | None = None, *args: Any) -> Actor:
        """Create (or replace, with fresh state) the actor for ``actor_cls.role``."""
        role = actor_cls.role
        if role in self.actors:
            self.remove(role)
        actor = actor_cls(ActorContext(self, role), *args)
        self.actors[role] = actor
        self._handlers.clear()
        if parent is not None:
            self._parents[role] = parent
        actor.started()
        return actor

    def remove(self, role: str) -> None:
        actor = self.actors.pop(role, None)
        self._handlers.clear()
        for task in self._tasks.pop(role, ()):
            task.cancel()
        if actor is not None:
            try:
                actor.stopped()
            except Exception:  # a failing cleanup must not stop the others
                log.exception("%s: %s.stopped() raised", self.name, role)

    def parent_of(self, role: str) -> str:
        return self._parents.get(role, role)

    def close(self) -> None:
        """Stop every actor and cancel every task; later messages are discarded."""
        self.closed = True
        for role in list(self.actors):
            self.remove(role)
        self._system.clear()
        self._data.clear()

    # -- messaging -----------------------------------------------------------------

    def tell(self, role: str, msg: m.Message) -> None:
        if self.closed:
            return
        if self.check_messages:
            msg = m.decode(m.encode(msg))
        if msg.system:
            self._system.append((role, msg))
        elif len(self._data) >= MAX_QUEUED:
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 1000 == 0:
                log.warning("%s: run queue full, %d data messages dropped", self.name, self.dropped)
            return
        else:
            self._data.append((role, msg))
        if not self._draining:
            self._drain()

    def _drain(self) -> None:
        self._draining = True
        system, data, handlers = self._system, self._data, self._handlers
        try:
            while system or data:
                role, msg = system.popleft() if system else data.popleft()
                key = (role, type(msg))
                try:
                    handler = handlers[key]
                except KeyError:
                    actor = self.actors.get(role)
                    if actor is None:
                        continue
                    handler = handlers[key] = getattr(actor, "receiveMsg_" + type(msg).__name__, None)
                if handler is None:
                    continue
                self.delivered += 1
                try:
                    handler(msg)
                except Exception as exc:
                    self._failed(role, exc, msg)
        finally:
            self._draining = False

    def _failed(self, role: str, exc: BaseException, msg: m.Message | None) -> None:
        what = f"handling {type(msg).__name__}" if msg is not None else "in a task"
        if isinstance(exc, InjectedFault):
            log.warning("%s: %s failed %s: %s", self.name, role, what, exc)
        else:
            log.error("%s: %s failed %s", self.name, role, what, exc_info=exc)
        parent = self._parents.get(role)
        if parent is None or parent not in self.actors:
            return
        for task in self._tasks.pop(role, ()):
            task.cancel()
        self.tell(parent, m.ChildFailed(role, f"{type(exc).__name__}: {exc}"))

    # -- tasks -------------------------------------------------------------------

    def spawn(self, role: str, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro, name=f"{self.name}/{role}/{name}")
        self._tasks.setdefault(role, set()).add(task)
        task.add_done_callback(lambda t: self._task_done(role, t))
        return task

    def every(self, role: str, period_s: float, fn: Callable[[], None]) -> Ticker:
        ticker = Ticker(period_s, fn, lambda exc: self._ticker_failed(role, ticker, exc), self.clock)
        self._tasks.setdefault(role, set()).add(ticker)
        return ticker

    def _ticker_failed(self, role: str, ticker: Ticker, exc: Exception) -> None:
        tasks = self._tasks.get(role)
        if tasks is not None and ticker in tasks and not self.closed:
            tasks.discard(ticker)
            self._failed(role, exc, None)

    def _task_done(self, role: str, task: asyncio.Task[Any]) -> None:
        tasks = self._tasks.get(role)
        if tasks is None or task not in tasks:
            return  # already cancelled with its actor
        tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None and not self.closed:
            self._failed(role, exc, None)


class Ticker:
    """``fn()`` every ``period_s`` seconds of ``clock`` (the call's), starting one period
    from now. No drift (tick ``n`` is due at ``start + n * period_s``) and never early:
    a loop timer that fires before the tick is due in ``clock`` (uvloop's timers have
    1 ms resolution) waits for the rest. Ticks the loop was too busy for are skipped,
    not run in a burst. One timer handle per tick: no task, no future (1,000 of them at
    20 ms: 2.5 µs of CPU per tick, against 4.3 for tasks that sleep). An exception from
    ``fn`` stops the ticker and goes to ``on_error``."""

    __slots__ = ("_clock", "_due", "_fn", "_handle", "_loop", "_n", "_on_error", "_period", "_start")

    def __init__(
        self,
        period_s: float,
        fn: Callable[[], None],
        on_error: Callable[[Exception], None],
        clock: Callable[[], float],
    ) -> None:
        if not period_s > 0:
            raise ValueError(f"period_s must be > 0, got {period_s!r}")
        self._period = period_s
        self._fn = fn
        self._on_error = on_error
        self._clock = clock
        self._loop = asyncio.get_running_loop()
        self._start = clock()
        self._n = 0
        self._due = self._start
        self._handle: asyncio.TimerHandle | None = None
        self._schedule()

    def _schedule(self) -> None:
        self._n += 1
        self._due = self._start + self._n * self._period
        self._handle = self._loop.call_later(max(0.0, self._due - self._clock()), self._fire)

    def _fire(self) -> None:
        now = self._clock()
        if now < self._due:  # the loop's timer ran ahead of our clock
            self._handle = self._loop.call_later(self._due - now, self._fire)
            return
        self._n = max(self._n, int((now - self._start) / self._period))  # skip the ticks missed
        self._schedule()
        try:
            self._fn()
        except Exception as exc:
            self.cancel()
            self._on_error(exc)

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    @property
    def active(self) -> bool:
        return self._handle is not None
