"""``market``: marketable limit orders (FAK or FOK) within a slippage bound."""

from __future__ import annotations

from decimal import Decimal
from typing import ClassVar, Literal

import attrs
from attrs import frozen

from pr3dict_core.components import BuildContext, LegContext
from pr3dict_core.model import ONE, Leg, LegState, Side, TimeInForce, quantize_down


class MarketStrategy:
    """Takes liquidity at once: each leg is a marketable limit order priced at the detected
    worst level plus at most ``max_slippage_ticks``. With FAK the unfilled remainder is
    chased while the book still offers it within the bound and the deadline allows."""

    type: ClassVar[str] = "market"

    @frozen(kw_only=True)
    class Config:
        max_slippage_ticks: int = attrs.field(default=2, validator=attrs.validators.ge(0))
        time_in_force: Literal["FAK", "FOK"] = "FAK"
        max_attempts: int = attrs.field(default=3, validator=attrs.validators.ge(1))

    def __init__(self, config: Config):
        self.config = config
        self.max_slippage_ticks = config.max_slippage_ticks
        self.tif = TimeInForce(config.time_in_force)

    @classmethod
    def from_config(cls, name: str, config: Config, ctx: BuildContext) -> MarketStrategy:
        return cls(config)

    def limit_price(self, leg: Leg) -> Decimal:
        bound = leg.tick_size * self.config.max_slippage_ticks
        if leg.side is Side.BUY:
            return min(leg.limit_price + bound, ONE - leg.tick_size)
        return max(leg.limit_price - bound, leg.tick_size)

    async def execute_leg(self, leg: Leg, ctx: LegContext) -> None:
        price = self.limit_price(leg)
        step = ctx.residual
        for _ in range(self.config.max_attempts):
            size = quantize_down(leg.remaining, step)
            if size <= 0:
                return
            await ctx.submit(price, size, self.tif)
            if leg.state is LegState.FILLED or leg.state.is_final \
                    or leg.state is LegState.UNRESOLVED or self.tif is TimeInForce.FOK:
                return
            if ctx.now() >= ctx.deadline or not self._liquidity_within(leg, ctx, price):
                return

    @staticmethod
    def _liquidity_within(leg: Leg, ctx: LegContext, price: Decimal) -> bool:
        book = ctx.book()
        if book is None:
            return False
        if leg.side is Side.BUY:
            return book.best_ask is not None and book.best_ask.price <= price
        return book.best_bid is not None and book.best_bid.price >= price
