"""``max_position``: caps shares per leg and the position held per instrument."""

from __future__ import annotations

from decimal import Decimal
from typing import ClassVar

import attrs
from attrs import frozen

from pr3dict_core.components import BuildContext, GateDecision
from pr3dict_core.model import ZERO, Trade


def _optional_positive(instance: object, attribute: attrs.Attribute, value: Decimal | None) -> None:  # type: ignore[type-arg]
    if value is not None and value <= 0:
        raise ValueError(f"{attribute.name} must be > 0, got {value}")


def _some_limit(config: MaxPositionGate.Config, max_position: Decimal | None) -> None:
    if max_position is None and config.max_leg_size is None:
        raise ValueError("a max_position gate needs `max_position`, `max_leg_size` or both "
                         "(without either it approves everything)")


class MaxPositionGate:
    """Rejects a trade whose legs exceed ``max_leg_size`` shares, or that would take the
    shares held (plus those reserved by trades in flight) in any instrument past
    ``max_position``."""

    type: ClassVar[str] = "max_position"

    @frozen(kw_only=True)
    class Config:
        max_leg_size: Decimal | None = attrs.field(default=None, validator=_optional_positive)
        max_position: Decimal | None = attrs.field(default=None, validator=[
            _optional_positive, lambda c, _, v: _some_limit(c, v)])

    def __init__(self, id: str, config: Config):
        self.id = id
        self.config = config
        self.held: dict[tuple[str, str], Decimal] = {}
        self.reserved: dict[str, dict[tuple[str, str], Decimal]] = {}

    @classmethod
    def from_config(cls, id: str, config: Config, ctx: BuildContext) -> MaxPositionGate:
        return cls(id, config)

    def exposure(self, key: tuple[str, str]) -> Decimal:
        inflight = sum((r.get(key, ZERO) for r in self.reserved.values()), ZERO)
        return self.held.get(key, ZERO) + inflight

    def evaluate(self, trade: Trade) -> GateDecision:
        opp = trade.opportunity
        cfg = self.config
        if cfg.max_leg_size is not None and opp.size > cfg.max_leg_size:
            return GateDecision.reject(f"leg size {opp.size} exceeds max_leg_size "
                                       f"{cfg.max_leg_size}")
        wanted = {(leg.venue, leg.instrument): opp.size for leg in opp.legs}
        if cfg.max_position is not None:
            for key, qty in wanted.items():
                if self.exposure(key) + qty > cfg.max_position:
                    return GateDecision.reject(
                        f"position in {key[1]} would be {self.exposure(key) + qty}, "
                        f"above max_position {cfg.max_position}")
        self.reserved[trade.id] = wanted
        return GateDecision.approve()

    def on_trade_finished(self, trade: Trade) -> None:
        self.reserved.pop(trade.id, None)
        for key, qty in trade.net_position().items():
            self.held[key] = self.held.get(key, ZERO) + qty
