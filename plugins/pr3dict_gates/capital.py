"""``capital``: reserves a trade's cost at preflight so concurrent trades never double-spend."""

from __future__ import annotations

from decimal import Decimal
from typing import ClassVar

import attrs
from attrs import frozen

from pr3dict_core.components import BuildContext, GateDecision
from pr3dict_core.model import ZERO, Trade


class CapitalGate:
    """Available = bankroll - reserved - deployed.

    A trade's full cost (all legs, fees) is reserved when approved and released when it is
    final; what it actually spent then counts as deployed. With ``hedged_sets_are_cash``
    (the default) a fully hedged set counts at its payout, since it can be merged back into
    collateral at once (YES + NO = 1); only unhedged shares tie capital up.
    """

    type: ClassVar[str] = "capital"

    @frozen(kw_only=True)
    class Config:
        bankroll: Decimal = attrs.field(validator=attrs.validators.gt(Decimal(0)))
        max_trade_fraction: Decimal = attrs.field(
            default=Decimal(1), validator=[attrs.validators.gt(Decimal(0)),
                                           attrs.validators.le(Decimal(1))])
        hedged_sets_are_cash: bool = True

    def __init__(self, id: str, config: Config):
        self.id = id
        self.config = config
        self.reserved: dict[str, Decimal] = {}
        self.deployed = ZERO

    @classmethod
    def from_config(cls, id: str, config: Config, ctx: BuildContext) -> CapitalGate:
        return cls(id, config)

    @property
    def available(self) -> Decimal:
        return self.config.bankroll - sum(self.reserved.values(), ZERO) - self.deployed

    def evaluate(self, trade: Trade) -> GateDecision:
        cost = trade.opportunity.cost
        limit = self.config.bankroll * self.config.max_trade_fraction
        if cost > limit:
            return GateDecision.reject(f"trade cost {cost:.4f} exceeds per-trade limit {limit:.4f}")
        if cost > self.available:
            return GateDecision.reject(
                f"insufficient capital: trade needs {cost:.4f}, available {self.available:.4f}")
        self.reserved[trade.id] = cost
        return GateDecision.approve()

    def on_trade_finished(self, trade: Trade) -> None:
        self.reserved.pop(trade.id, None)
        spent = -trade.cash_flow
        if self.config.hedged_sets_are_cash:
            spent -= trade.hedged_size * trade.opportunity.payout
        self.deployed += spent
