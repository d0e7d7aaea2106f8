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

from .sizing import (
    LegQuote,
    Plan,
    Sizer,
    SizingOptions,
    Watch,
    opportunity_from_plan,
    plan_equal_shares,
)


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
        # venue -> instrument -> (its market, what it was last priced at, 0 YES / 1 NO)
        self._by_instrument: dict[str, dict[str, tuple[Market, Watch, int]]] = {}
        self._nonce = itertools.count()
        self.last_plan: Plan | None = None  # the most recent Plan (tests and debugging)

    @classmethod
    def from_config(cls, id: str, config: Config, ctx: BuildContext) -> BinaryComplement:
        return cls(id, config, built=ctx.built)

    def bind(self, venues: Mapping[str, Venue]) -> None:
        self._venues = venues
        self.sizer.bind_gate(self._built)
        for vid, venue in venues.items():
            index = self._by_instrument.setdefault(vid, {})
            for m in venue.markets():
                watch = Watch(2)
                index[m.yes], index[m.no] = (m, watch, 0), (m, watch, 1)

    def detect(self, changed: Sequence[Book]) -> Iterable[Opportunity]:
        """Each market one of whose books changed, once, if its asks or the limits are new
        (``sizing.Watch``): a cheap reject on the best asks, then the walk."""
        due: dict[Watch, Market] = {}  # keyed by identity (a Market hashes every field)
        index, caps = self._by_instrument, self.sizer.caps()
        for book in changed:
            by_venue = index.get(book.venue)  # a book of another venue: one lookup
            entry = by_venue.get(book.instrument) if by_venue is not None else None
            if entry is not None:
                market, watch, leg = entry
                if watch.moved(leg, book.asks, caps):
                    due[watch] = market
        bar = ONE - self.config.min_edge
        for watch, market in due.items():
            venue = self._venues[market.venue]
            yes, no = venue.book(market.yes), venue.book(market.no)
            yes_asks, no_asks = yes.asks if yes else (), no.asks if no else ()
            rejected = not yes_asks or not no_asks or \
                yes_asks[0].price + no_asks[0].price > bar  # fees only make it worse
            watch.priced((yes_asks, no_asks), caps, rejected)
            if rejected or yes is None or no is None:
                continue
            opp = self._plan(market, venue, yes, no)
            if opp is not None:
                watch.offered = True
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
        return self._plan(market, venue, yes, no)

    def _plan(self, market: Market, venue: Venue, yes: Book, no: Book) -> Opportunity | None:
        quotes = (LegQuote(market.venue, market.yes, market, yes.asks, venue.fee),
                  LegQuote(market.venue, market.no, market, no.asks, venue.fee))
        plan = plan_equal_shares(quotes, payout=ONE, min_edge=self.config.min_edge,
                                 max_levels=self.config.max_levels, limits=self.sizer.limits())
        self.last_plan = plan
        if plan is None:
            return None
        return opportunity_from_plan(self.id, "binary_complement", next(self._nonce), quotes,
                                     plan)
