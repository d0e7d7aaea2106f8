"""``binary_complement``: buy YES and NO of one market when both asks sum below 1 after fees."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping, Sequence
from decimal import Decimal
from typing import ClassVar

import attrs
from attrs import frozen

from pr3dict_core.components import BuildContext, Venue
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


def _positive(instance: object, attribute: attrs.Attribute, value: Decimal | None) -> None:  # type: ignore[type-arg]
    if value is not None and value <= 0:
        raise ValueError(f"{attribute.name} must be > 0, got {value}")


class BinaryComplement:
    """Walks both books' depth, sizes equal shares, and keeps only shares whose edge after
    both venues' fees is at least ``min_edge`` USDC per share."""

    type: ClassVar[str] = "binary_complement"

    @frozen(kw_only=True)
    class Config:
        venues: tuple[str, ...] = attrs.field(validator=attrs.validators.min_len(1))
        min_edge: Decimal = attrs.field(default=Decimal("0.005"),
                                        validator=attrs.validators.ge(Decimal(0)))
        max_size: Decimal | None = attrs.field(default=None, validator=_positive)  # shares
        max_levels: int = attrs.field(default=10, validator=attrs.validators.ge(1))

    def __init__(self, id: str, config: Config):
        self.id = id
        self.config = config
        self.venue_ids = tuple(config.venues)
        self._venues: Mapping[str, Venue] = {}
        self._by_instrument: dict[tuple[str, str], Market] = {}
        self._nonce = itertools.count()

    @classmethod
    def from_config(cls, id: str, config: Config, ctx: BuildContext) -> BinaryComplement:
        return cls(id, config)

    def bind(self, venues: Mapping[str, Venue]) -> None:
        self._venues = venues
        for vid, venue in venues.items():
            for m in venue.markets():
                self._by_instrument[(vid, m.yes)] = m
                self._by_instrument[(vid, m.no)] = m

    def detect(self, changed: Sequence[Book]) -> Iterable[Opportunity]:
        seen: set[tuple[str, str]] = set()
        for book in changed:
            market = self._by_instrument.get((book.venue, book.instrument))
            if market is None or (book.venue, market.market_id) in seen:
                continue
            seen.add((book.venue, market.market_id))
            opp = self.evaluate(market)
            if opp is not None:
                yield opp

    def evaluate(self, market: Market) -> Opportunity | None:
        """The most shares of YES+NO whose every share clears ``min_edge`` after fees."""
        venue = self._venues[market.venue]
        yes, no = venue.book(market.yes), venue.book(market.no)
        if yes is None or no is None or not yes.asks or not no.asks:
            return None
        # Cheap reject before walking depth: the best levels must already clear the bar.
        if ONE - yes.asks[0].price - no.asks[0].price < self.config.min_edge:
            return None
        yes_levels = list(yes.asks[: self.config.max_levels])
        no_levels = list(no.asks[: self.config.max_levels])
        # Book sizes are multiples of the size step; so is the cap once rounded, and so
        # every chunk below is, with no re-pricing after the fact.
        cap = None if self.config.max_size is None else quantize_down(self.config.max_size,
                                                                       market.size_step)
        i = j = 0
        used_yes = used_no = ZERO
        size = cost = fees = ZERO
        worst_yes = worst_no = ZERO
        while i < len(yes_levels) and j < len(no_levels):
            a, b = yes_levels[i], no_levels[j]
            chunk = min(a.size - used_yes, b.size - used_no)
            if cap is not None:
                chunk = min(chunk, cap - size)
            if chunk <= ZERO:
                break
            chunk_fees = venue.fee(market.yes, a.price, chunk) + venue.fee(market.no, b.price,
                                                                           chunk)
            edge = (ONE - a.price - b.price) * chunk - chunk_fees
            if edge < self.config.min_edge * chunk:
                break
            size += chunk
            cost += (a.price + b.price) * chunk
            fees += chunk_fees
            worst_yes, worst_no = a.price, b.price
            used_yes += chunk
            used_no += chunk
            if used_yes >= a.size:
                i, used_yes = i + 1, ZERO
            if used_no >= b.size:
                j, used_no = j + 1, ZERO
        if size < market.min_size or size <= ZERO:
            return None
        edge_total = size * ONE - cost - fees
        legs = (
            LegSpec(market.venue, market.yes, Side.BUY, worst_yes, size, market.market_id,
                    market.tick_size, best_price=yes.asks[0].price),
            LegSpec(market.venue, market.no, Side.BUY, worst_no, size, market.market_id,
                    market.tick_size, best_price=no.asks[0].price),
        )
        return Opportunity(
            id=opportunity_id(self.id, legs, next(self._nonce)), detector=self.id,
            kind="binary_complement", legs=legs, size=size, edge_per_share=edge_total / size,
            cost=cost + fees, fees=fees,
        )
