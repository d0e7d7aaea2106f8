"""``cross_venue``: the same event on two venues, bought on opposite sides when the two asks
sum below 1 after both venues' fees.

Which market on one venue is "the same event" as which on the other is not something a
program can decide: resolution sources, criteria and cut-off times differ in small print.
So pairs come from a **mapping file** a person writes, recording for each pair

- ``markets``: one market id per venue (``{ poly = "...", kalshi = "..." }``, keys are the
  pipeline's venue ids);
- ``equivalent``: the two settle identically (checked by a person; default ``false``);
- ``orientation``: ``"same"`` when YES on one is YES on the other, ``"inverted"`` when YES
  on one is NO on the other (required: there is no safe default).

A pair not marked equivalent is never traded. An inverted pair is traded as what it is: the
hedge of YES on one venue is YES on the other (its NO), never NO as for a "same" pair. The
file is checked strictly when the pipeline is built: unknown venues or markets, a missing
orientation, a market paired twice, or orientations that contradict each other around a
cycle are each reported as ``FILE: pairs[i]...: message`` naming the pair.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal

import attrs
from attrs import frozen

from pr3dict_core.components import BuildContext, Venue
from pr3dict_core.config import (
    ConfigError,
    ConfigProblem,
    check_input_file,
    ref,
    structure,
    tomllib,
)
from pr3dict_core.model import ONE, Book, Level, Market, Opportunity

from .sizing import (
    LegQuote,
    Sizer,
    SizingOptions,
    Watch,
    opportunity_from_plan,
    plan_equal_shares,
)

log = logging.getLogger("pr3dict.detectors.cross_venue")

# --------------------------------------------------------------------------- mapping files


@frozen(kw_only=True)
class PairSpec:
    id: str
    markets: dict[str, str]  # venue id -> market id on that venue
    orientation: Literal["same", "inverted"]
    equivalent: bool = False
    evidence: str = ""  # why a person judged them equivalent (resolution source, rules)


@frozen(kw_only=True)
class MappingFile:
    pairs: tuple[PairSpec, ...] = ()


@frozen
class Pair:
    """A checked pair: ``a`` on ``venue_a``, ``b`` on ``venue_b``."""

    id: str
    venue_a: str
    a: str
    venue_b: str
    b: str
    inverted: bool
    equivalent: bool
    index: int  # position in the file


def _pair_label(raw: Any, index: int) -> str:
    try:
        pair_id = raw["pairs"][index]["id"]
    except (KeyError, IndexError, TypeError):
        return ""
    return f" (pair {pair_id!r})" if isinstance(pair_id, str) else ""


def load_mapping(path: Path, venue_ids: Sequence[str],
                 markets: Mapping[str, Iterable[str]] | None = None) -> list[Pair]:
    """Read and check a mapping file; raises ConfigError naming the file and every bad entry.

    ``markets`` (venue id -> market ids), when given, also checks that every market exists.
    """
    file = str(path)
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError([ConfigProblem(file, "", "no such mapping file")]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([ConfigProblem(file, "", f"invalid TOML: {exc}")]) from None
    spec, errors = structure(raw, MappingFile, "")
    if errors:
        problems = []
        for p, m in errors:
            label = ""
            if p.startswith("pairs["):
                label = _pair_label(raw, int(p[6:p.index("]")]))
            problems.append(ConfigProblem(file, p, m + label))
        raise ConfigError(problems)
    problems = [ConfigProblem(file, p, m) for p, m in check_pairs(spec.pairs, venue_ids, markets)]
    if problems:
        raise ConfigError(problems)
    if not spec.pairs:
        raise ConfigError([ConfigProblem(file, "pairs", "at least one pair is required")])
    return [_as_pair(i, p, venue_ids) for i, p in enumerate(spec.pairs)]


def _as_pair(index: int, spec: PairSpec, venue_ids: Sequence[str]) -> Pair:
    # Order the two sides as the detector's `venues` list does: a first, b second.
    (va, a), (vb, b) = sorted(spec.markets.items(), key=lambda kv: venue_ids.index(kv[0]))
    return Pair(spec.id, va, a, vb, b, spec.orientation == "inverted", spec.equivalent, index)


class _Parity:
    """Union-find with parity: is market X's YES the same bet as market Y's YES (0) or NO (1)?"""

    def __init__(self) -> None:
        self.parent: dict[Any, Any] = {}
        self.parity: dict[Any, int] = {}

    def find(self, x: Any) -> tuple[Any, int]:
        if x not in self.parent:
            self.parent[x], self.parity[x] = x, 0
            return x, 0
        path = []
        while self.parent[x] != x:
            path.append(x)
            x = self.parent[x]
        root, acc = x, 0
        for node in reversed(path):  # compress: parity to the root
            acc ^= self.parity[node]
            self.parent[node], self.parity[node] = root, acc
        return root, self.parity[path[0]] if path else 0

    def union(self, x: Any, y: Any, parity: int) -> bool:
        """Record parity(x, y); False if it contradicts what is already known."""
        rx, px = self.find(x)
        ry, py = self.find(y)
        if rx == ry:
            return (px ^ py) == parity
        self.parent[ry], self.parity[ry] = rx, px ^ py ^ parity
        return True


def check_pairs(pairs: Sequence[PairSpec], venue_ids: Sequence[str],
                markets: Mapping[str, Iterable[str]] | None = None) -> list[tuple[str, str]]:
    """Problems as (dotted path, message): every one, each naming its pair."""
    out: list[tuple[str, str]] = []
    known = {v: set(ms) for v, ms in (markets or {}).items()}
    ids: dict[str, int] = {}
    partner: dict[tuple[str, str, str], tuple[int, str]] = {}  # (venue, market, other venue)
    parity = _Parity()
    for i, pair in enumerate(pairs):
        where = f"pairs[{i}]"
        name = f"pair {pair.id!r}"
        if pair.id in ids:
            out.append((f"{where}.id", f"{name}: id already used by pairs[{ids[pair.id]}]"))
        ids.setdefault(pair.id, i)
        if len(pair.markets) != 2:
            out.append((f"{where}.markets", f"{name}: a pair names exactly two markets, one "
                        f"per venue; got {len(pair.markets)}"))
            continue
        ok = True
        for vid, mid in pair.markets.items():
            if vid not in venue_ids:
                out.append((f"{where}.markets.{vid}", f"{name}: venue {vid!r} is not one of "
                            f"this detector's venues ({', '.join(venue_ids)})"))
                ok = False
            elif vid in known and mid not in known[vid]:
                out.append((f"{where}.markets.{vid}", f"{name}: no market {mid!r} on venue "
                            f"{vid!r}"))
                ok = False
        if not ok:
            continue
        (va, a), (vb, b) = pair.markets.items()
        for (v, m), other in (((va, a), vb), ((vb, b), va)):
            seen = partner.get((v, m, other))
            if seen is not None:
                out.append((f"{where}.markets.{v}", f"{name}: market {m!r} on {v!r} is "
                            f"already paired with a market on {other!r} by pairs[{seen[0]}] "
                            f"({seen[1]!r}); one market, one counterpart"))
                ok = False
            else:
                partner[(v, m, other)] = (i, pair.id)
        if ok and pair.equivalent and not parity.union(
                (va, a), (vb, b), 1 if pair.orientation == "inverted" else 0):
            out.append((f"{where}.orientation", f"{name}: orientation {pair.orientation!r} "
                        "contradicts the other pairs linking these markets"))
    return out


# --------------------------------------------------------------------------- detector


class _PairState:
    __slots__ = ("directions", "market_a", "market_b", "pair")

    def __init__(self, pair: Pair, market_a: Market, market_b: Market):
        self.pair = pair
        self.market_a = market_a
        self.market_b = market_b
        # The two hedges: (instrument on a, instrument on b) that pay 1 together, whatever
        # happens. "same": YES_a + NO_b and NO_a + YES_b. "inverted": YES_a + YES_b, NO_a + NO_b.
        if pair.inverted:
            self.directions = ((market_a.yes, market_b.yes), (market_a.no, market_b.no))
        else:
            self.directions = ((market_a.yes, market_b.no), (market_a.no, market_b.yes))


class _Direction:
    """One hedge of a pair, with what pricing it needs at hand (it is priced for every
    change of either of its two books: the detector's hot path)."""

    __slots__ = ("book_a", "book_b", "inst_a", "inst_b", "state", "venue_a", "venue_b", "watch")

    def __init__(self, state: _PairState, index: int, venue_a: Venue, venue_b: Venue):
        self.state = state
        self.watch = Watch(2)  # what it was last priced at
        self.inst_a, self.inst_b = state.directions[index]
        self.venue_a, self.venue_b = venue_a, venue_b
        self.book_a, self.book_b = venue_a.book, venue_b.book


class CrossVenue:
    """Buys one outcome on one venue and its complement on the other, by a checked mapping."""

    type: ClassVar[str] = "cross_venue"

    @frozen(kw_only=True)
    class Config(SizingOptions):
        venues: tuple[str, ...] = ref("venues", validator=attrs.validators.min_len(2))
        mapping: str  # path of the mapping file, relative to the pipeline file

    def __init__(self, id: str, config: Config, pairs: Sequence[Pair], *,
                 mapping_path: Path | None = None, built: Any = None):
        self.id = id
        self.config = config
        self.venue_ids = tuple(config.venues)
        self.pairs = list(pairs)
        self.mapping_path = mapping_path
        self.sizer = Sizer(id, config)
        self._built = built
        self._venues: Mapping[str, Venue] = {}
        # venue -> instrument -> the hedges that price its book (and its leg in each)
        self._by_instrument: dict[str, dict[str, list[tuple[_Direction, int]]]] = {}
        self.states: list[_PairState] = []
        self.refused: dict[str, str] = {}  # pair id -> why it is never traded
        self._nonce = itertools.count()

    @classmethod
    def from_config(cls, id: str, config: Config, ctx: BuildContext) -> CrossVenue:
        path = ctx.path(config.mapping)
        check_input_file(path, "mapping", "mapping file")
        markets = {}
        for vid in config.venues:  # venues are built first; paper ones know their markets
            venue = ctx.built.get("venues", {}).get(vid)
            listed = [m.market_id for m in venue.markets()] if venue is not None else []
            if listed:
                markets[vid] = listed
        pairs = load_mapping(path, config.venues, markets)
        return cls(id, config, pairs, mapping_path=path, built=ctx.built)

    def bind(self, venues: Mapping[str, Venue]) -> None:
        self._venues = venues
        self.sizer.bind_gate(self._built)
        by_market = {vid: {m.market_id: m for m in v.markets()} for vid, v in venues.items()}
        problems = []
        for pair in self.pairs:
            for vid, mid in ((pair.venue_a, pair.a), (pair.venue_b, pair.b)):
                if mid not in by_market.get(vid, {}):
                    problems.append(ConfigProblem(
                        str(self.mapping_path or "mapping"), f"pairs[{pair.index}].markets.{vid}",
                        f"pair {pair.id!r}: no market {mid!r} on venue {vid!r}"))
        if problems:
            raise ConfigError(problems)
        for pair in self.pairs:
            if not pair.equivalent:
                self.refused[pair.id] = "not marked equivalent: never traded"
                log.info("detectors.%s: pair %s is not marked equivalent: never traded",
                         self.id, pair.id)
                continue
            state = _PairState(pair, by_market[pair.venue_a][pair.a],
                               by_market[pair.venue_b][pair.b])
            self.states.append(state)
            for i in range(2):
                direction = _Direction(state, i, venues[pair.venue_a], venues[pair.venue_b])
                for leg, (vid, inst) in enumerate(((pair.venue_a, direction.inst_a),
                                                   (pair.venue_b, direction.inst_b))):
                    self._by_instrument.setdefault(vid, {}).setdefault(inst, []).append(
                        (direction, leg))

    def hedge_sets(self) -> list[tuple[tuple[str, str], ...]]:
        """(venue, instrument) sets that together pay 1 at resolution: both directions of
        every traded pair (for the end-of-run positions report)."""
        return [((s.pair.venue_a, a), (s.pair.venue_b, b)) for s in self.states
                for a, b in s.directions]

    def detect(self, changed: Sequence[Book]) -> Iterable[Opportunity]:
        """Price each hedge one of whose books changed, once, if its asks or the limits are
        new (``sizing.Watch``), in the order the books name them: a cheap reject on the
        best asks, then the walk."""
        index, caps = self._by_instrument, self.sizer.caps()
        due: dict[_Direction, None] = {}
        for book in changed:
            by_venue = index.get(book.venue)
            entries = by_venue.get(book.instrument) if by_venue is not None else None
            if entries:
                asks = book.asks
                for direction, leg in entries:
                    if direction.watch.moved(leg, asks, caps):
                        due[direction] = None
        bar = ONE - self.config.min_edge
        for d in due:
            book_a, book_b = d.book_a(d.inst_a), d.book_b(d.inst_b)
            asks_a, asks_b = book_a.asks if book_a else (), book_b.asks if book_b else ()
            rejected = not asks_a or not asks_b or \
                asks_a[0].price + asks_b[0].price > bar  # fees only make it worse
            d.watch.priced((asks_a, asks_b), caps, rejected)
            if rejected:
                continue
            opp = self._price(d, asks_a, asks_b)
            if opp is not None:
                d.watch.offered = True
                yield opp

    def _price(self, d: _Direction, asks_a: Sequence[Level], asks_b: Sequence[Level]
               ) -> Opportunity | None:
        state, pair = d.state, d.state.pair
        quotes = (LegQuote(pair.venue_a, d.inst_a, state.market_a, asks_a, d.venue_a.fee),
                  LegQuote(pair.venue_b, d.inst_b, state.market_b, asks_b, d.venue_b.fee))
        plan = plan_equal_shares(quotes, payout=ONE, min_edge=self.config.min_edge,
                                 max_levels=self.config.max_levels, limits=self.sizer.limits())
        if plan is None:
            return None
        return opportunity_from_plan(self.id, "cross_venue", next(self._nonce), quotes, plan)
