"""``limit`` and ``hybrid``: rest at the detected price first; hybrid then crosses the spread."""

from __future__ import annotations

from decimal import Decimal
from typing import ClassVar

import attrs
from attrs import frozen

from pr3dict_core.components import BuildContext, LegContext
from pr3dict_core.model import ONE, Leg, LegState, Side, TimeInForce, quantize_down


def _chase_price(leg: Leg, ticks: int) -> Decimal:
    """The worst price a marketable remainder may pay: the detected price plus the bound."""
    bound = leg.tick_size * ticks
    if leg.side is Side.BUY:
        return min(leg.limit_price + bound, ONE - leg.tick_size)
    return max(leg.limit_price - bound, leg.tick_size)


async def rest_until(leg: Leg, ctx: LegContext, until: float) -> None:
    """Place a GTC order at the leg's target price and wait for fills until ``until``."""
    size = quantize_down(leg.remaining, ctx.residual)
    if size <= 0:
        return
    await ctx.submit(leg.target_price, size, TimeInForce.GTC)
    while ctx.resting and not leg.state.is_final and ctx.now() < until:
        await ctx.wait(until)
    if ctx.resting and not leg.state.is_final:
        await ctx.cancel()


class LimitStrategy:
    """Each leg rests as a GTC limit order at the price the detector saw until
    ``deadline_ms``; then what rests is cancelled (and the trade rolls back if a leg is short).
    Pays no spread, risks missing the window."""

    type: ClassVar[str] = "limit"

    @frozen(kw_only=True)
    class Config:
        pass

    max_slippage_ticks = 0

    @classmethod
    def from_config(cls, name: str, config: Config, ctx: BuildContext) -> LimitStrategy:
        return cls()

    async def execute_leg(self, leg: Leg, ctx: LegContext) -> None:
        await rest_until(leg, ctx, ctx.deadline)


class HybridStrategy:
    """Limit first; after ``fallback_after_ms`` the unfilled remainder of each leg is cancelled
    and sent again as a marketable FAK order within ``max_slippage_ticks`` of the detected
    price, chased until the deadline."""

    type: ClassVar[str] = "hybrid"

    @frozen(kw_only=True)
    class Config:
        fallback_after_ms: int = attrs.field(default=15, validator=attrs.validators.ge(0))
        max_slippage_ticks: int = attrs.field(default=2, validator=attrs.validators.ge(0))

    def __init__(self, config: Config):
        self.config = config
        self.max_slippage_ticks = config.max_slippage_ticks

    @classmethod
    def from_config(cls, name: str, config: Config, ctx: BuildContext) -> HybridStrategy:
        return cls(config)

    async def execute_leg(self, leg: Leg, ctx: LegContext) -> None:
        start = ctx.now()
        fallback_at = min(start + self.config.fallback_after_ms / 1000, ctx.deadline)
        await rest_until(leg, ctx, fallback_at)
        price = _chase_price(leg, self.config.max_slippage_ticks)
        while not leg.state.is_final and leg.state is not LegState.UNRESOLVED \
                and ctx.now() < ctx.deadline:
            size = quantize_down(leg.remaining, ctx.residual)
            if size <= 0:
                return
            book = ctx.book()
            best = None if book is None else (book.best_ask if leg.side is Side.BUY
                                              else book.best_bid)
            if best is None or (best.price > price if leg.side is Side.BUY
                                else best.price < price):
                await ctx.wait(ctx.deadline)
                continue
            before = leg.filled
            await ctx.submit(price, size, TimeInForce.FAK)
            if leg.filled == before:
                return  # the book moved away under the bound: stop chasing
