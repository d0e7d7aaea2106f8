"""The ``pr3dict`` command. ``main(argv) -> int`` is pure and testable; ``run()`` exits.

Exit codes: 0 ok, 1 run failed, 78 bad configuration, 130 interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import time
import traceback
from collections.abc import Sequence
from decimal import Decimal
from pathlib import Path
from typing import NoReturn, TextIO

import attrs
import pluggy
from opentelemetry import trace

from . import telemetry as tm
from .components import KINDS, ComponentRegistry, DuplicateComponent
from .config import EX_CONFIG, ConfigError, ConfigProblem, Mode, PipelineConfig, load_pipelines
from .journal import Journal
from .metrics import net_exposure
from .model import Pr3dictError
from .pipeline import Engine, build_components, new_run_id
from .plugins import UsageError, collect_components, make_plugin_manager, plugin_distributions

EX_OK, EX_FAILED, EX_INTERRUPTED = 0, 1, 130


@attrs.frozen
class CommandContext:
    """What a subcommand handler gets besides its parsed arguments."""

    pm: pluggy.PluginManager
    registry: ComponentRegistry
    stdout: TextIO
    stderr: TextIO
    tracer_provider: trace.TracerProvider | None = None


def _plugin_options(argv: Sequence[str]) -> list[str]:
    """The ``-p`` values before the subcommand: needed to build the manager that adds commands."""
    out, i = [], 0
    while i < len(argv):
        arg = argv[i]
        if arg == "-p" and i + 1 < len(argv):
            out.append(argv[i + 1])
            i += 2
        elif arg.startswith("-p") and len(arg) > 2:
            out.append(arg[2:])
            i += 1
        elif arg.startswith("-"):
            i += 1
        else:
            break
    return out


def build_parser(pm: pluggy.PluginManager | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pr3dict", description=__doc__.splitlines()[0])
    parser.add_argument("-p", dest="plugins", action="append", default=[], metavar="NAME",
                        help="load plugin module NAME, or block plugin NAME with no:NAME")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run a pipeline")
    run.add_argument("pipeline", type=Path)
    run.add_argument("--cycles", type=int, help="stop after N detect cycles")
    run.add_argument("--duration", type=float, metavar="SECONDS", help="stop after SECONDS")
    run.add_argument("--live", action="store_true",
                     help="allow live trading (the pipeline must also say mode = \"live\")")
    run.add_argument("--run-id", help="use this run id instead of a new one")
    run.add_argument("--quiet", action="store_true", help="no live status line")

    validate = sub.add_parser("validate", help="check pipeline files; exit 78 on problems")
    validate.add_argument("pipelines", type=Path, nargs="+")
    validate.add_argument("--no-environment", action="store_true",
                          help="skip starting venues and RPC providers")

    graph = sub.add_parser("graph", help="print a pipeline's wiring")
    graph.add_argument("pipeline", type=Path)
    graph.add_argument("--format", choices=["dot", "text"], default="dot")

    sub.add_parser("plugins", help="list plugins, their distributions and components")

    journal = sub.add_parser("journal", help="show the trades a pipeline's journal holds")
    journal.add_argument("target", type=Path, help="a pipeline file or a journal .sqlite file")
    journal.add_argument("--state", help="only trades in this state (e.g. unresolved)")
    journal.add_argument("--limit", type=int, default=50)
    journal.add_argument("--trade", help="show one trade with its legs and orders")
    if pm is not None:
        pm.hook.pr3dict_add_commands(subparsers=sub)
    return parser


def _plugin_manager(options: Sequence[str]) -> pluggy.PluginManager:
    blocked = [p[3:] for p in options if p.startswith("no:")]
    load = [p for p in options if not p.startswith("no:")]
    return make_plugin_manager(block=blocked, load=load)


def main(argv: Sequence[str] | None = None, *,
         tracer_provider: trace.TracerProvider | None = None,
         pm: pluggy.PluginManager | None = None,
         stdout: TextIO | None = None, stderr: TextIO | None = None) -> int:
    out = stdout or sys.stdout
    err = stderr or sys.stderr
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        pm = pm or _plugin_manager(_plugin_options(argv))
        registry = collect_components(pm)
    except (UsageError, DuplicateComponent, ImportError) as exc:
        print(f"pr3dict: {exc}", file=err)
        return EX_CONFIG
    parser = build_parser(pm)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0) and 2
    try:
        handler = getattr(args, "handler", None)
        if handler is not None:
            return int(handler(args, CommandContext(pm, registry, out, err, tracer_provider)))
        if args.command == "plugins":
            return cmd_plugins(pm, registry, out)
        if args.command == "journal":
            return cmd_journal(args, registry, out, err)
        configs = load_pipelines(
            [args.pipeline] if hasattr(args, "pipeline") else args.pipelines, registry)
        if args.command == "validate":
            return cmd_validate(args, configs, registry, pm, out, err)
        if args.command == "graph":
            print(render_graph(configs[0], args.format), file=out)
            return EX_OK
        return cmd_run(args, configs[0], registry, pm, tracer_provider, out, err)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=err)
        print(f"pr3dict: {len(exc.problems)} problem(s); nothing was run", file=err)
        return EX_CONFIG
    except Pr3dictError as exc:
        print(f"pr3dict: {exc}", file=err)
        return EX_FAILED


def run() -> NoReturn:
    raise SystemExit(main())


# --------------------------------------------------------------------------- plugins


def cmd_plugins(pm: pluggy.PluginManager, registry, out: TextIO) -> int:  # type: ignore[no-untyped-def]
    dists = plugin_distributions(pm)
    by_plugin = registry.by_plugin()
    rows = []
    for name in sorted({n for n in (pm.get_name(p) for p in pm.get_plugins()) if n}):
        dist, version = dists.get(name, ("-", "-"))
        comps = ", ".join(f"{KINDS[r.kind]}:{r.name}" for r in sorted(
            by_plugin.get(name, []), key=lambda r: (r.kind, r.name))) or "-"
        rows.append((name, dist, version, comps))
    widths = [max(len(r[i]) for r in [("plugin", "distribution", "version", ""), *rows])
              for i in range(3)]
    header = ("plugin", "distribution", "version", "components")
    for row in [header, *rows]:
        cells = "  ".join(c.ljust(w) for c, w in zip(row[:3], widths, strict=True))
        print(f"{cells}  {row[3]}", file=out)
    return EX_OK


# --------------------------------------------------------------------------- journal


def cmd_journal(args: argparse.Namespace, registry: ComponentRegistry, out: TextIO,
                err: TextIO) -> int:
    path = args.target
    if path.suffix == ".toml":
        config = load_pipelines([path], registry)[0]
        path = Path(config.pipeline.journal.replace("{pipeline}", config.pipeline.name))
    if not path.exists():
        print(f"pr3dict: no journal at {path}", file=err)
        return EX_FAILED
    journal = Journal(path)
    try:
        if args.trade:
            trade = journal.load_trade(args.trade)
            print(f"trade {trade.id}  {trade.state.value}  {trade.opportunity.kind}  "
                  f"size {trade.opportunity.size}  {trade.error or trade.reject_reason}",
                  file=out)
            for leg in trade.all_legs:
                print(f"  leg {leg.index} {leg.purpose:<8} {leg.side.value:<4} {leg.instrument:<28}"
                      f" {leg.state.value:<16} filled {leg.filled}/{leg.size}"
                      f" avg {leg.average_price or '-'}", file=out)
                for cid in journal.client_order_ids(trade.id, leg.index):
                    print(f"      order {cid}", file=out)
            return EX_OK
        rows = journal.trades(limit=args.limit, state=args.state)
        print(f"{'trade':<30} {'state':<12} {'strategy':<10} note", file=out)
        for r in rows:
            print(f"{r['id']:<30} {r['state']:<12} {r['strategy']:<10} "
                  f"{r['error'] or r['reject_reason']}", file=out)
        open_trades = journal.open_trades()
        print(f"{len(rows)} shown; {len(open_trades)} not final", file=out)
    except KeyError as exc:
        print(f"pr3dict: no trade {exc} in {path}", file=err)
        return EX_FAILED
    finally:
        journal.close()
    return EX_OK


# --------------------------------------------------------------------------- validate / graph


def cmd_validate(args: argparse.Namespace, configs: list[PipelineConfig], registry, pm,  # type: ignore[no-untyped-def]
                 out: TextIO, err: TextIO) -> int:
    problems: list[ConfigProblem] = []
    failed = False
    for config in configs:
        found = [p for ps in pm.hook.pr3dict_check_pipeline(config=config) for p in ps or ()]
        if found:
            problems.extend(found)
            continue
        try:
            problem = asyncio.run(_check_components(config, registry, pm,
                                                    environment=not args.no_environment))
        except ConfigError as exc:  # a scenario or mapping file named by a component
            problems.extend(exc.problems)
            continue
        if problem:
            print(f"{config.file}: environment: {problem}", file=err)
            failed = True
            continue
        print(f"ok: {config.file}", file=out)
    if problems:
        raise ConfigError(problems)
    return EX_CONFIG if failed else EX_OK


# Building these has no side effect (no file written, no port opened, nothing sent):
# validate builds them to check what they read (scenario and mapping files).
_CHECKED_KINDS = ("rpc", "venues", "detectors", "gates")


async def _check_components(config: PipelineConfig, registry, pm, *,  # type: ignore[no-untyped-def]
                            environment: bool) -> str:
    """Build the side-effect-free components; with ``environment``, also start the RPC
    providers and venues and bind the detectors to the markets they report.

    Nothing else is built (no journal, no sinks, no recovery): validating never trades.
    """
    components, _ = build_components(config, registry, pm, kinds=_CHECKED_KINDS)
    if not environment:
        return ""
    started = []
    try:
        for kind in ("rpc", "venues"):
            for cid, component in components[kind].items():
                try:
                    await asyncio.wait_for(component.start(), 30)
                except Exception as exc:
                    return f"{kind}.{cid}: cannot start: {type(exc).__name__}: {exc}"
                started.append(component)
        venues = components["venues"]
        for detector in components["detectors"].values():
            detector.bind({vid: venues[vid] for vid in detector.venue_ids})
        return ""
    finally:
        for component in reversed(started):
            try:
                await component.close()
            except Exception:  # closing is best effort here; the check already answered
                pass


def render_graph(config: PipelineConfig, fmt: str) -> str:
    venues = list(config.section("venues").values())
    detectors = list(config.section("detectors").values())
    gates = list(config.section("gates").values())
    sinks = list(config.section("sinks").values())
    strategy = config.execution.strategy
    if fmt == "text":
        lines = [f"pipeline {config.pipeline.name} ({config.pipeline.mode})"]
        lines += [f"  venue    {v.id} [{v.type}]" for v in venues]
        for d in detectors:
            lines.append(f"  detector {d.id} [{d.type}] <- "
                         f"{', '.join(getattr(d.options, 'venues', ()))}")
        lines += [f"  gate {i + 1}   {g.id} [{g.type}]" for i, g in enumerate(gates)]
        lines.append(f"  execute  [{strategy}] deadline {config.execution.deadline_ms} ms")
        lines += [f"  sink     {s.id} [{s.type}]" for s in sinks]
        lines += [f"  rpc      {r.id} [{r.type}]" for r in config.section("rpc").values()]
        lines += [f"  settler  {t.id} [{t.type}]" for t in config.section("settlers").values()]
        return "\n".join(lines)
    out = [f'digraph "{config.pipeline.name}" {{', "  rankdir=LR;"]
    for v in venues:
        out.append(f'  "venues.{v.id}" [label="{v.id}\\n{v.type}", shape=cylinder];')
    for d in detectors:
        out.append(f'  "detectors.{d.id}" [label="{d.id}\\n{d.type}", shape=box];')
        for vid in getattr(d.options, "venues", ()):
            out.append(f'  "venues.{vid}" -> "detectors.{d.id}" [label="books"];')
    chain = [f"gates.{g.id}" for g in gates]
    for g in gates:
        out.append(f'  "gates.{g.id}" [label="{g.id}\\n{g.type}", shape=diamond];')
    out.append(f'  "execution" [label="execute\\n{strategy}", shape=box];')
    first = chain[0] if chain else "execution"
    for d in detectors:
        out.append(f'  "detectors.{d.id}" -> "{first}" [label="opportunities"];')
    for a, b in zip(chain, [*chain[1:], "execution"], strict=True):
        out.append(f'  "{a}" -> "{b}" [label="approved"];')
    for v in venues:
        out.append(f'  "execution" -> "venues.{v.id}" [label="orders", style=dashed];')
    for s in sinks:
        out.append(f'  "sinks.{s.id}" [label="{s.id}\\n{s.type}", shape=note];')
        out.append(f'  "execution" -> "sinks.{s.id}" [label="trades"];')
    for t in config.section("settlers").values():
        out.append(f'  "settlers.{t.id}" [label="{t.id}\\n{t.type}", shape=box];')
        out.append(f'  "execution" -> "settlers.{t.id}" [label="committed"];')
        rpc = getattr(t.options, "rpc", None)
        if isinstance(rpc, str):
            out.append(f'  "settlers.{t.id}" -> "rpc.{rpc}" [style=dashed];')
    for r in config.section("rpc").values():
        out.append(f'  "rpc.{r.id}" [label="{r.id}\\n{r.type}", shape=cylinder];')
    out.append("}")
    return "\n".join(out)


# --------------------------------------------------------------------------- run


def cmd_run(args: argparse.Namespace, config: PipelineConfig, registry, pm,  # type: ignore[no-untyped-def]
            tracer_provider: trace.TracerProvider | None, out: TextIO, err: TextIO) -> int:
    if config.pipeline.mode is Mode.LIVE and not args.live:
        print(f"{config.file}: pipeline.mode: live trading also needs `pr3dict run --live`",
              file=err)
        return EX_CONFIG
    if args.live and config.pipeline.mode is not Mode.LIVE:
        print(f"{config.file}: pipeline.mode: --live given but the pipeline says mode = "
              f"\"{config.pipeline.mode}\"", file=err)
        return EX_CONFIG
    run_id = args.run_id or new_run_id()
    owned_provider = None
    if tracer_provider is None:
        spans_path = Path(config.telemetry.path.replace("{run_id}", run_id))
        owned_provider = tm.make_tracer_provider(config.telemetry, run_id=run_id,
                                                 pipeline=config.pipeline.name,
                                                 path=spans_path)
        tracer_provider = owned_provider
    try:
        engine = Engine.from_config(config, registry, pm, tracer_provider=tracer_provider,
                                    run_id=run_id)
    except BaseException:
        if owned_provider is not None:  # nothing ran: nothing to flush, no file left
            owned_provider.shutdown()
        raise
    cycles = args.cycles if args.cycles is not None else config.pipeline.cycles
    duration = args.duration if args.duration is not None else config.pipeline.duration_s
    status = _StatusLine(err, enabled=not args.quiet and err.isatty())
    print(f"pr3dict: run {run_id} of {config.pipeline.name} ({config.pipeline.mode})", file=err)
    code, interrupted = EX_OK, False
    try:
        interrupted = asyncio.run(_run_engine(engine, cycles, duration,
                                              config.pipeline.interval_ms / 1000, status))
        summary = engine.statistics()
    except ConfigError as exc:  # found only once connected (a market a mapping names)
        for problem in exc.problems:
            print(problem, file=err)
        code = EX_CONFIG
        summary = engine.statistics()
    except Pr3dictError as exc:
        print(f"pr3dict: run failed: {exc}", file=err)
        code = EX_FAILED
        summary = engine.statistics()
    except Exception:  # a bug: say so loudly, but still flush and summarise
        print("pr3dict: run failed with an internal error:", file=err)
        traceback.print_exc(file=err)
        code = EX_FAILED
        summary = engine.statistics()
    finally:
        status.clear()
        if owned_provider is not None:
            owned_provider.force_flush()
            owned_provider.shutdown()
    print(summary.table(), file=out)
    for line in _outputs(engine, config, run_id):
        print(line, file=err)
    if engine.halted:
        print(f"pr3dict: halted: {engine.halted}", file=err)
    if interrupted:
        code = EX_INTERRUPTED
    elif summary.unresolved:
        code = EX_FAILED
    pm.hook.pr3dict_run_finish(config=config, run_id=run_id, summary=summary, exit_code=code)
    return code


def _outputs(engine: Engine, config: PipelineConfig, run_id: str) -> list[str]:
    """Where this run wrote things, and how to read them."""
    cwd = Path.cwd()

    def show(path: Path) -> str:
        return str(path.relative_to(cwd)) if path.is_relative_to(cwd) else str(path)

    lines = []
    for vid, venue in engine.venues.items():
        try:
            held = venue.positions()
            pairs = [(m.yes, m.no) for m in venue.markets()]
        except Exception:  # a venue that cannot say (closed connection) is not reported
            continue
        hedged = sum((min(held.get(y, 0), held.get(n, 0)) for y, n in pairs), Decimal(0))
        lines.append(f"  venue    {vid}: {hedged} hedged sets held, "
                     f"{net_exposure(held, pairs)} unhedged shares")
    for sink in engine.sinks:
        path = getattr(sink, "path", None)
        if isinstance(path, Path) and path.exists():
            lines.append(f"  metrics  {show(path)}   (pr3dict report {run_id})")
    if config.telemetry.exporter == "jsonl":
        spans = Path(config.telemetry.path.replace("{run_id}", run_id)).absolute()
        if spans.exists():
            lines.append(f"  spans    {show(spans)}")
    elif config.telemetry.exporter == "otlp":
        lines.append(f"  spans    sent to {config.telemetry.endpoint}")
    if config.pipeline.journal:
        journal = Path(config.pipeline.journal.replace("{pipeline}", config.pipeline.name))
        lines.append(f"  journal  {show(journal.absolute())}   (pr3dict journal {show(journal)})")
    return lines


async def _run_engine(engine: Engine, cycles: int | None, duration: float | None,
                      interval: float, status: _StatusLine) -> bool:
    """Run until done or interrupted; returns True if interrupted (SIGINT/SIGTERM)."""
    stop = asyncio.Event()
    interrupted = False
    loop = asyncio.get_running_loop()

    def on_signal() -> None:
        nonlocal interrupted
        interrupted = True
        stop.set()

    installed = []
    handlers = {signal.SIGINT: on_signal, signal.SIGTERM: on_signal,
                # The kill switch: no new entries, resting orders cancelled, the run goes on.
                signal.SIGUSR1: lambda: engine.kill("SIGUSR1")}
    for sig, handler in handlers.items():
        try:
            loop.add_signal_handler(sig, handler)
            installed.append(sig)
        except (NotImplementedError, RuntimeError, ValueError):
            pass
    try:
        await engine.start()
        if cycles is None and duration is None:
            duration = None  # run until interrupted
        # A venue with ``exhausted()`` (a replay) ends the run when all such venues are.
        finite = [f for v in engine.venues.values()
                  if callable(f := getattr(v, "exhausted", None))]

        def on_cycle(engine: Engine, cycle: int) -> None:
            status.update(engine, cycle)
            if finite and all(exhausted() for exhausted in finite):
                stop.set()

        await engine.run(cycles=cycles, duration=duration, stop=stop, interval=interval,
                         on_cycle=on_cycle)
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)
        await engine.close()  # waits for trades in flight; nothing is left resting
    return interrupted


class _StatusLine:
    """A one-line live status on a terminal, redrawn at most 10 times a second."""

    def __init__(self, stream: TextIO, enabled: bool):
        self.stream = stream
        self.enabled = enabled
        self._last = 0.0

    def update(self, engine: Engine, cycle: int) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if now - self._last < 0.1:
            return
        self._last = now
        s = engine.statistics()
        self.stream.write(
            f"\r\x1b[2Kcycle {cycle}  opportunities {s.opportunities}  committed {s.committed}"
            f"  rolled back {s.rolled_back}  rejected {s.rejected}  PnL {s.realised_pnl:.4f}")
        self.stream.flush()

    def clear(self) -> None:
        if self.enabled:
            self.stream.write("\r\x1b[2K")
            self.stream.flush()
