"""``capital``: reserves a trade's cost at preflight so concurrent trades never double-spend."""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from typing import ClassVar

import attrs
from attrs import frozen

from pr3dict_core.components import BuildContext, GateDecision
from pr3dict_core.model import ZERO, Trade


class CapitalGate:
    """Available = bankroll - reserved - deployed.

    A trade's worst case (every BUY leg at its limit plus the slippage it may chase, fees
    included: ``Trade.reserve``) is reserved when approved and released when it is final;
    what it actually spent then counts as deployed. At start the state is rebuilt from the
    journal (``restore``), so a crash-looping process cannot spend its bankroll twice.
    With ``hedged_sets_are_cash`` (the default) a fully hedged set counts at its payout,
    since it can be merged back into collateral at once (YES + NO = 1); only unhedged
    shares tie capital up.
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
        cost = max(trade.reserve, trade.opportunity.cost)
        limit = self.config.bankroll * self.config.max_trade_fraction
        if cost > limit:
            return GateDecision.reject(
                f"trade cost {cost:.4f} (worst case) exceeds per-trade limit {limit:.4f}")
        if cost > self.available:
            return GateDecision.reject(
                f"insufficient capital: trade needs up to {cost:.4f}, available "
                f"{self.available:.4f}")
        self.reserved[trade.id] = cost
        return GateDecision.approve()

    def on_trade_finished(self, trade: Trade) -> None:
        self.reserved.pop(trade.id, None)
        self.deployed += self.spent(trade)

    def spent(self, trade: Trade) -> Decimal:
        spent = -trade.cash_flow
        if self.config.hedged_sets_are_cash:
            spent -= trade.hedged_size * trade.opportunity.payout
        return spent

    def restore(self, trades: Sequence[Trade]) -> None:
        """Rebuild from the journal: what finished trades spent is deployed; a trade still
        open (unresolved) stays reserved at its full cost until it resolves."""
        self.reserved.clear()
        self.deployed = ZERO
        for trade in trades:
            if trade.state.is_final:
                self.deployed += self.spent(trade)
            else:
                cost = max(trade.reserve, trade.opportunity.cost)
                self.reserved[trade.id] = cost
