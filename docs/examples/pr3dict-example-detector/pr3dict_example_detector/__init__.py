"""``top_of_book_complement``: an example third-party pr3dict detector.

It buys YES and NO of one binary market when the *best* asks of both sides sum to less than
1 USDC by at least ``min_edge`` per share after the venue's taker fees. Unlike the built-in
``binary_complement`` it never walks depth: it trades at most the size shown at the top
level of each side, which keeps it simple and its prices exact.

The package registers itself through the ``pr3dict`` entry-point group (see pyproject.toml)
and the :func:`pr3dict_register_detectors` hook below.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping, Sequence
from decimal import Decimal
from typing import ClassVar

import attrs
from attrs import frozen

from pr3dict_core import hookimpl
from pr3dict_core.components import BuildContext, Registrar, Venue
from pr3dict_core.config import ref
from pr3dict_core.model import (
    ONE,
    ZERO,
    Book,
    LegSpec,
    Market,
    Opportunity,
    Side,
    opportunity_id,
    quantize_down,
)

__all__ = ["TopOfBookComplement", "pr3dict_register_detectors"]


def _positive(instance: object, attribute: attrs.Attribute, value: Decimal) -> None:  # type: ignore[type-arg]
    if value <= ZERO:
        raise ValueError(f"{attribute.name} must be > 0, got {value}")


def _price_cap(instance: object, attribute: attrs.Attribute, value: Decimal) -> None:  # type: ignore[type-arg]
    if not ZERO < value <= ONE:
        raise ValueError(f"{attribute.name} must be in (0, 1], got {value}")


class TopOfBookComplement:
    """Buy YES + NO at their best asks when that costs less than 1 after fees."""

    # The name pipeline files use: [detectors.<id>] type = "top_of_book_complement"
    type: ClassVar[str] = "top_of_book_complement"

    @frozen(kw_only=True)
    class Config:
        """Options of a ``[detectors.<id>]`` table (besides ``type``)."""

        # Ids of [venues.<id>] tables to watch. Declaring them with `ref` lets the
        # loader check the ids exist (exit 78 at the key) and `pr3dict graph` draw the edges.
        venues: tuple[str, ...] = ref("venues", validator=attrs.validators.min_len(1))
        # Shares to trade per opportunity, capped by the size at the top of both books.
        size: Decimal = attrs.field(validator=_positive)
        # Minimum edge in USDC per share, after fees.
        min_edge: Decimal = attrs.field(default=Decimal("0.01"),
                                        validator=attrs.validators.ge(ZERO))
        # Ignore a market when either best ask is above this price.
        max_price: Decimal = attrs.field(default=Decimal("0.95"), validator=_price_cap)

    def __init__(self, id: str, config: Config):
        self.id = id
        self.config = config
        self.venue_ids = tuple(config.venues)  # the engine binds these venues
        self._venues: Mapping[str, Venue] = {}
        self._markets: dict[tuple[str, str], Market] = {}  # (venue, instrument) -> market
        self._nonce = itertools.count()

    @classmethod
    def from_config(cls, id: str, config: Config, ctx: BuildContext) -> TopOfBookComplement:
        return cls(id, config)

    def bind(self, venues: Mapping[str, Venue]) -> None:
        """Called once after the venues started: learn every market they trade."""
        self._venues = venues
        for vid, venue in venues.items():
            for market in venue.markets():
                self._markets[(vid, market.yes)] = market
                self._markets[(vid, market.no)] = market

    def detect(self, changed: Sequence[Book]) -> Iterable[Opportunity]:
        """Re-evaluate only the markets whose YES or NO book is in ``changed``."""
        seen: set[tuple[str, str]] = set()
        for book in changed:
            market = self._markets.get((book.venue, book.instrument))
            if market is None or (market.venue, market.market_id) in seen:
                continue
            seen.add((market.venue, market.market_id))
            opportunity = self.evaluate(market)
            if opportunity is not None:
                yield opportunity

    def evaluate(self, market: Market) -> Opportunity | None:
        """The top-of-book complement trade in ``market``, or None if it does not pay."""
        venue = self._venues[market.venue]
        yes, no = venue.book(market.yes), venue.book(market.no)
        if yes is None or no is None or yes.best_ask is None or no.best_ask is None:
            return None
        yes_ask, no_ask = yes.best_ask, no.best_ask
        if yes_ask.price > self.config.max_price or no_ask.price > self.config.max_price:
            return None
        # Equal shares on both legs, never equal dollars; a multiple of the size step.
        size = quantize_down(min(self.config.size, yes_ask.size, no_ask.size), market.size_step)
        if size <= ZERO or size < market.min_size:
            return None
        fees = venue.fee(market.yes, yes_ask.price, size) + venue.fee(market.no, no_ask.price,
                                                                     size)
        cost = (yes_ask.price + no_ask.price) * size
        edge_per_share = (size * ONE - cost - fees) / size
        if edge_per_share < self.config.min_edge:
            return None
        legs = (
            LegSpec(market.venue, market.yes, Side.BUY, yes_ask.price, size, market.market_id,
                    market.tick_size, best_price=yes_ask.price),
            LegSpec(market.venue, market.no, Side.BUY, no_ask.price, size, market.market_id,
                    market.tick_size, best_price=no_ask.price),
        )
        return Opportunity(
            id=opportunity_id(self.id, legs, next(self._nonce)), detector=self.id,
            kind="top_of_book_complement", legs=legs, size=size,
            edge_per_share=edge_per_share, cost=cost + fees, fees=fees,
        )


@hookimpl
def pr3dict_register_detectors(registry: Registrar) -> None:
    """Tell pr3dict about the detector; called once per plugin manager."""
    registry.add(TopOfBookComplement)
