"""``multi_outcome``: buy YES on every outcome of a mutually exclusive, exhaustive set
(a Polymarket negative-risk event) when the YES asks sum below 1 after fees.

Exactly one outcome of an exhaustive set resolves YES, so one share of every outcome's YES
pays 1. A set that is *not* exhaustive (Polymarket's augmented negative risk, where an
unnamed outcome or "other" can still win) pays nothing if an unlisted outcome wins: it is
refused, however cheap its asks look.

Sets come from the venue: a venue that knows them has an optional ``events()`` method
returning objects with ``id``, ``markets`` (market ids on that venue), ``exhaustive`` and
optionally ``title`` (the paper venue's ``[[events]]``; a Polymarket connector's
``neg_risk_market_id`` groups).

Detection is incremental: the detector keeps each set's best YES asks and their running sum,
updates them from the changed books, and walks depth only when the sum clears ``min_edge``
and an ask or the limits are new since the set was last priced (``sizing.Watch``).
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterable, Mapping, Sequence
from decimal import Decimal
from typing import Any, ClassVar

import attrs
from attrs import frozen

from pr3dict_core.components import BuildContext, Venue
from pr3dict_core.config import ref
from pr3dict_core.model import ONE, ZERO, Book, Market, Opportunity

from .sizing import (
    LegQuote,
    Sizer,
    SizingOptions,
    Watch,
    opportunity_from_plan,
    plan_equal_shares,
)

log = logging.getLogger("pr3dict.detectors.multi_outcome")


class _SetState:
    """One outcome set on one venue: its markets and the best YES ask of each."""

    __slots__ = ("asks", "id", "markets", "missing", "title", "total", "venue", "watch")

    def __init__(self, venue: str, id: str, markets: list[Market], title: str = ""):
        self.venue = venue
        self.id = id
        self.title = title
        self.markets = markets
        self.asks: list[Decimal | None] = [None] * len(markets)
        self.total = ZERO  # sum of the known best YES asks
        self.missing = len(markets)  # outcomes with no ask
        self.watch = Watch(len(markets))  # what it was last priced at

    def update(self, index: int, book: Book | None) -> None:
        new = book.asks[0].price if book is not None and book.asks else None
        old = self.asks[index]
        if old == new:
            return
        if old is None:
            self.missing -= 1
        else:
            self.total -= old
        if new is None:
            self.missing += 1
        else:
            self.total += new
        self.asks[index] = new


class MultiOutcome:
    """Buys every outcome's YES of an exhaustive set when they sum below 1 after fees."""

    type: ClassVar[str] = "multi_outcome"

    @frozen(kw_only=True)
    class Config(SizingOptions):
        venues: tuple[str, ...] = ref("venues", validator=attrs.validators.min_len(1))
        events: tuple[str, ...] | None = None  # only these set ids (default: every set)
        max_outcomes: int = attrs.field(default=16, validator=attrs.validators.ge(2))

    def __init__(self, id: str, config: Config, *, built: Any = None):
        self.id = id
        self.config = config
        self.venue_ids = tuple(config.venues)
        self.sizer = Sizer(id, config)
        self._built = built
        self._venues: Mapping[str, Venue] = {}
        self._by_yes: dict[tuple[str, str], tuple[_SetState, int]] = {}
        self.sets: dict[tuple[str, str], _SetState] = {}
        self.refused: dict[tuple[str, str], str] = {}  # (venue, set id) -> why it is not traded
        self._nonce = itertools.count()

    @classmethod
    def from_config(cls, id: str, config: Config, ctx: BuildContext) -> MultiOutcome:
        return cls(id, config, built=ctx.built)

    # ------------------------------------------------------------------ binding

    def bind(self, venues: Mapping[str, Venue]) -> None:
        self._venues = venues
        self.sizer.bind_gate(self._built)
        wanted = set(self.config.events) if self.config.events is not None else None
        found: set[str] = set()
        for vid, venue in venues.items():
            events = getattr(venue, "events", None)
            if events is None:
                log.warning("detectors.%s: venue %s lists no outcome sets (no events())",
                            self.id, vid)
                continue
            markets = {m.market_id: m for m in venue.markets()}
            for ev in events():
                if wanted is not None and ev.id not in wanted:
                    continue
                found.add(ev.id)
                reason = self._refusal(ev, markets)
                if reason:
                    self.refused[(vid, ev.id)] = reason
                    log.debug("detectors.%s: outcome set %s on %s refused: %s", self.id,
                              ev.id, vid, reason)
                    continue
                state = _SetState(vid, ev.id, [markets[m] for m in ev.markets],
                                  getattr(ev, "title", ""))
                self.sets[(vid, ev.id)] = state
                for i, m in enumerate(state.markets):
                    self._by_yes[(vid, m.yes)] = (state, i)
                    state.update(i, venue.book(m.yes))
        if self.refused:
            shown = ", ".join(f"{v}:{e}" for v, e in list(self.refused)[:5])
            more = f" and {len(self.refused) - 5} more" if len(self.refused) > 5 else ""
            log.warning("detectors.%s: %d outcome set(s) refused (%s%s): %s", self.id,
                        len(self.refused), shown, more, next(iter(self.refused.values())))
        for missing in sorted((wanted or set()) - found):
            log.warning("detectors.%s: no venue lists outcome set %s", self.id, missing)

    def hedge_sets(self) -> list[tuple[tuple[str, str], ...]]:
        """(venue, instrument) sets that together pay 1 at resolution: the YES of every
        outcome of each exhaustive set (for the end-of-run positions report)."""
        return [tuple((s.venue, m.yes) for m in s.markets) for s in self.sets.values()]

    def _refusal(self, ev: Any, markets: Mapping[str, Market]) -> str:
        if not getattr(ev, "exhaustive", False):
            return "outcomes are not exhaustive (augmented negative risk): an unlisted " \
                   "outcome can win, so buying every listed YES is not a hedge"
        ids = list(ev.markets)
        if len(ids) < 2:
            return "fewer than two outcomes"
        if len(set(ids)) != len(ids):
            return "an outcome is listed twice"
        unknown = [m for m in ids if m not in markets]
        if unknown:
            return f"unknown market(s) {', '.join(unknown)}"
        if len(ids) > self.config.max_outcomes:
            return f"{len(ids)} outcomes, above max_outcomes {self.config.max_outcomes}"
        return ""

    # ------------------------------------------------------------------ detection

    def detect(self, changed: Sequence[Book]) -> Iterable[Opportunity]:
        touched: dict[int, _SetState] = {}
        by_yes, caps = self._by_yes, self.sizer.caps()
        for book in changed:
            hit = by_yes.get((book.venue, book.instrument))
            if hit is None:
                continue
            state, index = hit
            state.update(index, book)
            if state.watch.moved(index, book.asks, caps):  # new asks or limits
                touched[id(state)] = state
        bar = ONE - self.config.min_edge
        for state in touched.values():
            if state.missing or state.total > bar:  # cheap reject, fees only make it worse
                continue
            opp = self.evaluate(state, caps)
            if opp is not None:
                yield opp

    def evaluate(self, state: _SetState, caps: tuple[Decimal | None, ...] | None = None
                 ) -> Opportunity | None:
        venue = self._venues[state.venue]
        quotes = []
        for i, m in enumerate(state.markets):
            book = venue.book(m.yes)
            state.update(i, book)  # resync from the venue's truth
            if book is None or not book.asks:
                return None
            quotes.append(LegQuote(state.venue, m.yes, m, book.asks, venue.fee))
        state.watch.priced([q.asks for q in quotes], caps or self.sizer.caps(), False)
        plan = plan_equal_shares(quotes, payout=ONE, min_edge=self.config.min_edge,
                                 max_levels=self.config.max_levels, limits=self.sizer.limits())
        if plan is None:
            return None
        state.watch.offered = True
        return opportunity_from_plan(self.id, "multi_outcome", next(self._nonce), quotes, plan)
