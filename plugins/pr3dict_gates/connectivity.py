"""``connectivity``: refuse a trade when one of its venues has gone quiet.

A venue proves it is alive by delivering books. A venue that can say when it last did has an
optional ``last_heartbeat() -> float | None`` method returning ``time.monotonic()`` of its
last sign of life (the paper venue: its last ``poll_books``; a connector: its last book,
websocket message or heartbeat reply). A trade is rejected when any venue it would trade on
has been silent longer than ``max_age_ms``, has never been heard from, or cannot say (fail
closed: a venue without ``last_heartbeat`` cannot be watched).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import attrs
from attrs import frozen

from pr3dict_core.components import BuildContext, GateDecision
from pr3dict_core.config import ref
from pr3dict_core.model import Pr3dictError, Trade


class ConnectivityGate:
    type: ClassVar[str] = "connectivity"

    @frozen(kw_only=True)
    class Config:
        max_age_ms: float = attrs.field(default=5000.0, validator=attrs.validators.gt(0))
        # Venues that must all be alive for any trade (default: the trade's own venues).
        venues: tuple[str, ...] | None = ref("venues", default=None)

    def __init__(self, id: str, config: Config, venues: Mapping[str, Any],
                 clock: Callable[[], float] = time.monotonic):
        self.id = id
        self.config = config
        self.venues = venues
        self.clock = clock
        self.max_age_s = config.max_age_ms / 1000
        for vid in config.venues or ():
            venue = venues.get(vid)
            if venue is not None and not callable(getattr(venue, "last_heartbeat", None)):
                raise Pr3dictError(
                    f"gates.{id}.venues: venue {vid!r} (type {getattr(venue, 'type', '?')}) has "
                    "no last_heartbeat(); the connectivity gate cannot watch it")

    @classmethod
    def from_config(cls, id: str, config: Config, ctx: BuildContext) -> ConnectivityGate:
        return cls(id, config, ctx.built.get("venues", {}))

    def evaluate(self, trade: Trade) -> GateDecision:
        watched = self.config.venues or tuple(dict.fromkeys(leg.venue for leg in
                                                            trade.opportunity.legs))
        now = self.clock()
        for vid in watched:
            venue = self.venues.get(vid)
            heartbeat = getattr(venue, "last_heartbeat", None)
            if heartbeat is None:
                return GateDecision.reject(f"venue {vid} reports no heartbeat")
            last = heartbeat()
            if last is None:
                return GateDecision.reject(f"venue {vid} has not delivered books yet")
            age = now - last
            if age > self.max_age_s:
                return GateDecision.reject(
                    f"venue {vid} silent for {age * 1000:.0f} ms (max_age_ms "
                    f"{self.config.max_age_ms:g})")
        return GateDecision.approve()

    def on_trade_finished(self, trade: Trade) -> None:
        pass
