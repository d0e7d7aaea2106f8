"""Trade records for metrics sinks, and the run's statistics.

A ``TradeRecord`` is built once per final trade and handed to every sink; ``RunStatistics``
aggregates them for the live status line, the end-of-run table and the Python API.
"""

from __future__ import annotations

import math
import time
from collections import Counter, OrderedDict
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any, NamedTuple

import attrs
from attrs import field, frozen

from .model import ZERO, Leg, Trade, TradeState


@frozen
class LegRecord:
    index: int
    venue: str
    instrument: str
    side: str
    purpose: str
    state: str
    size: Decimal
    filled: Decimal
    average_price: Decimal | None
    fees: Decimal
    slippage: Decimal
    slippage_ticks: Decimal
    attempts: int
    latency_ms: float | None  # submit -> final
    target_price: Decimal | None = None  # the price slippage is measured from
    unresolved_ms: float = 0.0  # time this leg's outcome was unknown

    @classmethod
    def from_leg(cls, leg: Leg) -> LegRecord:
        latency = None
        if leg.submitted_at is not None and leg.finished_at is not None:
            latency = (leg.finished_at - leg.submitted_at) * 1000
        return cls(leg.index, leg.venue, leg.instrument, str(leg.side), leg.purpose,
                   str(leg.state), leg.size, leg.filled, leg.average_price, leg.fees,
                   leg.slippage, leg.slippage_ticks, leg.attempts, latency,
                   target_price=leg.target_price,
                   unresolved_ms=getattr(leg, "unresolved_s", 0.0) * 1000)


@frozen
class TradeRecord:
    trade_id: str
    opportunity_id: str
    kind: str
    detector: str
    strategy: str
    state: str
    reject_reason: str
    size: Decimal
    expected_edge: Decimal  # USDC, after fees, as detected
    realised_pnl: Decimal
    hedged_size: Decimal
    rollback_cost: Decimal
    slippage: Decimal  # USDC over entry legs
    decision_to_wire_ms: float | None
    decision_to_final_ms: float | None
    leg_skew_ms: float | None  # spread of the entry legs' final times
    unresolved_ms: float = 0.0  # total time legs spent UNRESOLVED
    legs: tuple[LegRecord, ...] = field(factory=tuple)
    error: str = ""
    gate: str = ""  # the gate that rejected it ("engine" for the kill switch / halt)
    recorded_at: float = 0.0  # unix seconds when the record was made (PnL over time)
    entry_final_ms: float | None = None  # decision -> every entry leg final
    deadline_ms: float | None = None  # the execution deadline the trade ran under
    within_deadline: bool | None = None  # entry_final_ms <= deadline_ms
    gas_spent: Decimal = ZERO  # native token (POL) settlers spent on this trade
    markets: tuple[str, ...] = ()  # "venue:market id" of each leg of the opportunity

    @classmethod
    def from_trade(cls, trade: Trade) -> TradeRecord:
        def ms(start: float | None, end: float | None) -> float | None:
            return (end - start) * 1000 if start is not None and end is not None else None

        finals = [leg.finished_at for leg in trade.legs if leg.finished_at is not None]
        skew = (max(finals) - min(finals)) * 1000 if len(finals) >= 2 else None
        opp = trade.opportunity
        entry_final = None
        if trade.legs and trade.decided_at is not None and len(finals) == len(trade.legs):
            entry_final = (max(finals) - trade.decided_at) * 1000
        deadline = getattr(trade, "deadline_ms", None)
        within = None if entry_final is None or deadline is None else entry_final <= deadline
        return cls(
            trade_id=trade.id, opportunity_id=opp.id, kind=opp.kind, detector=opp.detector,
            strategy=trade.strategy, state=str(trade.state), reject_reason=trade.reject_reason,
            size=opp.size, expected_edge=opp.expected_profit,
            realised_pnl=trade.realised_pnl if trade.state is not TradeState.REJECTED else ZERO,
            hedged_size=trade.hedged_size, rollback_cost=trade.rollback_cost,
            slippage=sum((leg.slippage for leg in trade.legs), ZERO),
            decision_to_wire_ms=ms(trade.decided_at, trade.on_wire_at),
            decision_to_final_ms=ms(trade.decided_at, trade.finished_at),
            leg_skew_ms=skew,
            unresolved_ms=sum(leg.unresolved_s for leg in trade.all_legs) * 1000,
            legs=tuple(LegRecord.from_leg(leg) for leg in trade.all_legs),
            error=trade.error,
            gate=trade.gate, recorded_at=time.time(), entry_final_ms=entry_final,
            deadline_ms=None if deadline is None else float(deadline), within_deadline=within,
            gas_spent=getattr(trade, "gas_spent", ZERO),
            markets=tuple(dict.fromkeys(f"{leg.venue}:{leg.market_id or leg.instrument}"
                                        for leg in opp.legs)),
        )

    def to_json(self) -> dict[str, Any]:
        return _jsonable(attrs.asdict(self, recurse=True))


def _jsonable(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


@attrs.define
class _Totals:
    states: Counter[str] = field(factory=Counter)
    realised_pnl: Decimal = ZERO
    expected_edge: Decimal = ZERO
    rollback_cost: Decimal = ZERO
    entry_legs: int = 0
    filled_legs: int = 0
    by_strategy: dict[str, list[int]] = field(factory=dict)  # strategy -> [trades, committed]


class _Kept(NamedTuple):
    """What the statistics keep of one recent trade: its share of the totals (to take it
    back out when it is recorded again) and its latencies. A few hundred bytes, not the
    record's several KB: the window's memory stays small at 10,000 trades."""

    state: str
    strategy: str
    realised_pnl: Decimal
    expected_edge: Decimal
    rollback_cost: Decimal
    entry_legs: int
    filled_legs: int
    decision_to_wire_ms: float | None
    decision_to_final_ms: float | None

    @classmethod
    def of(cls, r: TradeRecord) -> _Kept:
        entry = [leg for leg in r.legs if leg.purpose == "entry"]
        return cls(r.state, r.strategy, r.realised_pnl, r.expected_edge, r.rollback_cost,
                   len(entry), sum(1 for leg in entry if leg.state == "filled"),
                   r.decision_to_wire_ms, r.decision_to_final_ms)


@attrs.define
class RunStatistics:
    """Totals over every final trade of a run, kept as running sums, so memory and the cost
    of a summary stay flat however long a run is; percentiles come from the most recent
    ``window`` trades.

    A trade recorded again (an unresolved trade resolved later, gas added after settling)
    replaces its earlier record while that record is still in the window.
    """

    opportunities: int = 0
    window: int = 10_000
    recent: OrderedDict[str, _Kept] = field(factory=OrderedDict)
    totals: _Totals = field(factory=_Totals)

    def add(self, record: TradeRecord) -> None:
        old = self.recent.pop(record.trade_id, None)
        if old is not None:
            self._apply(old, -1)
        kept = _Kept.of(record)
        self._apply(kept, 1)
        self.recent[record.trade_id] = kept
        while len(self.recent) > self.window:
            self.recent.popitem(last=False)

    def _apply(self, r: _Kept, sign: int) -> None:
        t = self.totals
        t.states[r.state] += sign
        if r.state == TradeState.REJECTED:
            return
        t.realised_pnl += sign * r.realised_pnl
        t.expected_edge += sign * r.expected_edge
        t.rollback_cost += sign * r.rollback_cost
        t.entry_legs += sign * r.entry_legs
        t.filled_legs += sign * r.filled_legs
        s = t.by_strategy.setdefault(r.strategy, [0, 0])
        s[0] += sign
        s[1] += sign * (r.state == TradeState.COMMITTED)

    def count(self, state: TradeState) -> int:
        return self.totals.states[state]

    @property
    def executed(self) -> list[_Kept]:
        """The recent executed (not rejected) trades, as kept."""
        return [r for r in self.recent.values() if r.state != TradeState.REJECTED]

    def summary(self) -> RunSummary:
        t = self.totals
        executed = self.executed
        wire = [r.decision_to_wire_ms for r in executed if r.decision_to_wire_ms is not None]
        final = [r.decision_to_final_ms for r in executed if r.decision_to_final_ms is not None]
        by_strategy = {name: {"trades": n, "committed": c,
                              "success_rate": c / n if n else None}
                       for name, (n, c) in t.by_strategy.items() if n}
        return RunSummary(
            opportunities=self.opportunities,
            rejected=self.count(TradeState.REJECTED),
            committed=self.count(TradeState.COMMITTED),
            rolled_back=self.count(TradeState.ROLLED_BACK),
            unresolved=self.count(TradeState.UNRESOLVED),
            realised_pnl=t.realised_pnl,
            expected_edge=t.expected_edge,
            rollback_cost=t.rollback_cost,
            fill_rate=t.filled_legs / t.entry_legs if t.entry_legs else None,
            decision_to_wire_p50_ms=percentile(wire, 50),
            decision_to_wire_p99_ms=percentile(wire, 99),
            decision_to_final_p50_ms=percentile(final, 50),
            decision_to_final_p99_ms=percentile(final, 99),
            by_strategy=by_strategy,
        )


@frozen
class RunSummary:
    opportunities: int
    rejected: int
    committed: int
    rolled_back: int
    unresolved: int
    realised_pnl: Decimal
    expected_edge: Decimal
    rollback_cost: Decimal
    fill_rate: float | None
    decision_to_wire_p50_ms: float | None
    decision_to_wire_p99_ms: float | None
    decision_to_final_p50_ms: float | None
    decision_to_final_p99_ms: float | None
    by_strategy: Mapping[str, Mapping[str, Any]] = field(factory=dict)
    # venue id -> the connector's connection_stats() (websocket connects and reconnects)
    venues: Mapping[str, Mapping[str, Any]] = field(factory=dict)

    @property
    def execution_rate(self) -> float | None:
        """Opportunities that went on to execute (not rejected by a gate or a halt)."""
        executed = self.committed + self.rolled_back + self.unresolved
        return executed / self.opportunities if self.opportunities else None

    def to_json(self) -> dict[str, Any]:
        return {**_jsonable(attrs.asdict(self)), "execution_rate": self.execution_rate}

    def table(self) -> str:
        def fmt_ms(v: float | None) -> str:
            return "-" if v is None else f"{v:.3f} ms"

        rows = [
            ("opportunities", str(self.opportunities)),
            ("rejected by gates", str(self.rejected)),
            ("trades committed", str(self.committed)),
            ("trades rolled back", str(self.rolled_back)),
            ("trades unresolved", str(self.unresolved)),
            ("execution rate", "-" if self.execution_rate is None
             else f"{self.execution_rate:.1%}"),
            ("realised PnL (USDC)", f"{self.realised_pnl:.4f}"),
            ("expected edge (USDC)", f"{self.expected_edge:.4f}"),
            ("rollback cost (USDC)", f"{self.rollback_cost:.4f}"),
            ("fill rate (entry legs)", "-" if self.fill_rate is None else f"{self.fill_rate:.1%}"),
            ("decision -> wire p50", fmt_ms(self.decision_to_wire_p50_ms)),
            ("decision -> wire p99", fmt_ms(self.decision_to_wire_p99_ms)),
            ("decision -> final p50", fmt_ms(self.decision_to_final_p50_ms)),
            ("decision -> final p99", fmt_ms(self.decision_to_final_p99_ms)),
        ]
        reconnects = sum(n for v in self.venues.values()
                         for n in (v.get("ws_reconnects") or {}).values())
        if self.venues:
            rows.append(("websocket reconnects", str(reconnects)))
        width = max(len(k) for k, _ in rows)
        line = "-" * (width + 22)
        body = "\n".join(f"{k:<{width}}  {v:>18}" for k, v in rows)
        return f"{line}\n{body}\n{line}"


def net_exposure(positions: Mapping[str, Decimal], pairs: Sequence[tuple[str, str]]) -> Decimal:
    """Unhedged shares: for each (yes, no) pair, |yes - no| (a hedged set is riskless)."""
    return sum((abs(positions.get(y, ZERO) - positions.get(n, ZERO)) for y, n in pairs), ZERO)



# Why the engine refuses new entries (``Engine.halts`` keys): every cause a sink shows, so an
# alert on one reads 0, not "no data", while trading.
HALT_CAUSES = ("unresolved", "exposure", "break", "kill", "auth", "journal", "recovery", "gate",
               "lease")


@frozen
class EngineState:
    """What the engine is doing now, handed to sinks that show it (``engine_state``) whenever
    a halt is set or lifted, a trade is recorded, and once a second: what stops entries,
    trades whose outcome is unknown, and exposure being worked off."""

    run_id: str = ""
    pipeline: str = ""
    mode: str = ""
    venues: tuple[str, ...] = ()
    halts: Mapping[str, int] = field(factory=dict)  # cause -> active halts of that cause
    kill_switch: bool = False  # the kill switch is engaged (file or engine.kill)
    unresolved: int = 0  # trades whose outcome is unknown now
    # venue -> unhedged shares now (excess held plus shorts), and those shares at the
    # price their entry leg paid (USDC)
    exposure_shares: Mapping[str, Decimal] = field(factory=dict)
    exposure_usdc: Mapping[str, Decimal] = field(factory=dict)
    opportunities: int = 0  # detected so far this run
