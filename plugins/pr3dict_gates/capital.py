"""``capital``: reserves a trade's worst case before any order, so trades never double-spend."""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from typing import ClassVar

import attrs
from attrs import frozen

from pr3dict_core.capital import CapitalBook, LocalBook
from pr3dict_core.components import BuildContext, GateDecision
from pr3dict_core.model import Trade


class CapitalGate:
    """Available = bankroll - reserved - deployed, in a capital book.

    A trade's worst case (every BUY leg at its limit plus the slippage it may chase, fees
    included: ``Trade.reserve``) is reserved when approved and released when it is final;
    what it actually spent then counts as deployed. With a journal the book lives there:
    rebuilt at start, and on PostgreSQL shared by every engine whose capital gate names the
    same ``book`` (one bankroll, reserved atomically). With ``hedged_sets_are_cash`` (the
    default) a fully hedged set counts at its payout, since it can be merged back into
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
        # Engines sharing a PostgreSQL journal share the bankroll of books of one name.
        book: str = attrs.field(default="main", validator=attrs.validators.matches_re(
            r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}"))

    def __init__(self, id: str, config: Config, book: CapitalBook | None = None):
        self.id = id
        self.config = config
        self.book = book or LocalBook(config.book, config.bankroll)

    @classmethod
    def from_config(cls, id: str, config: Config, ctx: BuildContext) -> CapitalGate:
        return cls(id, config, ctx.capital_book(config.book, config.bankroll))

    @property
    def available(self) -> Decimal:
        return self.book.available

    @property
    def reserved(self) -> dict[str, Decimal]:
        """This process's reservations (a local book only)."""
        assert isinstance(self.book, LocalBook)
        return self.book.reserved

    @property
    def deployed(self) -> Decimal:
        assert isinstance(self.book, LocalBook)
        return self.book.deployed

    async def evaluate(self, trade: Trade) -> GateDecision:
        cost = self.cost(trade)
        limit = self.config.bankroll * self.config.max_trade_fraction
        if cost > limit:
            return GateDecision.reject(
                f"trade cost {cost:.4f} (worst case) exceeds per-trade limit {limit:.4f}")
        if not await self.book.reserve(trade.id, cost):
            return GateDecision.reject(
                f"insufficient capital: trade needs up to {cost:.4f}, available "
                f"{self.book.available:.4f}")
        return GateDecision.approve()

    def on_trade_finished(self, trade: Trade) -> None:
        self.book.settle(trade.id, self.spent(trade))

    @staticmethod
    def cost(trade: Trade) -> Decimal:
        return max(trade.reserve, trade.opportunity.cost)

    def spent(self, trade: Trade) -> Decimal:
        spent = -trade.cash_flow
        if self.config.hedged_sets_are_cash:
            spent -= trade.hedged_size * trade.opportunity.payout
        return spent

    def restore(self, trades: Sequence[Trade]) -> None:
        """Rebuild from the journal: what finished trades spent is deployed; a trade still
        open (unresolved) stays reserved at its full cost until it resolves."""
        self.book.restore([(t.id, True, self.spent(t)) if t.state.is_final
                           else (t.id, False, self.cost(t)) for t in trades])
