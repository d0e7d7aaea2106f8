"""The engine's clock: wall time, or the replayed time of a recording.

Every deadline of the engine, the execution strategies and the background workers is on
the engine's clock (``Clock``: seconds), and every wait is an ``asyncio`` sleep or timeout.
In a live, paper or shadow run that clock is ``time.perf_counter`` and the event loop is
asyncio's own: nothing here is on their path. A run whose venues all replay one recording
runs on a ``ReplayedTimeLoop`` instead: its ``time()`` is the recording's time, so the
engine's clock, ``asyncio.sleep``, ``asyncio.wait_for`` and ``call_later`` all count
recorded time, and when every task waits on such a timer the loop moves the recording
forward to the earliest one (playing the records received until then) instead of sleeping;
with no timer at all, to the next record.

What threads hand back to the loop (the journal's commits) is delivered only when every
task waits, in the order the threads finished, and time does not move while a task waits
for a thread: how fast a thread is changes when things happen in real time, never where
in the recording. A replay then gives the same trades whatever the machine's load
(docs/replay.md).
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import math
import selectors
import time
from collections.abc import Callable, Iterable
from typing import Any, Protocol

Clock = Callable[[], float]

HOLD_POLL_S = 0.1  # how long a loop waiting for a thread sleeps before it looks again
SELECT_CAP_S = 24 * 3600  # asyncio's cap on a select timeout (base_events)
IO_POLL_S = 0.001  # between jumps, real I/O (a signal, a socket) is looked at this often


class TimeSource(Protocol):
    """What keeps a replayed time (``pr3dict_replay.venue.Player``)."""

    now_ns: int  # the current recorded time, ns since the epoch
    start_ns: int  # the recording's time at the start of the run
    speed: float | None  # None: as fast as possible; else a multiple of real time

    def jump(self, t_ns: int) -> None:
        """Move time to ``t_ns``, playing every record received until then."""

    def next_ns(self) -> int | None:
        """The time of the next record, None at the end of the recording."""


class _ReplayedSelector:
    """The loop's selector. asyncio asks it to block until the next timer when nothing is
    ready to run: then it delivers what threads handed back, or moves the replayed time to
    that timer (waiting for real time only when paced or while a thread works for a task)."""

    def __init__(self) -> None:
        self.inner = selectors.DefaultSelector()
        self.loop: ReplayedTimeLoop | None = None
        self._polled = 0.0  # time.monotonic() of the last look at real I/O

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def select(self, timeout: float | None = None) -> list[Any]:
        loop = self.loop
        if loop is None or timeout == 0:
            return self.inner.select(timeout)
        # Every task waits. First what threads were doing for them: all of it, in order.
        if len(loop.arrived) < len(loop.threads) or (loop.held and not loop.external):
            return self.inner.select(HOLD_POLL_S if timeout is None
                                     else min(timeout, HOLD_POLL_S))
        if loop.external:
            loop.deliver()
            return []
        source = loop.source
        if timeout is None:  # no timer at all: the next record may wake a task
            nxt = source.next_ns()
            if nxt is None:  # the recording is over: only real I/O can
                return self.inner.select(None)
            target_ns = max(nxt, source.now_ns)
        else:
            target_ns = loop.ns(loop.next_timer(timeout))
        wall = time.monotonic()
        if wall - self._polled > IO_POLL_S:  # not on every jump: a replay jumps a lot
            self._polled = wall
            events = self.inner.select(0)
            if events:
                return events
        if source.speed is not None:  # paced: the recording's time at that multiple of real
            if loop.wall0 is None:
                loop.wall0 = time.monotonic() - loop.time() / source.speed
            due = loop.wall0 + (target_ns - source.start_ns) * 1e-9 / source.speed
            if due > time.monotonic():
                events = self.inner.select(due - time.monotonic())
                if events or time.monotonic() < due:
                    return events  # woken early (a signal): asyncio asks again
        source.jump(target_ns)
        return []


class ReplayedTimeLoop(asyncio.SelectorEventLoop):
    """An event loop whose time is a ``TimeSource``'s, in seconds since the run's start."""

    _ready: collections.deque[asyncio.Handle]
    _scheduled: list[asyncio.TimerHandle]

    def __init__(self, source: TimeSource):
        selector = _ReplayedSelector()
        super().__init__(selector)  # type: ignore[arg-type]
        selector.loop = self
        self.source = source
        self.threads: set[concurrent.futures.Future[Any]] = set()  # tasks wait for these
        # Those of ``threads`` whose answer was handed back (appended by their thread).
        self.arrived: collections.deque[concurrent.futures.Future[Any]] = collections.deque()
        self.held = 0  # run_in_executor futures not done yet
        self.external: collections.deque[asyncio.Handle] = collections.deque()
        self.wall0: float | None = None

    def time(self) -> float:
        return (self.source.now_ns - self.source.start_ns) * 1e-9

    def ns(self, when: float) -> int:
        """The recorded time (ns) of a loop time."""
        return self.source.start_ns + math.ceil(when * 1e9)

    def next_timer(self, timeout: float) -> float:
        """The loop time to jump to: the earliest timer's, exactly (what ``idle_before``'s
        shortcut jumps to), unless asyncio capped ``timeout`` (a day)."""
        if self._scheduled and timeout < SELECT_CAP_S:
            return self._scheduled[0].when()
        return self.time() + timeout

    def idle_before(self, when: float) -> bool:
        """Nothing would run before a timer at ``when`` fires: nothing ready, no thread
        pending, no earlier timer, not paced. Moving time there at once, then letting what
        the jump woke (``woken``) run before going on, is then exactly what the timer
        would do: the caller's shortcut for ``call_at`` (a timer per batch cost a replay
        10-15% of its speed at 1 ms batches)."""
        return not self._ready and not self.external and not self.threads \
            and not self.held and self.source.speed is None \
            and (not self._scheduled or self._scheduled[0].when() > when)

    def woken(self) -> bool:
        """Something is ready to run (after a shortcut's jump: woken by it)."""
        return bool(self._ready)

    def call_soon_threadsafe(self, callback: Any, *args: Any,  # type: ignore[override]
                             context: Any = None) -> asyncio.Handle:
        # Kept until every task waits (``deliver``), not run at once among them.
        self._check_closed()  # type: ignore[attr-defined]
        handle = asyncio.Handle(callback, args, self, context)
        self.external.append(handle)
        self._write_to_self()  # type: ignore[attr-defined]
        return handle

    def deliver(self) -> None:
        """Run what threads handed back, in the order they did."""
        while self.arrived:  # their answers are in ``external`` already: see ``hold``
            self.threads.discard(self.arrived.popleft())
        while self.external:
            self._ready.append(self.external.popleft())

    def hold(self, future: concurrent.futures.Future[Any]) -> None:
        """A task waits for ``future`` (a thread's, wrapped already): time stands still
        until its answer is handed back. This callback runs after the wrapper's, which
        hands the answer back: once arrived, the answer is in ``external``."""
        self.threads.add(future)
        future.add_done_callback(self.arrived.append)

    def run_in_executor(self, executor: Any, func: Any,  # type: ignore[override]
                        *args: Any) -> asyncio.Future[Any]:
        future = super().run_in_executor(executor, func, *args)
        self.held += 1
        future.add_done_callback(self._release)
        return future

    def _release(self, _: Any) -> None:
        self.held -= 1


def external(future: concurrent.futures.Future[Any],
             loop: asyncio.AbstractEventLoop | None = None) -> asyncio.Future[Any]:
    """``asyncio.wrap_future`` for work done by a thread that a task waits for: a loop
    keeping replayed time does not move it until that work is done."""
    loop = loop or asyncio.get_running_loop()
    out = asyncio.wrap_future(future, loop=loop)
    if isinstance(loop, ReplayedTimeLoop):
        loop.hold(future)  # after wrapping: see ``hold``
    return out


def replayed_clock(loop: asyncio.AbstractEventLoop) -> Clock | None:
    """The loop's time when it keeps a replayed time (the engine's clock then), else None."""
    return loop.time if isinstance(loop, ReplayedTimeLoop) else None


def loop_factory(venues: Iterable[Any]) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The event loop a run over these venues needs: when every venue keeps the time of
    one recording (``time_source``), a loop on that time; else None (asyncio's own)."""
    sources = [getattr(v, "time_source", None) for v in venues]
    if not sources or any(s is None for s in sources) \
            or any(s is not sources[0] for s in sources):
        return None
    source: TimeSource = sources[0]  # type: ignore[assignment]  # checked: not None
    return lambda: ReplayedTimeLoop(source)
