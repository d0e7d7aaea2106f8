"""What each component kind must provide, and the registry plugins add them to.

Hooks (``hookspecs.py``) only *register* classes. The hot path calls async methods on
the component instances built from a pipeline file; their shapes are the Protocols here.
Every component class carries ``type`` (its name in pipeline files) and ``Config`` (a
frozen attrs class for its TOML table) and is built with ``from_config``.
"""

from __future__ import annotations

import difflib
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, runtime_checkable

import attrs

from .model import (
    Book,
    Leg,
    Market,
    Opportunity,
    OrderAck,
    OrderRequest,
    Pr3dictError,
    TimeInForce,
    Trade,
)

if TYPE_CHECKING:
    from opentelemetry.trace import Tracer

    from .metrics import TradeRecord

# --------------------------------------------------------------------------- venue errors


class VenueError(Pr3dictError):
    """Base of every error a venue connector raises. ``retryable`` marks idempotent-safe retries."""

    retryable: ClassVar[bool] = False


class OrderRejected(VenueError):
    """The venue definitively refused the order: nothing rests, nothing filled."""


class InsufficientBalance(OrderRejected):
    """Refused for lack of collateral or shares."""


class AuthenticationFailed(OrderRejected):
    """The venue refused our credentials (HTTP 401/403): nothing happened, and nothing will
    until an operator fixes them. The engine stops entries and ends the run non-zero."""


class RateLimited(VenueError):
    """Refused for rate; safe to retry after a pause."""

    retryable = True


class VenueUnavailable(VenueError):
    """The venue could not be reached before the request was sent: nothing happened."""

    retryable = True


class AmbiguousOutcome(VenueError):
    """The request may or may not have taken effect (timeout after send, 5xx, malformed reply).

    The leg becomes UNRESOLVED and is reconciled by querying the venue; never assume failure.
    """


class MalformedReply(AmbiguousOutcome):
    """The venue answered, but not with something we can trust: unknown."""


class UnknownOrder(VenueError):
    """The venue has no order with that client order id."""


class UndeclaredReference(Pr3dictError):
    """``lookup`` of a component that is not built: the option naming it was not declared
    with ``pr3dict_core.config.ref`` (so the loader could neither check it nor order it)."""


# --------------------------------------------------------------------------- build context


@attrs.frozen
class BuildContext:
    """What a component may use while it is built from its config."""

    run_id: str
    base_dir: Path  # relative paths in a pipeline file are relative to this
    resolve_secret: Callable[[Any], str]
    tracer: Tracer
    mode: str = "paper"
    built: Mapping[str, Mapping[str, Any]] = attrs.field(factory=dict)  # kind -> id -> component
    # The run will keep a journal (validate builds without). It is opened once every
    # component is built (a bad option creates nothing); capital books bind to it then.
    keeps_journal: bool = False
    books: list[Any] = attrs.field(factory=list)

    def lookup(self, kind: str, id: str) -> Any:
        """An already-built component (venues, rpc, ... are built before what refers to them)."""
        try:
            return self.built[kind][id]
        except KeyError:
            label = KINDS.get(kind, kind)
            raise UndeclaredReference(
                f"no {label} with id {id!r} has been built; an option naming another "
                f"component must be declared with pr3dict_core.config.ref({kind!r})") from None

    def capital_book(self, name: str, bankroll: Decimal) -> Any:
        """The capital book ``name``: kept in the journal (shared by every engine of a
        PostgreSQL journal), or in memory when the run has no journal."""
        from .capital import JournalBook, LocalBook

        if not self.keeps_journal:
            return LocalBook(name, bankroll)
        book = JournalBook(name, bankroll)
        self.books.append(book)
        return book

    def path(self, value: str) -> Path:
        """An input file named in the pipeline: relative to the pipeline file."""
        p = Path(value.replace("{run_id}", self.run_id))
        return p if p.is_absolute() else self.base_dir / p

    def output_path(self, value: str) -> Path:
        """A file the run writes: relative to the working directory, ``{run_id}`` filled in."""
        return Path(value.replace("{run_id}", self.run_id)).absolute()


# --------------------------------------------------------------------------- protocols


@runtime_checkable
class Venue(Protocol):
    """A place to trade: books in, orders out. Prices are USDC per share as Decimal."""

    type: ClassVar[str]
    id: str

    async def start(self) -> None:
        """Connect, load markets and first books."""

    async def close(self) -> None:
        """Release connections. Trades in flight finished (and cancelled what rested) before
        this is called; a venue with a dead-man switch may also cancel all on close."""

    def markets(self) -> Sequence[Market]:
        """Every binary market this venue trades in this run."""

    def book(self, instrument: str) -> Book | None:
        """The latest book of ``instrument``, or None if unknown."""

    async def poll_books(self) -> Sequence[Book]:
        """Books that changed since the last call (the paper venue advances its clock here).

        A streaming venue may wait briefly (its own ``poll_wait_ms``) for a change when none
        is pending, so the engine loop does not spin; it must return (possibly empty) within
        that bound.
        """

    async def place_order(self, request: OrderRequest) -> OrderAck:
        """Send one order. Raises a ``VenueError``; AmbiguousOutcome when the outcome is unknown."""

    async def cancel_order(self, client_order_id: str) -> OrderAck:
        """Cancel what rests of an order; returns its final view (fills included).
        Raises UnknownOrder if the venue never had it."""

    async def get_order(self, client_order_id: str) -> OrderAck:
        """The venue's truth about an order (every fill so far); raises UnknownOrder if it
        never arrived. Must work for any order of the account, including one placed by an
        earlier process (see ``adopt_order``), never only from the connector's memory."""

    def fee(self, instrument: str, price: Decimal, size: Decimal) -> Decimal:
        """The taker fee in USDC for ``size`` shares at ``price``."""

    def positions(self) -> Mapping[str, Decimal]:
        """Shares held per instrument, as the venue sees them."""

    # Optional methods a venue may define (the engine and plugins look them up):
    #     def prepare_order(self, request: OrderRequest) -> str
    #         Build the order before its intent is journaled; returns the venue's id for
    #         it when that is known before sending (Polymarket: the order's EIP-712 hash),
    #         else "". Raises OrderRejected for an order the venue's rules refuse (tick,
    #         minimum size): it is then never sent.
    #     def sign_order(self, request: OrderRequest) -> None
    #         Sign a prepared order (deterministic: the id does not change); the engine
    #         calls it while the intent commits, before place_order / place_orders.
    #     async def place_orders(self, requests: Sequence[OrderRequest])
    #             -> list[OrderAck | VenueError]
    #         One batch request, one result per order in order; used for several entry
    #         legs of a trade to this venue ([execution] batch_orders).
    #     A connector calls ``pr3dict_core.execution.on_wire()`` when an order's request
    #     has been written to the socket (venuekit's HTTP client does); else the engine
    #     stamps ``decision -> wire`` when place_order returns.
    #     def adopt_order(self, request: OrderRequest, venue_order_id: str) -> None
    #         Learn of an order from the journal (placed by an earlier process, or whose
    #         reply was lost) so get_order/cancel_order can find it at the venue.
    #     def subscribe_orders(self, callback: Callable[[OrderAck], None]) -> None
    #         Called once after start(); the venue then calls ``callback(ack)`` with the
    #         full current view of an order (all fills so far) whenever one of this
    #         account's orders changes. Venues without it are polled with get_order().
    #     def last_heartbeat(self) -> float | None
    #         time.monotonic() of the last sign of life from the venue (a book, a ping);
    #         the `connectivity` gate refuses trades when it is too old or None.
    #     def events(self) -> Sequence[OutcomeSet]
    #         Sets of mutually exclusive markets (negative-risk events) for `multi_outcome`.
    #     def exhausted(self) -> bool
    #         A finite source of books (a `replay` venue) has delivered all of them;
    #         `pr3dict run` stops once every venue that defines it is exhausted.


@runtime_checkable
class Detector(Protocol):
    """Turns changed books into opportunities; re-evaluates only what changed."""

    type: ClassVar[str]
    id: str
    venue_ids: tuple[str, ...]

    def bind(self, venues: Mapping[str, Venue]) -> None:
        """Called once after venues start, to learn their markets."""

    def detect(self, changed: Sequence[Book]) -> Iterable[Opportunity]:
        """Opportunities among the markets whose books are in ``changed``."""

    # Optional: ``def hedge_sets(self) -> list[tuple[tuple[str, str], ...]]``, the sets of
    # (venue id, instrument) this detector buys that together pay 1 at resolution beyond a
    # market's own YES + NO (cross-venue pairs, outcome sets), so the end-of-run report
    # counts them as hedged.


@attrs.frozen
class GateDecision:
    approved: bool
    reason: str = ""

    @classmethod
    def approve(cls) -> GateDecision:
        return _APPROVED

    @classmethod
    def reject(cls, reason: str) -> GateDecision:
        return cls(False, reason)


_APPROVED = GateDecision(True)


@runtime_checkable
class RiskGate(Protocol):
    """Approves or rejects a trade before any order; may reserve resources for it."""

    type: ClassVar[str]
    id: str

    def evaluate(self, trade: Trade) -> GateDecision | Awaitable[GateDecision]:
        """Approve (and reserve) or reject with a reason. Runs in pipeline-file order.
        May be ``async`` (the ``capital`` gate awaits its book, which may be shared by
        several engines); a plain function costs less."""

    def on_trade_finished(self, trade: Trade) -> None:
        """Told of every trade this gate approved, once final: release, update heat, streaks."""


@runtime_checkable
class ExecutionStrategy(Protocol):
    """Decides how each leg is priced and chased within the deadline."""

    type: ClassVar[str]

    async def execute_leg(self, leg: Leg, ctx: LegContext) -> None:
        """Drive ``leg`` to a final state (or UNRESOLVED) with ``ctx.submit``/``ctx.cancel``."""


class LegContext(Protocol):
    """What the engine gives a strategy for one leg. The strategy says *what* to send
    (price, size, time in force); the engine allocates the client order id, builds and signs
    the request, journals the intent, sends it, and applies the venue's answer to the leg (a
    venue error lands on the leg, it is not raised). ``wait`` returns when the leg changed
    (a pushed or polled fill) or at ``until``; ``resting`` says whether an order of the leg
    may rest."""

    deadline: float  # seconds on the engine's clock (``now()``)
    max_slippage_ticks: int

    def now(self) -> float: ...  # the engine's clock; a test may inject one

    @property
    def resting(self) -> bool: ...

    @property
    def residual(self) -> Decimal: ...  # one size step: smaller remainders cannot trade

    def book(self) -> Book | None: ...

    async def submit(self, price: Decimal, size: Decimal,
                     time_in_force: TimeInForce) -> OrderAck | None: ...

    async def cancel(self) -> OrderAck | None: ...

    async def refresh(self) -> OrderAck | None: ...

    async def wait(self, until: float) -> None: ...


@runtime_checkable
class MetricsSink(Protocol):
    """Receives one record per finished trade, and the run's summary at the end."""

    type: ClassVar[str]
    id: str

    def record(self, record: TradeRecord) -> None:
        """Called for every final trade; must be cheap (buffer, do I/O later)."""

    async def close(self, summary: Mapping[str, Any]) -> None:
        """Flush and release; ``summary`` is the run's statistics."""


@runtime_checkable
class RpcProvider(Protocol):
    """A JSON-RPC endpoint pool (Polygon)."""

    type: ClassVar[str]
    id: str

    async def start(self) -> None: ...

    async def request(self, method: str, params: Sequence[Any]) -> Any: ...

    async def close(self) -> None: ...


@runtime_checkable
class Settler(Protocol):
    """Settles committed trades after the fact (e.g. merges YES+NO into collateral on-chain)."""

    type: ClassVar[str]
    id: str

    async def start(self) -> None: ...

    async def settle(self, trade: Trade) -> None: ...

    async def close(self) -> None: ...


# --------------------------------------------------------------------------- registry

KINDS: dict[str, str] = {
    # section in a pipeline file -> human name
    "venues": "venue",
    "detectors": "detector",
    "strategies": "execution strategy",
    "gates": "risk gate",
    "sinks": "metrics sink",
    "rpc": "RPC provider",
    "settlers": "settler",
}


class DuplicateComponent(Pr3dictError):
    pass


@attrs.define(eq=False)
class Registration:
    """A registered component class; for a plugin known from the entry-point index only,
    ``cls`` imports the plugin the first time it is asked for."""

    kind: str
    name: str
    plugin: str
    # A class with `type`, `Config` and `from_config`; None until a deferred plugin is imported.
    _cls: Any = attrs.field(default=None, alias="cls")
    _load: Callable[[], Any] | None = attrs.field(default=None, alias="load", repr=False)

    @property
    def cls(self) -> Any:
        if self._cls is None:
            assert self._load is not None
            self._cls = self._load()
        return self._cls

    @property
    def loaded(self) -> bool:
        return self._cls is not None

    def describe(self) -> str:
        return (f"plugin {self.plugin!r} ({self._cls.__qualname__})" if self.loaded
                else f"plugin {self.plugin!r}")


@attrs.define
class ComponentRegistry:
    """Every registered component class, by kind and type name, with the plugin that added it."""

    entries: dict[str, dict[str, Registration]] = attrs.field(
        factory=lambda: {kind: {} for kind in KINDS}
    )

    def add(self, kind: str, cls: type, plugin: str) -> None:
        name = getattr(cls, "type", None)
        if not isinstance(name, str) or not name:
            raise TypeError(f"{cls.__qualname__} (plugin {plugin}) has no `type` name")
        if not attrs.has(getattr(cls, "Config", None) or object):
            raise TypeError(f"{cls.__qualname__} (plugin {plugin}) has no attrs `Config` class")
        self._put(Registration(kind, name, plugin, cls=cls))

    def add_deferred(self, kind: str, name: str, plugin: str, load: Callable[[], Any]) -> None:
        """A component known by name (the entry-point index); ``load`` imports its class."""
        self._put(Registration(kind, name, plugin, load=load))

    def _put(self, reg: Registration) -> None:
        existing = self.entries[reg.kind].get(reg.name)
        if existing is not None:
            raise DuplicateComponent(
                f"{KINDS[reg.kind]} type {reg.name!r} is registered twice: by "
                f"{existing.describe()} and by {reg.describe()}")
        self.entries[reg.kind][reg.name] = reg

    def get(self, kind: str, name: str) -> Registration | None:
        return self.entries[kind].get(name)

    def names(self, kind: str) -> list[str]:
        return sorted(self.entries[kind])

    def suggest(self, kind: str, name: str) -> str:
        close = difflib.get_close_matches(name, self.names(kind), n=3, cutoff=0.5)
        choices = close or self.names(kind)
        label = "did you mean" if close else "registered"
        return f"{label}: {', '.join(choices) or 'none'}"

    def by_plugin(self) -> dict[str, list[Registration]]:
        out: dict[str, list[Registration]] = {}
        for kind in self.entries.values():
            for reg in kind.values():
                out.setdefault(reg.plugin, []).append(reg)
        return out


@attrs.frozen
class Registrar:
    """Handed to a registration hook: adds component classes of one kind for one plugin."""

    _registry: ComponentRegistry
    _kind: str
    _plugin: str

    def add(self, *classes: type) -> None:
        for cls in classes:
            self._registry.add(self._kind, cls, self._plugin)
