"""Gate benchmark: what each risk gate costs per trade (evaluate + on_trade_finished).

Every built-in gate is built as a pipeline would build it and fed the same stream of
two-leg trades: ``evaluate`` at preflight (with its reservation), then
``on_trade_finished`` with the final trade (9 in 10 committed, 1 in 10 rolled back with an
unwind loss). Limits are set so nothing is rejected: the approving path, which is the one
every executed trade pays. Also: the whole chain in pipeline order, bare and with the span
the engine opens around each gate (SDK tracer, batch processor, no-op exporter).

    python bench/bench_gates.py [--trades 20000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from decimal import Decimal
from pathlib import Path

from common import NullExporter
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from pr3dict_core import telemetry as tm
from pr3dict_core.model import Fill, Leg, LegSpec, LegState, Opportunity, Side, Trade, TradeState
from pr3dict_gates.breakers import DailyLossGate, LossStreakGate
from pr3dict_gates.capital import CapitalGate
from pr3dict_gates.connectivity import ConnectivityGate
from pr3dict_gates.heat import PortfolioHeatGate
from pr3dict_gates.kill_switch import KillSwitchGate
from pr3dict_gates.position import MaxPositionGate

D = Decimal
BIG = D(10) ** 12




class Alive:
    def last_heartbeat(self) -> float:
        return time.monotonic()


def trades(n: int) -> list[tuple[Trade, Trade]]:
    """(trade at preflight, the same trade finished) pairs over 200 markets."""
    out = []
    for k in range(n):
        m = f"m{k % 200}"
        specs = (LegSpec("poly", f"{m}:yes", Side.BUY, D("0.45"), D(10)),
                 LegSpec("kalshi", f"{m}:no", Side.BUY, D("0.50"), D(10)))
        opp = Opportunity(id=f"o{k}", detector="d", kind="cross_venue", legs=specs,
                          size=D(10), edge_per_share=D("0.05"), cost=D("9.5"))
        pre = Trade(id=f"t{k}", opportunity=opp, strategy="market")
        done = Trade(id=f"t{k}", opportunity=opp, strategy="market")
        loss = k % 10 == 9
        for i, spec in enumerate(specs):
            leg = Leg(trade_id=done.id, index=i, venue=spec.venue, instrument=spec.instrument,
                      side=Side.BUY, size=D(10), limit_price=spec.price,
                      target_price=spec.price)
            filled = D(0) if loss and i == 1 else D(10)
            if filled:
                leg.fills["f"] = Fill("f", "c", spec.price, filled)
            leg.state = LegState.FILLED if filled else LegState.CANCELLED
            done.legs.append(leg)
        if loss:
            unwind = Leg(trade_id=done.id, index=2, venue="poly", instrument=specs[0].instrument,
                         side=Side.SELL, size=D(10), limit_price=D(0),
                         target_price=D("0.45"), purpose="unwind")
            unwind.fills["u"] = Fill("u", "cu", D("0.44"), D(10))
            unwind.state = LegState.FILLED
            done.unwind_legs.append(unwind)
        done.state = TradeState.ROLLED_BACK if loss else TradeState.COMMITTED
        out.append((pre, done))
    return out


def build_gates(folder: Path) -> list:
    venues = {"poly": Alive(), "kalshi": Alive()}
    return [
        KillSwitchGate("kill", KillSwitchGate.Config(file=str(folder / "KILL")),
                       folder / "KILL"),
        ConnectivityGate("connectivity", ConnectivityGate.Config(max_age_ms=5000), venues),
        CapitalGate("capital", CapitalGate.Config(bankroll=BIG)),
        MaxPositionGate("position", MaxPositionGate.Config(max_leg_size=D(50),
                                                           max_position=BIG)),
        PortfolioHeatGate("heat", PortfolioHeatGate.Config(max_exposure=BIG,
                                                           include_hedged=True)),
        LossStreakGate("streak", LossStreakGate.Config(max_consecutive_losses=1000)),
        DailyLossGate("daily", DailyLossGate.Config(max_loss=BIG)),
    ]


def time_gate(gate, stream) -> tuple[list[int], list[int]]:  # type: ignore[no-untyped-def]
    ev, fin = [], []
    clock = time.perf_counter_ns
    for pre, done in stream:
        t0 = clock()
        decision = gate.evaluate(pre)
        t1 = clock()
        gate.on_trade_finished(done)
        t2 = clock()
        assert decision.approved, decision.reason
        ev.append(t1 - t0)
        fin.append(t2 - t1)
    return ev, fin


def time_chain(gates, stream, tracer=None) -> list[int]:  # type: ignore[no-untyped-def]
    out = []
    clock = time.perf_counter_ns
    for pre, done in stream:
        t0 = clock()
        approved = []
        for gate in gates:
            if tracer is None:
                decision = gate.evaluate(pre)
            else:
                with tracer.start_as_current_span(tm.SPAN_GATE, attributes={
                        tm.GATE_ID: gate.id, tm.GATE_TYPE: gate.type,
                        tm.TRADE_ID: pre.id}) as span:
                    decision = gate.evaluate(pre)
                    span.set_attribute(tm.GATE_APPROVED, decision.approved)
            if not decision.approved:
                break
            approved.append(gate)
        for gate in approved:
            gate.on_trade_finished(done)
        out.append(clock() - t0)
    return out


def pct(values: Sequence[int], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] / 1000


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trades", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    results: dict[str, tuple[list[int], list[int]]] = {}
    chains: dict[str, list[int]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.repeat):
            for gate in build_gates(Path(tmp)):
                stream = trades(args.trades)
                gc.collect()
                ev, fin = time_gate(gate, stream)
                best = results.get(gate.type)
                if best is None or statistics.median(ev) + statistics.median(fin) < \
                        statistics.median(best[0]) + statistics.median(best[1]):
                    results[gate.type] = (ev, fin)
            for label, tracer in (("chain of all 7 gates", None),
                                  ("chain of all 7, spans on", "sdk")):
                provider = None
                if tracer == "sdk":
                    provider = TracerProvider()
                    provider.add_span_processor(BatchSpanProcessor(NullExporter()))
                    tracer = tm.get_tracer(provider)
                stream = trades(args.trades)
                gc.collect()
                times = time_chain(build_gates(Path(tmp)), stream, tracer)
                if provider is not None:
                    provider.shutdown()
                if label not in chains or statistics.median(times) < \
                        statistics.median(chains[label]):
                    chains[label] = times
    print(f"gate benchmark: cost per trade in microseconds, {args.trades:,} two-leg trades, "
          f"one core, best of {args.repeat}")
    header = ("gate", "evaluate p50", "evaluate p99", "finished p50", "finished p99",
              "total p50")
    widths = (26, 12, 12, 12, 12, 10)
    print("  ".join(h.ljust(w) if i == 0 else h.rjust(w)
                    for i, (h, w) in enumerate(zip(header, widths, strict=True))))
    print("  ".join("-" * w for w in widths))
    for name, (ev, fin) in results.items():
        total = [a + b for a, b in zip(ev, fin, strict=True)]
        cells = (name, f"{pct(ev, .5):.2f}", f"{pct(ev, .99):.2f}", f"{pct(fin, .5):.2f}",
                 f"{pct(fin, .99):.2f}", f"{pct(total, .5):.2f}")
        print("  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                        for i, (c, w) in enumerate(zip(cells, widths, strict=True))))
    for label, times in chains.items():
        cells = (label, "", "", "", "", f"{pct(times, .5):.2f}")
        print("  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                        for i, (c, w) in enumerate(zip(cells, widths, strict=True)))
              + f"   (p99 {pct(times, .99):.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
