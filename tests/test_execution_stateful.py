"""Model-based test of execution: random books, fills, partial fills, rejects, lost replies,
duplicate and out-of-order order updates, and crashes at random venue calls.

Invariant after every step (finalize, or crash then recovery by a fresh engine over the same
journal): every trade is final, each market is fully hedged or flat (YES held == NO held),
and the journal's positions equal the venue's.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from decimal import Decimal as D
from pathlib import Path

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule
from support import engine_for, scripted_venue

from pr3dict_core.config import ExecutionSection
from pr3dict_core.journal import Journal
from pr3dict_paper.scenario import FaultSpec


class SimulatedCrash(BaseException):
    """The process dies here: nothing after this point runs, no cleanup is trusted."""


class ChaosVenue:
    """Wraps the paper venue: crashes at the n-th call (before or after the venue acted) and
    pushes each order update twice, the older view after the newer one."""

    def __init__(self, inner, crash_at: int | None, after: bool):
        self._inner = inner
        self.calls = 0
        self.crash_at = crash_at
        self.after = after
        self._callbacks = []
        self._last = {}

    def __getattr__(self, name):
        return getattr(self._inner, name)

    def subscribe_orders(self, callback):
        self._callbacks.append(callback)

    async def _call(self, name, *args):
        self.calls += 1
        crash = self.crash_at is not None and self.calls == self.crash_at
        if crash and not self.after:
            raise SimulatedCrash(f"before {name}")
        ack = await getattr(self._inner, name)(*args)
        if crash:
            raise SimulatedCrash(f"after {name}")
        older = self._last.get(ack.client_order_id)
        self._last[ack.client_order_id] = ack
        for cb in self._callbacks:  # duplicate and out of order
            cb(ack)
            if older is not None:
                cb(older)
            cb(ack)
        return ack

    async def place_order(self, request):
        return await self._call("place_order", request)

    async def cancel_order(self, cid):
        return await self._call("cancel_order", cid)

    async def get_order(self, cid):
        return await self._call("get_order", cid)


prices = st.integers(30, 60).map(lambda c: D(c) / 100)
sizes = st.integers(1, 30).map(D)


class Execution(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        self.dir = Path(tempfile.mkdtemp())
        self.venue = scripted_venue()
        self.journal_path = self.dir / "journal.sqlite"
        self.trades = 0

    def engine(self, venue, rollback):
        engine = engine_for(self.venue, execution=ExecutionSection(
            deadline_ms=20, reconcile_timeout_ms=200, rollback=rollback,
            max_unwind_loss=D(1), unwind_deadline_ms=200))
        engine.venues["v"] = venue
        engine.journal = Journal(self.journal_path, "run")
        return engine

    @rule(yes_ask=prices, no_ask=prices, yes_size=sizes, no_size=sizes, shift=st.booleans(),
          reject=st.booleans(), partial=st.booleans(), lose_reply=st.booleans(),
          crash_at=st.none() | st.integers(1, 8), after=st.booleans(),
          rollback=st.sampled_from(["unwind", "complete_or_unwind"]))
    def trade(self, yes_ask, no_ask, yes_size, no_size, shift, reject, partial, lose_reply,
              crash_at, after, rollback):
        rate = D("0.5")
        self.venue.faults = FaultSpec(reject_rate=rate if reject else D(0),
                                      partial_fill_rate=rate if partial else D(0),
                                      timeout_rate=rate if lose_reply else D(0))
        # Deep bids on both sides so an unwind can always sell.
        self.venue.set_book("m:yes", bids=[(D("0.05"), D(1000))], asks=[(yes_ask, yes_size)])
        self.venue.set_book("m:no", bids=[(D("0.05"), D(1000))], asks=[(no_ask, no_size)])
        chaos = ChaosVenue(self.venue, crash_at, after)
        engine = self.engine(chaos, rollback)

        async def go():
            await engine.start()
            opportunities = await engine.scan()
            if shift:  # the book moves between detection and execution
                self.venue.set_book("m:no", bids=[(D("0.05"), D(1000))],
                                    asks=[(no_ask + D("0.05"), no_size)])
            for opp in opportunities:
                await engine.execute_opportunity(opp)
            await engine.close()

        try:
            asyncio.run(go())
        except* SimulatedCrash:
            engine.journal.close()  # the process is gone; its journal is what it wrote
            recovered = self.engine(self.venue, rollback)

            async def recover():
                await recovered.start()
                await recovered.close()

            asyncio.run(recover())

    @invariant()
    def hedged_or_flat_and_journal_matches_venue(self):
        journal = Journal(self.journal_path)
        try:
            assert journal.open_trades() == []
            booked = {inst: q for (_, inst), q in journal.positions().items() if q}
        finally:
            journal.close()
        truth = {k: v for k, v in self.venue.positions().items() if v}
        assert booked == truth
        assert truth.get("m:yes", 0) == truth.get("m:no", 0)
        assert self.venue.engine.open_orders("pr3dict") == []


Execution.TestCase.settings = settings(
    max_examples=int(os.environ.get("PR3DICT_STATEFUL_EXAMPLES", "60")),
    stateful_step_count=6, deadline=None,
    suppress_health_check=[HealthCheck.too_slow])
test_execution_state_machine = Execution.TestCase
