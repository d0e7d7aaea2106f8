"""The engine: build components, then loop detect -> preflight -> execute -> finalize/rollback.

``Engine`` is also the Python API for people who script rather than write TOML::

    async with Engine.from_file("pipelines/complement-paper.toml") as engine:
        trades = await engine.scan_and_execute()
        print(engine.statistics().table())
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import inspect
import itertools
import logging
import secrets
import socket
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

import attrs
import pluggy
from opentelemetry import trace
from opentelemetry.trace import Status, StatusCode

from . import telemetry as tm
from .clock import loop_factory, replayed_clock
from .components import (
    KINDS,
    BuildContext,
    ComponentRegistry,
    Detector,
    ExecutionStrategy,
    GateDecision,
    MetricsSink,
    RiskGate,
    Settler,
    UndeclaredReference,
    Venue,
)
from .config import (
    KIND_ORDER,
    ConfigError,
    ConfigProblem,
    ExecutionSection,
    OptionError,
    PipelineConfig,
    SecretRef,
    load_pipeline,
    option_holding,
)
from .defaults import SecretNotFound
from .execution import TradeExecutor
from .journal import Journal, JournalError
from .metrics import EngineState, RunStatistics, RunSummary, TradeRecord
from .model import (
    ZERO,
    Book,
    LegSpec,
    LegState,
    Opportunity,
    Pr3dictError,
    Trade,
    TradeState,
    opportunity_id,
)
from .plugins import collect_components, make_plugin_manager
from .stores import sqlite_path

log = logging.getLogger("pr3dict.engine")


class VenueFailure(Pr3dictError):
    """A venue could not deliver books; the run stops (trades in flight finish first)."""


BUILD_ORDER = KIND_ORDER


def build_components(config: PipelineConfig, registry: ComponentRegistry,
                     pm: pluggy.PluginManager, *, kinds: Sequence[str] = BUILD_ORDER,
                     run_id: str | None = None,
                     tracer_provider: trace.TracerProvider | None = None,
                     keeps_journal: bool = False,
                     ) -> tuple[dict[str, dict[str, Any]], BuildContext]:
    """Build the components of ``kinds`` (in dependency order) from a validated config.

    A secret that cannot be resolved is a configuration problem naming the component.
    """
    run_id = run_id or new_run_id()
    built: dict[str, dict[str, Any]] = {kind: {} for kind in KINDS}

    building: list[Any] = [None]  # the options of the component being built

    def resolve_secret(ref: SecretRef) -> str:
        original = ref
        try:
            value = resolve_secret_ref(config, pm, ref)
        except SecretNotFound as exc:  # reported at the option that holds the reference
            if building[0] is None:
                raise
            raise OptionError(option_holding(building[0], original), str(exc)) from None
        return value

    ctx = BuildContext(run_id=run_id, base_dir=config.base_dir,
                       resolve_secret=resolve_secret, tracer=tm.get_tracer(tracer_provider),
                       mode=str(config.pipeline.mode), built=built,
                       keeps_journal=keeps_journal)
    # What a component refers to is built before it (the loader sorted the references).
    order = config.build_order or tuple((k, c) for k in BUILD_ORDER for c in config.section(k))
    for kind, cid in order:
        if kind not in kinds or cid not in config.section(kind):
            continue  # not asked for, or left out of this variant of the config
        spec = config.section(kind)[cid]
        reg = registry.get(kind, spec.type)
        assert reg is not None
        building[0] = spec.options
        try:
            built[kind][cid] = reg.cls.from_config(cid, spec.options, ctx)
        except (OptionError, UndeclaredReference) as exc:
            key = getattr(exc, "key", "")
            raise ConfigError([ConfigProblem(
                str(config.file), f"{kind}.{cid}.{key}" if key else f"{kind}.{cid}",
                exc.message if isinstance(exc, OptionError) else str(exc))]) from None
        finally:
            building[0] = None
    for kind in kinds:  # gates run, and everything is listed, in file order
        built[kind] = {cid: built[kind][cid] for cid in config.section(kind) if cid in built[kind]}
    return built, ctx


def new_run_id() -> str:
    return time.strftime("%Y%m%dT%H%M%S") + "-" + secrets.token_hex(3)


def resolve_secret_ref(config: PipelineConfig, pm: pluggy.PluginManager,
                       ref: SecretRef) -> str:
    """The secret ``ref`` points to, through the plugins; a relative file is relative to
    the pipeline file, like every input a pipeline names. Raises ``SecretNotFound``."""
    if ref.file is not None and not Path(ref.file).is_absolute():
        ref = SecretRef(file=str(config.base_dir / ref.file))
    value = pm.hook.pr3dict_resolve_secret(ref=ref)
    if value is None:
        raise SecretNotFound(f"no plugin could resolve secret {ref!r}")
    return str(value)


def default_engine_id(pipeline: str) -> str:
    """One engine per pipeline and host unless told otherwise (``--engine-id``)."""
    return f"{socket.gethostname()}/{pipeline}"


def open_journal(config: PipelineConfig, pm: pluggy.PluginManager, *, run_id: str = "",
                 engine_id: str = "", read_only: bool = False) -> Journal | None:
    """The pipeline's ``[journal]``, or None for ``url = ""``. A SQLite journal at the
    default path (named after the pipeline) belongs to the first pipeline file that used
    it: two files with one name never share it by accident."""
    section = config.journal
    url = section.resolved_url(config.pipeline.name)
    if not url:
        return None
    password = None
    if section.password is not None:
        try:
            password = resolve_secret_ref(config, pm, section.password)
        except SecretNotFound as exc:
            raise ConfigError([ConfigProblem(str(config.file), "journal.password",
                                             str(exc))]) from None
    owner = config.file if "{pipeline}" in section.url and not section.shared else None
    target = url
    if not section.shared and sqlite_path(url) != ":memory:":  # the working directory's
        target = str(Path(sqlite_path(url)).absolute())
    return Journal(target, run_id, engine_id=engine_id, password=password,
                   pipeline_file=None if read_only else owner, lease_ms=section.lease_ms,
                   read_only=read_only)


@attrs.frozen
class Halt:
    """Why new entries are refused: a cause (``unresolved``, ``exposure``, ``kill``,
    ``auth``, ``journal``, ``recovery``), what it is about (a trade id, a venue id), and
    a sentence for people. Each halt is lifted only by what set it."""

    cause: str
    subject: str
    reason: str


# Halts that outlive the process: restored from the journal before any entry, and their
# trades worked again (exposure: complete or unwind; break: re-hedge a reopened trade).
PERSISTENT_HALTS = frozenset({"exposure", "break"})


class Engine:
    """A built pipeline: venues, detectors, gates (in file order), one strategy, sinks."""

    def __init__(
        self,
        *,
        venues: Mapping[str, Venue],
        detectors: Sequence[Detector],
        strategy: ExecutionStrategy,
        gates: Sequence[RiskGate] = (),
        sinks: Sequence[MetricsSink] = (),
        settlers: Sequence[Settler] = (),
        rpc: Mapping[str, Any] | None = None,
        execution: ExecutionSection | None = None,
        tracer_provider: trace.TracerProvider | None = None,
        pipeline_name: str = "adhoc",
        run_id: str | None = None,
        pm: pluggy.PluginManager | None = None,
        config: PipelineConfig | None = None,
        kill_switch_file: Path | None = None,
        journal: Journal | None = None,
        concurrent_cycles: bool = False,
        keep_trades: int = 1_000,
        clock: Callable[[], float] | None = None,
        engine_id: str | None = None,
    ):
        self.venues = dict(venues)
        self.detectors = list(detectors)
        self.gates = list(gates)
        self.sinks = list(sinks)
        self.settlers = list(settlers)
        self.rpc = dict(rpc or {})
        self.strategy = strategy
        self.execution = execution or ExecutionSection(strategy=strategy.type)
        self.tracer = tm.get_tracer(tracer_provider)
        self.pipeline_name = pipeline_name
        self.run_id = run_id or new_run_id()
        self.pm = pm
        self.config = config
        self.kill_switch_file = kill_switch_file
        self.journal = journal
        # Who this engine is among those sharing a journal (its trades, halts, leases).
        self.engine_id = engine_id or (journal.engine_id if journal is not None else "") \
            or default_engine_id(pipeline_name)
        if journal is not None and not journal.engine_id:
            journal.engine_id = self.engine_id
        self.concurrent_cycles = concurrent_cycles
        # Wall time unless injected, or replayed time on a replay's loop (``start``).
        self._clock_injected = clock is not None
        self.clock = clock or time.perf_counter
        self._replayed = False  # on a replay's loop (``start``)
        self.recovered: list[Trade] = []
        self.stats = RunStatistics()
        # The most recent trades, for the Python API and tests; totals live in `stats`.
        self.trades: collections.deque[Trade] = collections.deque(maxlen=keep_trades)
        self._unresolved: dict[str, Trade] = {}
        self._exposed: dict[str, Trade] = {}  # trades whose unhedged shares are being worked
        self._dirty: set[str] = set()  # finished trades whose fills changed since
        self._breaking: set[str] = set()  # finished trades being re-hedged
        self._leased: set[str] = set()  # trades holding instrument leases (shared journal)
        # Why new entries are refused (fail closed), by (cause, subject); trading while empty.
        self.halts: dict[tuple[str, str], Halt] = {}
        self.fatal = ""  # set when the run must end non-zero (refused credentials)
        self._executor: TradeExecutor | None = None
        self._in_flight: set[tuple[str, str]] = set()
        self._tasks: set[asyncio.Task[Trade]] = set()
        self._background: set[asyncio.Task[Any]] = set()  # resolvers, workers, settlement
        self._stack: contextlib.AsyncExitStack | None = None
        self._semaphore = asyncio.Semaphore(self.execution.max_concurrent_trades)
        self._trade_seq = itertools.count(1)
        self._started = False
        self._stopping = False
        self._owned_provider: Any = None  # a provider from_file made: shut down at close
        self._stats_pushed = float("-inf")

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_file(cls, path: str | Path, *, pm: pluggy.PluginManager | None = None,
                  tracer_provider: trace.TracerProvider | None = None,
                  run_id: str | None = None, engine_id: str | None = None) -> Engine:
        """Load and build a pipeline file. Without ``tracer_provider`` the file's
        ``[telemetry]`` table is honoured as ``pr3dict run`` does (the engine flushes and
        shuts its provider down at ``close()``)."""
        pm = pm or make_plugin_manager()
        registry = collect_components(pm)
        config = load_pipeline(path, registry)
        run_id = run_id or new_run_id()
        owned = None
        if tracer_provider is None:
            spans = Path(config.telemetry.path.replace("{run_id}", run_id))
            owned = tm.make_tracer_provider(config.telemetry, run_id=run_id,
                                            pipeline=config.pipeline.name, path=spans)
        engine = cls.from_config(config, registry, pm, tracer_provider=owned or tracer_provider,
                                 run_id=run_id, engine_id=engine_id)
        engine._owned_provider = owned
        return engine

    @classmethod
    def from_config(cls, config: PipelineConfig, registry: ComponentRegistry,
                    pm: pluggy.PluginManager, *,
                    tracer_provider: trace.TracerProvider | None = None,
                    run_id: str | None = None, engine_id: str | None = None) -> Engine:
        """Open the journal, then build every component in dependency order (rpc,
        venues, ... settlers)."""
        run_id = run_id or new_run_id()
        engine_id = engine_id or default_engine_id(config.pipeline.name)
        built, ctx = build_components(config, registry, pm, run_id=run_id,
                                      tracer_provider=tracer_provider,
                                      keeps_journal=bool(config.journal.url))
        strategy_reg = registry.get("strategies", config.execution.strategy)
        assert strategy_reg is not None
        strategy = strategy_reg.cls.from_config(config.execution.strategy,
                                                config.strategy_options, ctx)
        journal = open_journal(config, pm, run_id=run_id, engine_id=engine_id)
        if journal is not None:
            try:
                for book in ctx.books:
                    book.bind(journal)
            except BaseException:
                journal.close()
                raise
        kill = ctx.path(config.pipeline.kill_switch_file) if config.pipeline.kill_switch_file \
            else None
        return cls(
            venues=built["venues"], detectors=list(built["detectors"].values()),
            gates=list(built["gates"].values()), sinks=list(built["sinks"].values()),
            settlers=list(built["settlers"].values()), rpc=built["rpc"], strategy=strategy,
            execution=config.execution, tracer_provider=tracer_provider,
            pipeline_name=config.pipeline.name, run_id=run_id, pm=pm, config=config,
            kill_switch_file=kill, journal=journal,
            concurrent_cycles=config.pipeline.concurrent_cycles, engine_id=engine_id,
        )

    def loop_factory(self) -> Callable[[], asyncio.AbstractEventLoop] | None:
        """The event loop a run of this engine needs (``asyncio.Runner(loop_factory=...)``):
        when every venue replays one recording, a loop whose time is the recording's
        (``pr3dict_core.clock``); else None, asyncio's own."""
        return loop_factory(self.venues.values())

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Start every component through one exit stack (a start that fails half way
        closes what started, last in first out), restore halts and gate state from the
        journal, recover open trades, and only then allow entries."""
        if self._started:
            return
        if self.journal is not None:
            if self.journal.has_run(self.run_id):
                # Trade and order ids derive from the run id: reusing one would collide.
                raise Pr3dictError(f"run id {self.run_id} is already in the journal "
                                   f"{self.journal.where}; use a new run id")
            self.journal.register_engine(self.pipeline_name)
        stack = contextlib.AsyncExitStack()
        try:
            for provider in self.rpc.values():
                await provider.start()
                stack.push_async_callback(provider.close)
            for venue in self.venues.values():  # started one by one: each close registered
                await venue.start()
                stack.push_async_callback(venue.close)
            for detector in self.detectors:
                detector.bind({vid: self.venues[vid] for vid in detector.venue_ids})
            for settler in self.settlers:
                await settler.start()
                stack.push_async_callback(settler.close)
        except BaseException:
            await stack.aclose()
            raise
        self._stack = stack
        replayed = replayed_clock(asyncio.get_running_loop())
        self._replayed = replayed is not None
        if replayed is not None and not self._clock_injected:
            self.clock = replayed  # every deadline and timer counts the recording's time
        self._executor = TradeExecutor(
            self.venues, self.strategy, self.execution, self.tracer, journal=self.journal,
            seed=0 if replayed is not None else None,  # retry jitter: same for every replay
            clock=self.clock, on_auth_failure=self._auth_failed,
            on_journal_error=self._journal_failed, on_late_change=self._late_change)
        self._started = True
        if self.journal is not None:
            self._restore_halts()
            await self.recover()
            self._restore_gates()
            if self.journal.shared:  # other engines: keep our lease, adopt what they leave
                self._spawn(self._keep_lease())
        if self.pm is not None and self.config is not None:
            self.pm.hook.pr3dict_run_start(config=self.config, run_id=self.run_id)

    async def close(self, exit_code: int | None = None) -> None:
        """Wait for trades in flight, stop background work, then close sinks, settlers,
        venues and RPC in reverse order of starting; ``run_finish`` fires last."""
        self._stopping = True
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        for task in list(self._background):  # open trades and halts stay in the journal
            if not getattr(task, "pr3dict_wait", False):
                task.cancel()
        if self._background:
            await asyncio.gather(*list(self._background), return_exceptions=True)
        summary = self.statistics()
        self._push_state()  # the final state, for sinks that keep it past the run
        errors: list[BaseException] = []
        for sink in self.sinks:
            try:
                await sink.close(summary.to_json())
            except Exception as exc:  # close the rest; report after
                errors.append(exc)
        if self._stack is not None:
            try:
                await self._stack.aclose()
            except Exception as exc:
                errors.append(exc)
            self._stack = None
        self._started = False
        if self.journal is not None:
            try:  # a clean stop: what is left open may be adopted by another engine at once
                self.journal.retire_engine()
            except Exception as exc:  # the lease then lapses by itself
                errors.append(exc)
            try:
                self.journal.close()
            except Exception as exc:
                errors.append(exc)
            self.journal = None
        if self.pm is not None and self.config is not None:
            code = exit_code if exit_code is not None else (
                1 if self.fatal or summary.unresolved else 0)
            self.pm.hook.pr3dict_run_finish(config=self.config, run_id=self.run_id,
                                            summary=summary, exit_code=code)
        if self._owned_provider is not None:
            self._owned_provider.force_flush()
            self._owned_provider.shutdown()
            self._owned_provider = None
        if errors:
            raise Pr3dictError(f"{len(errors)} component(s) failed to close: {errors[0]!r}")

    async def __aenter__(self) -> Engine:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _spawn(self, coro: Any, *, wait: bool = False) -> asyncio.Task[Any]:
        """Background work under the engine: ``close()`` cancels it, or waits for it when
        ``wait`` (settlement that is under way)."""
        task = asyncio.ensure_future(coro)
        task.pr3dict_wait = wait  # type: ignore[attr-defined]
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    # ------------------------------------------------------------------ one cycle

    async def _poll(self, vid: str, venue: Venue) -> Sequence[Book]:
        try:
            return await venue.poll_books()
        except Exception as exc:
            with self.tracer.start_as_current_span(tm.SPAN_POLL, attributes={
                    tm.VENUE_ID: vid}) as span:
                span.record_exception(exc)
                span.set_attribute(tm.ERROR_TYPE, type(exc).__name__)
                span.set_status(Status(StatusCode.ERROR, str(exc)))
            raise VenueFailure(f"venue {vid} failed: {type(exc).__name__}: {exc}") from exc

    async def scan(self) -> list[Opportunity]:
        """Pull changed books from every venue and run the detectors over them.

        A venue that cannot give books raises ``VenueFailure``: the run stops cleanly.
        """
        if self._replayed:  # one recording's venues: nothing to wait for side by side
            batches = [await self._poll(vid, v) for vid, v in self.venues.items()]
        else:
            batches = await asyncio.gather(*(self._poll(vid, v)
                                             for vid, v in self.venues.items()))
        changed = [book for batch in batches for book in batch]
        if not changed:
            return []
        out: list[Opportunity] = []
        for detector in self.detectors:
            start_ns = time.time_ns()
            try:
                found = list(detector.detect(changed))
            except Exception as exc:  # a detector bug costs its opportunities, not the run
                with self.tracer.start_as_current_span(tm.SPAN_DETECT, start_time=start_ns,
                                                       attributes={tm.DETECTOR_ID: detector.id}
                                                       ) as span:
                    span.record_exception(exc)
                    span.set_status(Status(StatusCode.ERROR, str(exc)))
                continue
            end_ns = time.time_ns()
            for opp in found:
                object.__setattr__(opp, "detect_started_at", (start_ns, end_ns))
                out.append(opp)
        self.stats.opportunities += len(out)
        return out

    async def scan_and_execute(self, markets: Iterable[str] | None = None, *,
                               strategy: ExecutionStrategy | str | None = None,
                               max_opportunities: int | None = None) -> list[Trade]:
        """One cycle: scan, then preflight and execute opportunities; waits for them.

        ``markets`` keeps only opportunities whose every leg is on one of these market ids
        (or instruments); ``max_opportunities`` takes the best ones by expected profit;
        ``strategy`` (an instance, or a registered type name with default options)
        executes them instead of the pipeline's.
        """
        opportunities = await self.scan()
        if markets is not None:
            wanted = set(markets)
            opportunities = [o for o in opportunities if all(
                leg.market_id in wanted or leg.instrument in wanted for leg in o.legs)]
        if max_opportunities is not None:
            opportunities = sorted(opportunities, key=lambda o: o.expected_profit,
                                   reverse=True)[:max_opportunities]
        chosen = self._strategy(strategy)
        tasks = [t for opp in opportunities
                 if (t := self.submit_opportunity(opp, chosen)) is not None]
        return list(await asyncio.gather(*tasks)) if tasks else []

    def _strategy(self, strategy: ExecutionStrategy | str | None) -> ExecutionStrategy:
        if strategy is None:
            return self.strategy
        if not isinstance(strategy, str):
            return strategy
        reg = collect_components(self.pm or make_plugin_manager()).get("strategies", strategy)
        if reg is None:
            raise Pr3dictError(f"no execution strategy type {strategy!r} is registered")
        return reg.cls.from_config(strategy, reg.cls.Config(), None)  # type: ignore[no-any-return]

    def submit_opportunity(self, opp: Opportunity, strategy: ExecutionStrategy | None = None
                           ) -> asyncio.Task[Trade] | None:
        """Start handling ``opp`` in the background; None if it overlaps a trade in flight."""
        keys = {(leg.venue, leg.instrument) for leg in opp.legs}
        if keys & self._in_flight:
            return None
        self._in_flight |= keys
        task = asyncio.ensure_future(self._handle(opp, keys, strategy or self.strategy))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def execute_opportunity(self, opp: Opportunity, *,
                                  strategy: ExecutionStrategy | str | None = None) -> Trade:
        """Preflight and execute one opportunity now (it may come from any source)."""
        task = self.submit_opportunity(opp, self._strategy(strategy))
        if task is None:
            raise Pr3dictError(f"opportunity {opp.id} overlaps a trade in flight")
        return await task

    async def execute_trade(self, legs: Sequence[LegSpec], *, size: Decimal | None = None,
                            kind: str = "manual", payout: Decimal = Decimal(1),
                            strategy: ExecutionStrategy | str | None = None,
                            expected_profit: Decimal | None = None) -> Trade:
        """Execute a hand-built multi-leg trade through the same gates. ``strategy``
        overrides the pipeline's for this trade; ``expected_profit`` (USDC, after fees)
        replaces the one computed from the legs' prices and the venues' fees."""
        if not self._started:
            await self.start()
        size = size if size is not None else min(leg.size for leg in legs)
        cost = fees = Decimal(0)
        for leg in legs:
            venue = self.venues[leg.venue]
            cost += leg.price * size
            fees += venue.fee(leg.instrument, leg.price, size)
        edge = (payout * size - cost - fees) / size if size else Decimal(0)
        if expected_profit is not None:
            edge = Decimal(expected_profit) / size if size else Decimal(0)
        opp = Opportunity(
            id=opportunity_id("manual", legs, next(self._trade_seq)), detector="manual",
            kind=kind, legs=tuple(legs), size=size, edge_per_share=edge,
            cost=cost + fees, fees=fees, payout=payout,
        )
        return await self.execute_opportunity(opp, strategy=strategy)

    async def _handle(self, opp: Opportunity, keys: set[tuple[str, str]],
                      strategy: ExecutionStrategy) -> Trade:
        trade = Trade(id=f"{self.run_id}-{next(self._trade_seq)}", opportunity=opp,
                      strategy=strategy.type)
        if self.journal is not None:
            trade.observer = self.journal.trade_transition
            self.journal.trade_transition(trade, None)
        start = getattr(opp, "detect_started_at", None)
        start_ns = start[0] if isinstance(start, tuple) else None
        try:
            with self.tracer.start_as_current_span(tm.SPAN_OPPORTUNITY, start_time=start_ns,
                                                   attributes={
                tm.PIPELINE_NAME: self.pipeline_name, tm.OPPORTUNITY_ID: opp.id,
                tm.OPPORTUNITY_KIND: opp.kind, tm.OPPORTUNITY_EDGE: tm.num(opp.edge_per_share),
                tm.OPPORTUNITY_SIZE: tm.num(opp.size), tm.TRADE_ID: trade.id,
                tm.DETECTOR_ID: opp.detector,
            }) as root:
                if isinstance(start, tuple):
                    self.tracer.start_span(tm.SPAN_DETECT, start_time=start[0], attributes={
                        tm.DETECTOR_ID: opp.detector, tm.OPPORTUNITY_ID: opp.id,
                    }).end(end_time=start[1])
                async with self._semaphore:
                    await self._preflight_and_execute(trade, strategy)
                root.set_attribute(tm.TRADE_STATE, str(trade.state))
                root.set_attribute(tm.TRADE_PNL, tm.num(trade.realised_pnl))
                why = trade.error or next((leg.error for leg in trade.all_legs if leg.error), "")
                if why:
                    root.set_attribute(tm.TRADE_ERROR, why)
                if trade.reject_reason:
                    root.set_attribute(tm.TRADE_REJECT_REASON, trade.reject_reason)
                if trade.state is TradeState.UNRESOLVED or (
                        trade.state is TradeState.ROLLED_BACK and trade.realised_pnl < 0):
                    root.set_status(Status(StatusCode.ERROR, why or str(trade.state)))
        finally:
            self._in_flight -= keys
            self._release(trade)
        self._record(trade)
        return trade

    def _reject(self, trade: Trade, gate: str, reason: str) -> None:
        trade.reject_reason, trade.gate = reason, gate  # before: the journal writes them
        trade.transition(TradeState.REJECTED)

    async def _preflight_and_execute(self, trade: Trade, strategy: ExecutionStrategy) -> None:
        reason = self.halted or self._kill_switch_reason()
        if reason:
            self._reject(trade, "engine", reason)
            return
        assert self._executor is not None, "engine not started"
        trade.reserve = self._executor.worst_case_cost(trade, strategy)
        approved: list[RiskGate] = []
        for gate in self.gates:
            with self.tracer.start_as_current_span(tm.SPAN_GATE, attributes={
                tm.GATE_ID: gate.id, tm.GATE_TYPE: gate.type, tm.TRADE_ID: trade.id,
            }) as span:
                try:
                    decision = gate.evaluate(trade)
                    if inspect.isawaitable(decision):
                        decision = await decision
                except JournalError as exc:  # a shared book out of reach: stop entries
                    span.record_exception(exc)
                    self._journal_failed(exc)
                    decision = GateDecision.reject(f"gate {gate.id}: {exc}")
                except Exception as exc:  # a broken gate blocks: fail closed
                    span.record_exception(exc)
                    span.set_status(Status(StatusCode.ERROR, str(exc)))
                    decision = GateDecision.reject(
                        f"gate {gate.id} failed: {type(exc).__name__}: {exc}")
                span.set_attribute(tm.GATE_APPROVED, decision.approved)
                if not decision.approved:
                    span.set_attribute(tm.GATE_REASON, decision.reason)
                    self._reject(trade, gate.id, decision.reason)
                    self._notify_gates(approved, trade)
                    return
                approved.append(gate)
        if self.journal is not None and self.journal.shared:
            held = await self._claim(trade)
            if held:
                self._reject(trade, "lease", held)
                self._notify_gates(approved, trade)
                return
        trade.transition(TradeState.APPROVED)
        trade.decided_at = self.clock()
        try:
            await self._executor.execute(trade, strategy)
        finally:
            self._after(trade, approved)

    def _after(self, trade: Trade, gates: Sequence[RiskGate]) -> None:
        """A trade came out of execution or reconciliation: resolve it later, work its
        exposure, tell the gates, settle it."""
        if trade.state is TradeState.UNRESOLVED:
            self._resolve_later(trade, gates)
            return
        self._notify_gates(gates, trade)
        self._check_exposure(trade)
        if trade.state is TradeState.COMMITTED and self.settlers:
            # Settlement (an on-chain merge takes seconds) runs after the trade's slot and
            # markets are released; close() waits for it.
            self._spawn(self._settle(trade), wait=True)

    async def _settle(self, trade: Trade) -> None:
        for settler in self.settlers:
            with self.tracer.start_as_current_span(tm.SPAN_SETTLE, attributes={
                    tm.TRADE_ID: trade.id}) as span:
                try:
                    await settler.settle(trade)
                except Exception as exc:
                    span.record_exception(exc)
                    span.set_status(Status(StatusCode.ERROR, str(exc)))
        if trade.gas_spent:
            self._record(trade)  # again, now with the gas it cost (sinks add the difference)

    def _notify_gates(self, gates: Iterable[RiskGate], trade: Trade) -> None:
        for gate in gates:
            try:
                gate.on_trade_finished(trade)
            except Exception as exc:
                trace.get_current_span().record_exception(exc)

    # ------------------------------------------------------------------ leases

    async def _claim(self, trade: Trade) -> str:
        """Lease the trade's instruments in the shared journal: "" when all are ours,
        else who holds one. A journal that cannot be reached refuses the trade."""
        assert self.journal is not None
        keys = [(leg.venue, leg.instrument) for leg in trade.opportunity.legs]
        try:
            held = await self.journal.claim(trade.id, keys)
            if not held:
                self._leased.add(trade.id)
            return held
        except JournalError as exc:
            self._journal_failed(exc)
            return f"cannot lease its instruments: {exc}"
        except Exception as exc:
            return f"cannot lease its instruments: {type(exc).__name__}: {exc}"

    def _release(self, trade: Trade) -> None:
        """A trade that is over, and not being worked any more, frees its instruments."""
        if self.journal is None or trade.id not in self._leased or not trade.state.is_final:
            return
        if trade.id in self._unresolved or trade.id in self._exposed \
                or trade.id in self._breaking:
            return
        self._leased.discard(trade.id)
        try:
            self.journal.release(trade.id)
        except Exception as exc:  # leases then lapse with the engine's; nothing is unsafe
            trace.get_current_span().record_exception(exc)

    async def _keep_lease(self) -> None:
        """Renew this engine's lease every third of ``lease_ms``; adopt the open trades of
        engines whose lease expired. An engine that cannot renew in time stops entries
        (others may adopt its trades), and one whose id was taken over stops."""
        journal = self.journal
        assert journal is not None
        period = journal.lease_ms / 3000
        renewed = self.clock()
        adopting: asyncio.Task[Any] | None = None
        while True:
            try:
                if not await journal.renew_engine():
                    self.halt("lease", "", f"engine id {self.engine_id!r} was taken over by "
                                           "another process: this engine stops")
                    self.fatal = self.fatal or "engine lease lost"
                    return
                renewed = self.clock()
                self.lift("lease", "")
                if adopting is None or adopting.done():  # never holds up the next renewal
                    adopting = self._spawn(self._adopt_quietly())
            except Exception as exc:
                if self.clock() - renewed > period * 2:
                    self.halt("lease", "", f"cannot renew the engine's lease in "
                                           f"{journal.where}: {type(exc).__name__}: {exc}")
            await asyncio.sleep(period)

    def _adopt(self) -> list[tuple[str, str]]:
        """Take over the open trades of engines whose lease expired, when this engine
        has every venue they use: (trade id, engine it came from)."""
        journal = self.journal
        assert journal is not None
        adopted = []
        for trade_id, previous, venues in journal.orphaned_trades():
            if journal.shared and not set(venues) <= set(self.venues):
                continue  # another engine, with those venues, will
            if journal.adopt(trade_id, previous):
                adopted.append((trade_id, previous))
                self._leased.add(trade_id)
        return adopted

    async def _adopt_quietly(self) -> None:
        """``adopt_orphans`` in the background: a failure is logged, the next tick retries."""
        try:
            await self.adopt_orphans()
        except Exception as exc:
            log.warning("adopting the trades of dead engines failed: %s: %s",
                        type(exc).__name__, exc)

    async def adopt_orphans(self) -> list[Trade]:
        """Adopt (``_adopt``) and recover, through the reconciler, the open trades of
        engines that died while this one runs."""
        journal = self.journal
        assert journal is not None
        out = []
        for trade_id, previous in self._adopt():
            trade = journal.load_trade(trade_id)
            trade.observer = journal.trade_transition
            for leg in trade.all_legs:
                leg.observer = journal.leg_transition
            with self.tracer.start_as_current_span(tm.SPAN_RECOVER, attributes={
                    tm.TRADE_ID: trade.id, tm.TRADE_RECOVERED_FROM: trade.state.value,
                    tm.ENGINE_ADOPTED_FROM: previous}):
                await self._recover_trade(trade)
            if self._started and trade.state.is_final:
                self._notify_gates(self.gates, trade)
                self._release(trade)
            out.append(trade)
        return out

    # ------------------------------------------------------------------ halts

    def halt(self, cause: str, subject: str, reason: str) -> None:
        """Stop new entries for ``reason`` until ``lift(cause, subject)``; journaled."""
        if (cause, subject) in self.halts:
            return
        self.halts[(cause, subject)] = Halt(cause, subject, reason)
        if self.journal is not None:
            try:
                self.journal.set_halt(cause, subject, reason)
            except JournalError as exc:  # held in memory; the journal's failure is fatal
                self.fatal = self.fatal or f"journal write failed: {exc}"
        self._push_state()

    def lift(self, cause: str, subject: str) -> None:
        if self.halts.pop((cause, subject), None) is not None:
            if self.journal is not None:
                try:
                    self.journal.lift_halt(cause, subject)
                except JournalError as exc:
                    self.fatal = self.fatal or f"journal write failed: {exc}"
            self._push_state()

    @property
    def halted(self) -> str:
        """Every reason new entries are refused, or "" while trading."""
        return "; ".join(h.reason for h in self.halts.values())

    def _kill_switch_reason(self) -> str:
        if self.kill_switch_file is not None and self.kill_switch_file.exists():
            return f"kill switch file {self.kill_switch_file} exists"
        return ""

    def _auth_failed(self, venue_id: str, error: str) -> None:
        """Refused credentials: no entry anywhere, and the run ends non-zero."""
        reason = f"venue {venue_id} refused our credentials: {error}"
        if self._executor is not None:
            self._executor.blocked.add(venue_id)
        self.halt("auth", venue_id, reason)
        self.fatal = self.fatal or reason

    def _journal_failed(self, exc: BaseException) -> None:
        self.halt("journal", "", f"the journal cannot be written: {exc}")
        self.fatal = self.fatal or f"journal write failed: {exc}"

    def _restore_halts(self) -> None:
        """Halts that outlive a process (exposure) come back before any entry."""
        assert self.journal is not None
        for cause, subject, reason in self.journal.active_halts():
            if cause in PERSISTENT_HALTS:
                self.halts[(cause, subject)] = Halt(cause, subject, reason)
            else:  # belonged to a process that is gone; its trades are recovered anyway
                self.journal.lift_halt(cause, subject)

    def _restore_gates(self) -> None:
        """Rebuild every gate's state (capital, daily loss, streaks, heat) from the
        journal's executed trades, before any entry."""
        assert self.journal is not None
        trades = self.journal.executed_trades()
        for gate in self.gates:
            restore = getattr(gate, "restore", None)
            try:
                if restore is not None:
                    restore(trades)
                else:
                    for trade in trades:
                        if trade.state.is_final:
                            gate.on_trade_finished(trade)
            except Exception as exc:  # a gate that cannot restore blocks: fail closed
                self.halt("gate", gate.id, f"gate {gate.id} could not restore its state: "
                                           f"{type(exc).__name__}: {exc}")

    # ------------------------------------------------------------------ fail closed

    def kill(self, reason: str) -> asyncio.Task[None]:
        """Stop new entries and cancel every resting order; queries and cancels go on."""
        self.halt("kill", "", f"kill switch: {reason}")
        if self._executor is None:  # not started yet: nothing can rest
            return asyncio.ensure_future(asyncio.sleep(0))
        return asyncio.ensure_future(self._executor.cancel_resting())

    def _resolve_later(self, trade: Trade, gates: Sequence[RiskGate]) -> None:
        """Keep reconciling an unresolved trade in the background; entries stop until then."""
        self.halt("unresolved", trade.id, f"trade {trade.id} is unresolved: new entries stop")
        self._unresolved[trade.id] = trade
        self._spawn(self._resolve(trade, gates))

    async def _resolve(self, trade: Trade, gates: Sequence[RiskGate]) -> None:
        executor = self._executor
        assert executor is not None
        attempt = 0
        while trade.state is TradeState.UNRESOLVED:
            await asyncio.sleep(min(0.05 * 2**attempt, 5.0))
            attempt += 1
            with self.tracer.start_as_current_span(tm.SPAN_RECONCILE, attributes={
                    tm.TRADE_ID: trade.id}):
                await executor.reconcile_trade(trade, give_up=self.clock() + 1.0)
        trade.finished_at = self.clock()
        executor.remember(trade)
        self._unresolved.pop(trade.id, None)
        self.lift("unresolved", trade.id)  # resolved: this halt lifts
        if not self._unresolved:
            self.lift("recovery", "")
        self._after(trade, gates)
        self._release(trade)
        self._record(trade)

    def _check_exposure(self, trade: Trade) -> None:
        """Known but unhedged exposure (an unwind hit its loss cap or found no bids) stops
        new entries and is worked in the background until hedged or flat; dust below the
        minimum order size does not count."""
        executor = self._executor
        assert executor is not None
        if trade.state.is_final and executor.exposed(trade) and trade.id not in self._exposed:
            self.halt("exposure", trade.id,
                      f"trade {trade.id} left unhedged exposure: {trade.error}")
            self._exposed[trade.id] = trade
            self._spawn(self._work_exposure(trade))

    async def _work_exposure(self, trade: Trade) -> None:
        """Keep completing or unwinding what a rollback left unhedged, within
        ``max_unwind_loss``, until hedged or flat; then entries resume."""
        executor = self._executor
        assert executor is not None
        attempt = 0
        try:
            while executor.exposed(trade):
                with self.tracer.start_as_current_span(tm.SPAN_WORK_EXPOSURE, attributes={
                        tm.TRADE_ID: trade.id}):
                    await executor.rehedge(trade)
                if any(leg.state is LegState.UNRESOLVED for leg in trade.all_legs):
                    await executor.reconcile_trade(trade, give_up=self.clock() + 1.0)
                if not executor.exposed(trade):
                    break
                await asyncio.sleep(min(0.05 * 2**attempt, 2.0)
                                    + self.execution.unwind_deadline_ms / 1000)
                attempt += 1
        finally:
            if not executor.exposed(trade):
                trade.error = executor.exposure_text(executor.outstanding(trade))
                if self.journal is not None and trade.observer is not None:
                    trade.observer(trade, trade.state)
                self._exposed.pop(trade.id, None)
                self.lift("exposure", trade.id)
                self._release(trade)

    def _late_change(self, trade: Trade) -> None:
        """A finished trade's fills changed (a fill reversed on chain, or a late fill): a
        journaled break reopens it, and it is completed or unwound like a short leg."""
        if trade.id in self._unresolved or trade.id in self._exposed:
            return  # its resolver or exposure worker looks at what it holds anyway
        # Durable at once: a break interrupted by a crash or a stop is taken up at start.
        self.halt("break", trade.id, f"trade {trade.id} changed after it was final: "
                                     "re-hedging")
        self._dirty.add(trade.id)
        if trade.id not in self._breaking and not self._stopping:
            self._breaking.add(trade.id)
            self._spawn(self._break(trade), wait=True)

    async def _break(self, trade: Trade) -> None:
        """Re-hedge a finished trade until what it holds matches its final state again
        (changes that arrive during a break are taken in the next round)."""
        executor = self._executor
        assert executor is not None
        try:
            while trade.id in self._dirty:
                self._dirty.discard(trade.id)
                if not trade.state.is_final or executor.holds_as_stated(trade):
                    continue  # its final state still says what it holds
                with self.tracer.start_as_current_span(tm.SPAN_BREAK, attributes={
                        tm.TRADE_ID: trade.id, tm.TRADE_RECOVERED_FROM: trade.state.value}):
                    trade.error = "a fill changed after the trade was final"
                    await executor.rollback(trade)
                self._after(trade, [])
                self._record(trade)
            self.lift("break", trade.id)
        finally:
            self._breaking.discard(trade.id)
            self._release(trade)

    async def recover(self) -> list[Trade]:
        """Before any trading: read non-final trades back from the journal, ask the venues
        what happened to every order (by the ids the journal holds), adopt fills, then
        commit, complete or unwind; re-ask about recently finished trades; re-hedge broken
        trades and work exposure again."""
        assert self.journal is not None and self._executor is not None
        journal, executor = self.journal, self._executor
        loaded: dict[str, Trade] = {}

        def watched(trade: Trade) -> Trade:
            """The journal follows a trade read back from it, loaded once."""
            trade = loaded.setdefault(trade.id, trade)
            trade.observer = journal.trade_transition
            for leg in trade.all_legs:
                leg.observer = journal.leg_transition
            return trade

        self._adopt()  # a dead engine's open trades first become ours, then are recovered
        recovered = [watched(t) for t in journal.open_trades()]
        if journal.shared:  # their leases, kept in the journal, are ours to release
            self._leased.update(t.id for t in recovered)
        for trade in recovered:
            with self.tracer.start_as_current_span(tm.SPAN_RECOVER, attributes={
                    tm.TRADE_ID: trade.id, tm.TRADE_RECOVERED_FROM: trade.state.value}):
                await self._recover_trade(trade)
        window = self.execution.recheck_window_ms / 1000
        for trade in (journal.recent_final_trades(time.time() - window) if window else []):
            trade = watched(trade)
            with self.tracer.start_as_current_span(tm.SPAN_RECHECK, attributes={
                    tm.TRADE_ID: trade.id}):
                changed = await executor.recheck(trade)
            executor.remember(trade)
            if changed:
                self.halt("break", trade.id, f"trade {trade.id} changed after it was final: "
                                             "re-hedging")
        # Breaks first: a trade being re-hedged is not also handed to an exposure worker.
        persistent = sorted((key for key in self.halts if key[0] in PERSISTENT_HALTS),
                            key=lambda key: key[0] != "break")
        for cause, subject in persistent:
            try:
                trade = loaded.get(subject) or watched(journal.load_trade(subject))
            except KeyError:  # a halt about a trade the journal does not have
                self.lift(cause, subject)
                continue
            if cause == "break":  # reopened, maybe by an earlier process: re-hedge it now
                executor.remember(trade)
                self._dirty.add(trade.id)
                self._breaking.add(trade.id)
                await self._break(trade)
            elif subject not in self._exposed:  # exposure: worked again, or lifted
                self.halts.pop((cause, subject))  # set again (or not) from what it holds
                self._check_exposure(trade)
                if trade.id not in self._exposed:
                    journal.lift_halt(cause, subject)
        self.recovered = recovered
        return recovered

    async def _recover_trade(self, trade: Trade) -> None:
        """Ask the venues what happened to every order of a trade read back from the
        journal, then commit, complete or unwind it, or keep resolving it."""
        executor = self._executor
        assert executor is not None
        await executor.reconcile_trade(trade, give_up=self.clock() + 1.0)
        trace.get_current_span().set_attribute(tm.TRADE_STATE, trade.state.value)
        trade.finished_at = self.clock()
        if trade.state is TradeState.UNRESOLVED:
            self.halt("recovery", "", "recovery left trades unresolved: new entries stop")
            # The gates restore it as reserved; they are told when it resolves.
            self._resolve_later(trade, self.gates)
        else:
            executor.remember(trade)
            self._check_exposure(trade)
        self._record(trade)

    def _record(self, trade: Trade) -> None:
        """Hand a final trade to statistics and sinks; a trade recorded again (resolved
        later, or settled with gas) replaces its earlier record."""
        if not trade.recorded:
            self.trades.append(trade)
            trade.recorded = True
        record = TradeRecord.from_trade(trade)
        self.stats.add(record)
        for sink in self.sinks:
            try:
                sink.record(record)
            except Exception as exc:
                trace.get_current_span().record_exception(exc)
        self._push_state()
        if self.pm is not None:
            self.pm.hook.pr3dict_trade_finished(trade=trade)

    # ------------------------------------------------------------------ the loop

    async def run(self, *, cycles: int | None = None, duration: float | None = None,
                  stop: asyncio.Event | None = None, interval: float = 0.0,
                  on_cycle: Callable[[Engine, int], None] | None = None) -> RunSummary:
        """Cycle until ``cycles`` or ``duration`` is reached or ``stop`` is set."""
        await self.start()
        stop = stop or asyncio.Event()
        end = time.monotonic() + duration if duration is not None else None
        cycle = 0
        while not stop.is_set() and not self.fatal:
            if cycles is not None and cycle >= cycles:
                break
            if end is not None and time.monotonic() >= end:
                break
            cycle += 1
            if ("kill", "") not in self.halts and self._kill_switch_reason():
                await self.kill(self._kill_switch_reason())
            self._check_venue_auth()
            if self.journal is not None and self.journal.failure is not None:
                self._journal_failed(self.journal.failure)
                break
            self._push_venue_stats()
            for opp in await self.scan():
                self.submit_opportunity(opp)
            # Unless cycles run concurrently, a cycle's trades finish before the next
            # cycle reads books: a paper run then stays deterministic for its seed.
            if self._tasks and not self.concurrent_cycles:
                await asyncio.gather(*list(self._tasks), return_exceptions=True)
            if on_cycle is not None:
                on_cycle(self, cycle)
            if interval:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(stop.wait(), interval)
            else:
                await asyncio.sleep(0)
        if self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
        return self.statistics()

    def _check_venue_auth(self) -> None:
        """A venue whose credentials were refused outside an order (a heartbeat, a feed)."""
        for vid, venue in self.venues.items():
            failure = getattr(venue, "auth_failure", "")
            if failure and ("auth", vid) not in self.halts:
                self._auth_failed(vid, failure)

    def statistics(self) -> RunSummary:
        return attrs.evolve(self.stats.summary(), venues=self.venue_stats())

    def venue_stats(self) -> dict[str, Any]:
        """Each venue's ``connection_stats()`` (optional): websocket (re)connects."""
        out = {}
        for vid, venue in self.venues.items():
            stats = getattr(venue, "connection_stats", None)
            if stats is not None:
                try:
                    out[vid] = stats()
                except Exception:  # a broken stat must not break the summary
                    continue
        return out

    def state(self) -> EngineState:
        """What stops entries, trades of unknown outcome, and unhedged exposure, now."""
        shares: dict[str, Decimal] = dict.fromkeys(self.venues, ZERO)
        usdc: dict[str, Decimal] = dict.fromkeys(self.venues, ZERO)
        if self._executor is not None:
            for trade in list(self._exposed.values()):
                for (venue, instrument), qty in self._executor.outstanding(trade).items():
                    price = next((leg.average_price or leg.target_price or ZERO
                                  for leg in trade.legs if leg.instrument == instrument), ZERO)
                    shares[venue] = shares.get(venue, ZERO) + abs(qty)
                    usdc[venue] = usdc.get(venue, ZERO) + abs(qty) * price
        return EngineState(
            run_id=self.run_id, pipeline=self.pipeline_name,
            mode=str(self.config.pipeline.mode) if self.config is not None else "",
            venues=tuple(self.venues), halts=collections.Counter(c for c, _ in self.halts),
            kill_switch=("kill", "") in self.halts, unresolved=len(self._unresolved),
            exposure_shares=shares, exposure_usdc=usdc, opportunities=self.stats.opportunities)

    def _push_state(self) -> None:
        """Hand the engine's state to sinks that show it (``engine_state``)."""
        state = None
        for sink in self.sinks:
            push = getattr(sink, "engine_state", None)
            if push is not None:
                try:
                    state = state if state is not None else self.state()
                    push(state)
                except Exception as exc:
                    trace.get_current_span().record_exception(exc)

    def _push_venue_stats(self) -> None:
        """Hand the venues' connection stats to sinks that want them (``venue_stats``),
        at most once a second."""
        now = self.clock()
        if now - self._stats_pushed < 1.0:
            return
        self._stats_pushed = now
        self._push_state()  # opportunities move without a trade
        stats = None
        for sink in self.sinks:
            push = getattr(sink, "venue_stats", None)
            if push is not None:
                stats = stats if stats is not None else self.venue_stats()
                try:
                    push(stats)
                except Exception as exc:
                    trace.get_current_span().record_exception(exc)
