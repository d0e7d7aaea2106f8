"""Circuit breakers: ``loss_streak`` (consecutive losing trades) and ``daily_loss``.

Both learn from every finished trade they approved (``on_trade_finished``). A trade counts
by what it realised: fills, fees, unwind losses, and 1 USDC per hedged set. A trade that is
still UNRESOLVED counts as a loss: its outcome is unknown, and pr3dict never assumes the best.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import ClassVar

import attrs
from attrs import frozen

from pr3dict_core.components import BuildContext, GateDecision
from pr3dict_core.model import ZERO, Trade, TradeState


def _is_executed(trade: Trade) -> bool:
    return trade.state is not TradeState.REJECTED and bool(trade.legs)


class LossStreakGate:
    """Opens (rejects everything) after ``max_consecutive_losses`` losing trades in a row.

    A loss: realised PnL below ``-loss_threshold``, or UNRESOLVED, or, with
    ``count_failed``, any executed trade that did not commit. A committed trade that is not
    a loss resets the streak. With ``cooldown_s`` the breaker half-opens after that long and
    lets one trade through: a win closes it, a loss opens it again.
    """

    type: ClassVar[str] = "loss_streak"

    @frozen(kw_only=True)
    class Config:
        max_consecutive_losses: int = attrs.field(validator=attrs.validators.ge(1))
        loss_threshold: Decimal = attrs.field(default=Decimal(0),
                                              validator=attrs.validators.ge(Decimal(0)))
        count_failed: bool = False
        cooldown_s: float | None = attrs.field(default=None, validator=attrs.validators.optional(
            attrs.validators.gt(0)))

    def __init__(self, id: str, config: Config, clock: Callable[[], float] = time.monotonic):
        self.id = id
        self.config = config
        self.clock = clock
        self.streak = 0
        self.opened_at: float | None = None  # clock() when the breaker opened
        self._probe: str | None = None  # the one trade let through while half-open

    @classmethod
    def from_config(cls, id: str, config: Config, ctx: BuildContext) -> LossStreakGate:
        return cls(id, config)

    @property
    def is_open(self) -> bool:
        return self.opened_at is not None

    def evaluate(self, trade: Trade) -> GateDecision:
        if self.opened_at is None:
            return GateDecision.approve()
        cooldown = self.config.cooldown_s
        if cooldown is not None and self._probe is None \
                and self.clock() - self.opened_at >= cooldown:
            self._probe = trade.id  # half-open: one trade tests the water
            return GateDecision.approve()
        return GateDecision.reject(
            f"loss streak breaker open: {self.streak} consecutive losing trades "
            f"(max_consecutive_losses {self.config.max_consecutive_losses})")

    def classify(self, trade: Trade) -> str:
        """'loss', 'win' or 'neutral' (a failed trade that cost nothing)."""
        if trade.state is TradeState.UNRESOLVED:
            return "loss"
        if trade.realised_pnl < -self.config.loss_threshold:
            return "loss"
        if trade.state is TradeState.COMMITTED:
            return "win"
        return "loss" if self.config.count_failed else "neutral"

    def on_trade_finished(self, trade: Trade) -> None:
        probe = self._probe == trade.id
        if probe:
            self._probe = None
        if not _is_executed(trade):
            return
        outcome = self.classify(trade)
        if outcome == "win":
            self.streak = 0
            self.opened_at = None
        elif outcome == "loss":
            self.streak += 1
            if self.streak >= self.config.max_consecutive_losses or probe:
                self.opened_at = self.clock()


class DailyLossGate:
    """Rejects every trade once the day's realised loss reaches ``max_loss`` USDC.

    The day starts at ``reset_hour_utc`` o'clock UTC. By default losses are net of the
    day's gains; with ``gross = true`` only losing trades count. An UNRESOLVED trade counts
    with the full cost of its legs as a loss until it resolves.
    """

    type: ClassVar[str] = "daily_loss"

    @frozen(kw_only=True)
    class Config:
        max_loss: Decimal = attrs.field(validator=attrs.validators.gt(Decimal(0)))
        reset_hour_utc: int = attrs.field(default=0, validator=[attrs.validators.ge(0),
                                                                attrs.validators.le(23)])
        gross: bool = False

    def __init__(self, id: str, config: Config,
                 now: Callable[[], datetime] = lambda: datetime.now(UTC)):
        self.id = id
        self.config = config
        self.now = now
        self.day: datetime | None = None  # start of the current trading day
        self.pnl = ZERO  # the day's realised PnL as counted

    @classmethod
    def from_config(cls, id: str, config: Config, ctx: BuildContext) -> DailyLossGate:
        return cls(id, config)

    def _day_start(self) -> datetime:
        now = self.now()
        start = now.replace(hour=self.config.reset_hour_utc, minute=0, second=0, microsecond=0)
        if start > now:
            start -= timedelta(days=1)
        return start

    def _roll(self) -> None:
        start = self._day_start()
        if self.day != start:
            self.day, self.pnl = start, ZERO

    @property
    def loss(self) -> Decimal:
        self._roll()
        return max(-self.pnl, ZERO)

    def evaluate(self, trade: Trade) -> GateDecision:
        loss = self.loss
        if loss >= self.config.max_loss:
            return GateDecision.reject(
                f"daily loss {loss:.4f} reached max_loss {self.config.max_loss} (day started "
                f"{self.day:%Y-%m-%d %H:%M} UTC)")
        return GateDecision.approve()

    def restore(self, trades: Sequence[Trade]) -> None:
        """Rebuild the day's PnL from the journal: trades that ended since the day began
        (an open one counts as the loss of its legs' cost, as when it is live)."""
        self.day, self.pnl = None, ZERO
        self._roll()
        assert self.day is not None
        since = self.day.timestamp()
        for trade in trades:
            if trade.ended_at is None or trade.ended_at >= since:
                self.on_trade_finished(trade)

    def on_trade_finished(self, trade: Trade) -> None:
        if not _is_executed(trade):
            return
        self._roll()
        if trade.state is TradeState.UNRESOLVED:
            pnl = -sum((leg.notional + leg.fees for leg in trade.legs), ZERO)
        else:
            pnl = trade.realised_pnl
        if self.config.gross and pnl > ZERO:
            return
        self.pnl += pnl
