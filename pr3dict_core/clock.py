"""The engine's clock: wall time, or the replayed time of a recording.

Every deadline of the engine, the execution strategies and the background workers is on
the engine's clock (``Clock``: seconds), and every wait is an ``asyncio`` sleep or timeout.
In a live, paper or shadow run that clock is ``time.perf_counter`` and the event loop is
asyncio's own: nothing here is on their path. A run whose venues all replay one recording
runs on a ``ReplayedTimeLoop`` instead: its ``time()`` is the recording's time, so the
engine's clock, ``asyncio.sleep``, ``asyncio.wait_for`` and ``call_later`` all count
recorded time, and when every task waits on such a timer the loop moves the recording
forward to the earliest one (playing the records received until then) instead of sleeping.
A replay then gives the same trades whatever the machine's load (docs/replay.md).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import math
import selectors
import time
from collections.abc import Callable, Iterable
from typing import Any, Protocol

Clock = Callable[[], float]

HOLD_POLL_S = 0.1  # how long a held loop waits for real I/O before it looks again


class TimeSource(Protocol):
    """What keeps a replayed time (``pr3dict_replay.venue.Player``)."""

    now_ns: int  # the current recorded time, ns since the epoch
    start_ns: int  # the recording's time at the start of the run
    speed: float | None  # None: as fast as possible; else a multiple of real time

    def jump(self, t_ns: int) -> None:
        """Move time to ``t_ns``, playing every record received until then."""


class _ReplayedSelector:
    """The loop's selector. asyncio asks it to block until the next timer when nothing is
    ready to run: instead it moves the replayed time to that timer (after waiting for real
    time only when paced, or while work outside the loop is pending)."""

    def __init__(self) -> None:
        self.inner = selectors.DefaultSelector()
        self.loop: ReplayedTimeLoop | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def select(self, timeout: float | None = None) -> list[Any]:
        loop = self.loop
        if timeout is None or timeout <= 0 or loop is None:
            return self.inner.select(timeout)
        if loop.held:  # a thread (the journal's) works for a task: real time passes
            return self.inner.select(min(timeout, HOLD_POLL_S))
        events = self.inner.select(0)
        if events:
            return events
        target = loop.time() + timeout
        source = loop.source
        if source.speed is not None:  # paced: the recording's time at that multiple of real
            if loop.wall0 is None:
                loop.wall0 = time.monotonic() - loop.time() / source.speed
            delay = loop.wall0 + target / source.speed - time.monotonic()
            if delay > 0:
                events = self.inner.select(delay)
                if events or time.monotonic() < loop.wall0 + target / source.speed:
                    return events  # woken early (a signal): asyncio asks again
        source.jump(source.start_ns + math.ceil(target * 1e9))
        return []


class ReplayedTimeLoop(asyncio.SelectorEventLoop):
    """An event loop whose time is a ``TimeSource``'s, in seconds since the run's start."""

    def __init__(self, source: TimeSource):
        selector = _ReplayedSelector()
        super().__init__(selector)  # type: ignore[arg-type]
        selector.loop = self
        self.source = source
        self.held = 0  # futures of work outside the loop (threads) that tasks wait for
        self.wall0: float | None = None

    def time(self) -> float:
        return (self.source.now_ns - self.source.start_ns) * 1e-9

    def hold(self, future: asyncio.Future[Any]) -> None:
        """Time stands still until ``future`` (done by a thread) is done."""
        self.held += 1
        future.add_done_callback(self._release)

    def _release(self, _: Any) -> None:
        self.held -= 1

    def run_in_executor(self, executor: Any, func: Any, *args: Any) -> asyncio.Future[Any]:
        future = super().run_in_executor(executor, func, *args)
        self.hold(future)
        return future


def external(future: concurrent.futures.Future[Any],
             loop: asyncio.AbstractEventLoop | None = None) -> asyncio.Future[Any]:
    """``asyncio.wrap_future`` for work done by a thread that a task waits for: a loop
    keeping replayed time does not move it until that work is done."""
    loop = loop or asyncio.get_running_loop()
    out = asyncio.wrap_future(future, loop=loop)
    if isinstance(loop, ReplayedTimeLoop):
        loop.hold(out)
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
    source = sources[0]
    return lambda: ReplayedTimeLoop(source)
