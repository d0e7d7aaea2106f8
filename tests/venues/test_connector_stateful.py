"""Model-based test of execution on the real ``polymarket`` connector: the simulator serves
HTTP and websockets on loopback from its own thread and event loop (a separate process in
all but name: the engine reaches it only over the wire), with random books, `delayed`
replies, replies lost after the order was applied, 5xx, trades that fail on chain, and
crashes of the engine at random venue calls (before or after the venue acted).

After every step a fresh engine and a fresh connector (no memory of the orders) recover
from the journal. Invariant: no trade is left open, the journal's positions equal what the
venue says, nothing of ours rests, and each market is hedged or flat (or journaled as
halted with its exposure).
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import threading
from decimal import Decimal as D
from pathlib import Path

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule
from venue_fixtures import POLY_KEY, pm_book, poly_venue, scenario

from pr3dict_core.config import ExecutionSection
from pr3dict_core.journal import Journal
from pr3dict_core.pipeline import Engine
from pr3dict_detectors.complement import BinaryComplement
from pr3dict_paper.scenario import SimFaultSpec
from pr3dict_polymarket import protocol as pm
from pr3dict_sim import SimServer
from pr3dict_sim.common import Faults
from pr3dict_strategies.market import MarketStrategy


class SimulatedCrash(BaseException):
    """The engine process dies here: nothing after this point runs."""


class SimThread:
    """A SimServer on its own thread and event loop; the test talks to it like a venue."""

    def __init__(self, tmp: Path):
        self.loop = asyncio.new_event_loop()
        self.server = SimServer(scenario(tmp, markets=("m1",), balance="100000"),
                                base_dir=tmp, clock=False)
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.call(self.server.start())

    def call(self, coro):  # type: ignore[no-untyped-def]
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(30)

    def do(self, fn, *args):  # type: ignore[no-untyped-def]
        async def run():  # type: ignore[no-untyped-def]
            return fn(*args)
        return self.call(run())

    def stop(self) -> None:
        self.call(self.server.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


class CrashingVenue:
    """Wraps the connector: the engine dies at its n-th order call, before or after the
    venue acted."""

    def __init__(self, inner, crash_at: int | None, after: bool):
        self._inner, self.crash_at, self.after, self.calls = inner, crash_at, after, 0

    def __getattr__(self, name):  # type: ignore[no-untyped-def]
        return getattr(self._inner, name)

    async def _call(self, name, *args):  # type: ignore[no-untyped-def]
        self.calls += 1
        crash = self.calls == self.crash_at
        if crash and not self.after:
            raise SimulatedCrash(f"before {name}")
        result = await getattr(self._inner, name)(*args)
        if crash:
            raise SimulatedCrash(f"after {name}")
        return result

    async def place_order(self, request):  # type: ignore[no-untyped-def]
        return await self._call("place_order", request)

    async def cancel_order(self, cid):  # type: ignore[no-untyped-def]
        return await self._call("cancel_order", cid)

    async def get_order(self, cid):  # type: ignore[no-untyped-def]
        return await self._call("get_order", cid)


prices = st.integers(30, 60).map(lambda c: D(c) / 100)
sizes = st.integers(5, 30).map(D)
rate = D("0.4")


class ConnectorExecution(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        self.dir = Path(tempfile.mkdtemp())
        self.sim = SimThread(self.dir)
        self.journal_path = self.dir / "journal.sqlite"
        venue = poly_venue(self.sim.server, vid="poly", key=POLY_KEY)
        asyncio.run(self._markets(venue))

    async def _markets(self, venue) -> None:  # type: ignore[no-untyped-def]
        await venue.start()
        (m,) = venue.markets()
        self.yes, self.no = m.yes, m.no
        await venue.close()

    def engine(self, venue, rollback: str) -> Engine:  # type: ignore[no-untyped-def]
        engine = Engine(
            venues={"poly": venue},
            detectors=[BinaryComplement("c", BinaryComplement.Config(venues=("poly",)))],
            strategy=MarketStrategy(MarketStrategy.Config()),
            execution=ExecutionSection(deadline_ms=150, order_timeout_ms=300,
                                       reconcile_timeout_ms=600, rollback=rollback,
                                       max_unwind_loss=D(1), unwind_deadline_ms=300,
                                       recheck_window_ms=600_000))
        engine.journal = Journal(self.journal_path, engine.run_id)
        return engine

    def book(self, token: str, ask: D, size: D) -> None:
        self.sim.do(lambda: pm_book(self.sim.server, token, bids=[("0.05", 1000)],
                                    asks=[(str(ask), size)]))

    def faults(self, delayed: bool, lose_reply: bool, error: bool, fail: bool) -> None:
        spec = SimFaultSpec(delayed_rate=rate if delayed else D(0), delay_ms=30,
                            accepted_timeout_rate=rate if lose_reply else D(0), hang_ms=500,
                            error_rate=rate if error else D(0),
                            trade_failed_rate=rate if fail else D(0), settle_ms=20)

        def set_faults() -> None:
            self.sim.server.faults = Faults(spec, 5)
        self.sim.do(set_faults)

    @rule(yes_ask=prices, no_ask=prices, yes_size=sizes, no_size=sizes, shift=st.booleans(),
          delayed=st.booleans(), lose_reply=st.booleans(), error=st.booleans(),
          fail=st.booleans(), crash_at=st.none() | st.integers(1, 6), after=st.booleans(),
          rollback=st.sampled_from(["unwind", "complete_or_unwind"]))
    def trade(self, yes_ask, no_ask, yes_size, no_size, shift, delayed, lose_reply, error,
              fail, crash_at, after, rollback):
        self.faults(delayed, lose_reply, error, fail)
        # Deep bids on both sides so an unwind can always sell.
        self.book(self.yes, yes_ask, yes_size)
        self.book(self.no, no_ask, no_size)
        venue = poly_venue(self.sim.server, vid="poly", key=POLY_KEY,
                           request_timeout_ms=300)
        engine = self.engine(CrashingVenue(venue, crash_at, after), rollback)

        async def go() -> None:
            try:
                await engine.start()
                opportunities = await engine.scan()
                if shift:  # the book moves between detection and execution
                    self.book(self.no, no_ask + D("0.05"), no_size)
                for opp in opportunities:
                    await engine.execute_opportunity(opp)
                await engine.close()
            except BaseException:
                await venue.close()  # only its sockets: it sends nothing on close
                raise

        try:
            asyncio.run(go())
        except* SimulatedCrash:
            engine.journal.close()  # the process is gone; its journal is what it wrote
        self.recover()

    def recover(self) -> None:
        """A new process: a fresh connector and engine over the journal, honest venue."""
        self.faults(False, False, False, False)
        venue = poly_venue(self.sim.server, vid="poly", key=POLY_KEY)
        engine = self.engine(venue, "unwind")

        async def run() -> None:
            await engine.start()
            for _ in range(200):  # let exposure and breaks be worked (bounded)
                if not engine.halts and not engine._breaking:
                    break
                await asyncio.sleep(0.02)
            self.held = await venue.venue_positions()
            body = await venue._get_json("/data/orders", {"next_cursor": pm.INITIAL_CURSOR},
                                         auth=True)
            self.resting = len(body.get("data", []))
            self.halted = dict(engine.halts)
            await engine.close()

        asyncio.run(run())

    @invariant()
    def hedged_or_flat_and_journal_matches_venue(self):
        if not hasattr(self, "held"):
            return
        journal = Journal(self.journal_path)
        try:
            assert journal.open_trades() == []
            booked = {inst: q for (_, inst), q in journal.positions().items() if q}
        finally:
            journal.close()
        truth = {k: v for k, v in self.held.items() if v}
        assert booked == truth
        assert self.resting == 0
        if not any(cause in ("exposure", "break") for cause, _ in self.halted):
            assert truth.get(self.yes, 0) == truth.get(self.no, 0)

    def teardown(self):
        if os.environ.get("PR3DICT_DEBUG_STATEFUL"):
            journal = Journal(self.journal_path)
            print("TRADES", [(t["state"], t["error"][:40]) for t in journal.trades(100)])
            journal.close()
        self.sim.stop()


ConnectorExecution.TestCase.settings = settings(
    max_examples=int(os.environ.get("PR3DICT_CONNECTOR_EXAMPLES", "25")),
    stateful_step_count=4, deadline=None,
    suppress_health_check=[HealthCheck.too_slow])
test_connector_state_machine = ConnectorExecution.TestCase
