"""``portfolio_heat``: cap the total open exposure across every trade.

Heat = the cost of every trade in flight (reserved when approved, released when final)
+ what the shares left unhedged by finished trades cost (a rollback that could not sell
everything back leaves naked shares) + optionally, with ``include_hedged``, what the hedged
sets cost (for cross-venue sets, which cannot be merged into collateral and carry settlement
risk until both markets resolve). A trade is rejected when heat plus its cost would exceed
``max_exposure``. The gate is told every finished trade, so heat stays current.
"""

from __future__ import annotations

from decimal import Decimal
from typing import ClassVar

import attrs
from attrs import frozen

from pr3dict_core.components import BuildContext, GateDecision
from pr3dict_core.model import ZERO, Trade


def open_exposure(trade: Trade, include_hedged: bool) -> Decimal:
    """USDC a finished trade leaves at risk: its unhedged shares (and hedged sets) at cost."""
    positions = trade.net_position()
    held = [positions.get((leg.venue, leg.instrument), ZERO) for leg in trade.legs]
    hedged = max(min(held), ZERO) if held else ZERO  # = trade.hedged_size, computed once
    out = ZERO
    seen: set[tuple[str, str]] = set()
    for leg in trade.legs:
        key = (leg.venue, leg.instrument)
        if key in seen:
            continue
        seen.add(key)
        price = leg.average_price if leg.average_price is not None else leg.target_price
        excess = positions.get(key, ZERO) - hedged
        if excess > ZERO:
            out += excess * price
        if include_hedged and hedged > ZERO:
            out += hedged * price
    return out


class PortfolioHeatGate:
    type: ClassVar[str] = "portfolio_heat"

    @frozen(kw_only=True)
    class Config:
        max_exposure: Decimal = attrs.field(validator=attrs.validators.gt(Decimal(0)))
        include_hedged: bool = False

    def __init__(self, id: str, config: Config):
        self.id = id
        self.config = config
        self.in_flight: dict[str, Decimal] = {}
        self.open = ZERO  # exposure left by finished trades

    @classmethod
    def from_config(cls, id: str, config: Config, ctx: BuildContext) -> PortfolioHeatGate:
        return cls(id, config)

    @property
    def heat(self) -> Decimal:
        return self.open + sum(self.in_flight.values(), ZERO)

    def evaluate(self, trade: Trade) -> GateDecision:
        cost = trade.opportunity.cost
        heat = self.heat
        if heat + cost > self.config.max_exposure:
            return GateDecision.reject(
                f"portfolio heat {heat:.4f} + trade {cost:.4f} would exceed max_exposure "
                f"{self.config.max_exposure}")
        self.in_flight[trade.id] = cost
        return GateDecision.approve()

    def on_trade_finished(self, trade: Trade) -> None:
        self.in_flight.pop(trade.id, None)
        self.open += open_exposure(trade, self.config.include_hedged)
