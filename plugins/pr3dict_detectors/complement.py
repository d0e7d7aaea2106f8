"""``binary_complement``: buy YES and NO of one market when both asks sum below 1 after fees."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, ClassVar

import attrs
from attrs import frozen

from pr3dict_core.components import BuildContext, Venue
from pr3dict_core.config import ref
from pr3dict_core.model import (
    ONE,
    Book,
    Market,
    Opportunity,
)

from .sizing import LegQuote, Sizer, SizingOptions, opportunity_from_plan, plan_equal_shares


class BinaryComplement:
    """Walks both books' depth, sizes equal shares, and keeps only shares whose edge after
    both venues' fees is at least ``min_edge`` USDC per share; then applies the risk caps
    of :mod:`pr3dict_detectors.sizing`."""

    type: ClassVar[str] = "binary_complement"

    @frozen(kw_only=True)
    class Config(SizingOptions):
        venues: tuple[str, ...] = ref("venues", validator=attrs.validators.min_len(1))

    def __init__(self, id: str, config: Config, *, built: Any = None):
        self.id = id
        self.config = config
        self.venue_ids = tuple(config.venues)
        self.sizer = Sizer(id, config)
        self._built = built
        self._venues: Mapping[str, Venue] = {}
        self._by_instrument: dict[tuple[str, str], Market] = {}
        self._nonce = itertools.count()
        self.last_plan = None  # the most recent Plan (for tests and debugging)

    @classmethod
    def from_config(cls, id: str, config: Config, ctx: BuildContext) -> BinaryComplement:
        return cls(id, config, built=ctx.built)

    def bind(self, venues: Mapping[str, Venue]) -> None:
        self._venues = venues
        self.sizer.bind_gate(self._built)
        for vid, venue in venues.items():
            for m in venue.markets():
                self._by_instrument[(vid, m.yes)] = m
                self._by_instrument[(vid, m.no)] = m

    def detect(self, changed: Sequence[Book]) -> Iterable[Opportunity]:
        seen: set[tuple[str, str]] = set()
        by_instrument = self._by_instrument
        for book in changed:
            market = by_instrument.get((book.venue, book.instrument))
            if market is None:
                continue
            key = (book.venue, market.market_id)
            if key in seen:
                continue
            seen.add(key)
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
        quotes = (LegQuote(market.venue, market.yes, market, yes.asks, venue.fee),
                  LegQuote(market.venue, market.no, market, no.asks, venue.fee))
        plan = plan_equal_shares(quotes, payout=ONE, min_edge=self.config.min_edge,
                                 max_levels=self.config.max_levels, limits=self.sizer.limits())
        self.last_plan = plan
        if plan is None:
            return None
        return opportunity_from_plan(self.id, "binary_complement", next(self._nonce), quotes,
                                     plan)
