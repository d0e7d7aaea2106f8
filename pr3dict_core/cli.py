"""The ``pr3dict`` command. ``main(argv) -> int`` is pure and testable; ``run()`` exits.

Exit codes: 0 ok, 1 run failed, 2 bad usage, 78 bad configuration, 130 interrupted (SIGINT),
141 output closed (a broken pipe), 143 terminated (SIGTERM).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import math
import os
import signal
import sys
import time
from collections.abc import Mapping, Sequence
from decimal import Decimal
from importlib import metadata
from pathlib import Path
from typing import Any, NoReturn, TextIO

import attrs
import pluggy
from opentelemetry import trace

from . import logs
from . import telemetry as tm
from .components import KINDS, ComponentRegistry, DuplicateComponent
from .config import (
    EX_CONFIG,
    ComponentSpec,
    ConfigError,
    ConfigProblem,
    Mode,
    PipelineConfig,
    load_pipelines,
    references,
)
from .journal import Journal, JournalError
from .model import Pr3dictError, TradeState
from .pipeline import Engine, build_components, new_run_id, open_journal
from .plugins import (
    COMMANDS,
    PluginIndexError,
    PluginManager,
    UsageError,
    collect_components,
    make_plugin_manager,
    plugin_distributions,
)
from .stores import StoreError, redact_url, sqlite_path

EX_OK, EX_FAILED, EX_USAGE, EX_INTERRUPTED, EX_PIPE = 0, 1, 2, 130, 141

log = logging.getLogger("pr3dict.cli")

DESCRIPTION = """\
Execute arbitrage on prediction markets (Polymarket, Kalshi, and the built-in paper
venue). A pipeline is a TOML file naming the venues to read, the detectors that find
opportunities, the risk gates that approve trades, how orders are executed, and where
metrics and traces go (docs/pipeline-reference.md). `pr3dict validate` checks one without
trading; `pr3dict run` trades it (paper mode unless the file says mode = "live" and you
pass --live)."""

EPILOG = """\
exit codes: 0 ok; 1 the run failed (or ended with unresolved trades); 2 bad usage;
78 bad pipeline (every problem listed with its TOML path, nothing was run);
130 interrupted (Ctrl-C); 141 output closed (broken pipe); 143 terminated (SIGTERM)"""


@attrs.frozen
class CommandContext:
    """What a subcommand handler gets besides its parsed arguments."""

    pm: pluggy.PluginManager
    registry: ComponentRegistry
    stdout: TextIO
    stderr: TextIO
    tracer_provider: trace.TracerProvider | None = None


def _plugin_options(argv: Sequence[str]) -> list[str]:
    """The ``-p`` values (before or after the subcommand): they build the plugin manager,
    which adds subcommands, so they are read before argparse runs."""
    out, i = [], 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            break
        if arg == "-p" and i + 1 < len(argv):
            out.append(argv[i + 1])
            i += 2
            continue
        if arg.startswith("-p") and len(arg) > 2:
            out.append(arg[2:])
        i += 1
    return out


def _count(text: str) -> int:
    """A positive integer (argparse type)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _seconds(text: str) -> float:
    """A positive, finite number of seconds (argparse type)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(value) or not 0 < value <= _YEAR_S:
        raise argparse.ArgumentTypeError(
            f"must be a positive number of seconds up to {_YEAR_S} (366 days), got {text}")
    return value


_YEAR_S = 366 * 86_400


def _common_options(parser: argparse.ArgumentParser, *, top: bool) -> None:
    """Options accepted before and after the subcommand (after it, they override)."""
    default: dict[str, Any] = {} if top else {"default": argparse.SUPPRESS}
    parser.add_argument("-p", dest="plugins", action="append", metavar="NAME",
                        help="load plugin module NAME, or block plugin NAME with no:NAME "
                             "(repeatable)", **({"default": []} if top else default))
    parser.add_argument("--log-level", choices=logs.LEVELS,
                        help="lowest level of pr3dict's log records shown on stderr "
                             "(default: warning)", **({"default": "warning"} if top else default))
    parser.add_argument("--log-format", choices=logs.FORMATS,
                        help="text lines, or one JSON object per line with time, level, "
                             "logger, message, run and trade ids (default: text)",
                        **({"default": "text"} if top else default))


def build_parser(pm: pluggy.PluginManager | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pr3dict", description=DESCRIPTION, epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}",
                        help="print the installed pr3dict version and exit")
    _common_options(parser, top=True)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run a pipeline (paper, or live with --live)",
                         description="Run a pipeline until its cycles or duration are done, "
                                     "or until Ctrl-C (exit 130) or SIGTERM (exit 143); trades "
                                     "in flight are finished first. SIGUSR1 is the kill "
                                     "switch: no new entries, the run goes on.")
    run.add_argument("pipeline", type=Path, help="the pipeline file (TOML)")
    run.add_argument("--cycles", type=_count, metavar="N",
                     help="stop after N detect cycles (overrides [pipeline] cycles)")
    run.add_argument("--duration", type=_seconds, metavar="SECONDS",
                     help="stop after SECONDS (overrides [pipeline] duration_s)")
    run.add_argument("--live", action="store_true",
                     help="allow live trading (the pipeline must also say mode = \"live\")")
    run.add_argument("--run-id", help="use this run id instead of a new one")
    run.add_argument("--engine-id", metavar="ID",
                     help="this engine's name among engines sharing a journal (default: "
                          "HOST/PIPELINE); a restart with the same id recovers its trades")
    run.add_argument("--quiet", action="store_true", help="no live status line on a terminal")

    validate = sub.add_parser(
        "validate", help="check pipeline files without trading; exit 78 on problems",
        description="Load and check pipeline files, build their components, and (unless "
                    "--no-environment) start their RPC providers and venues and check what "
                    "they report, as `run` does before its first trade. Nothing is traded, "
                    "no journal or output file is written.")
    validate.add_argument("pipelines", type=Path, nargs="+", metavar="pipeline",
                          help="pipeline files (TOML)")
    validate.add_argument("--no-environment", action="store_true",
                          help="do not start venues, RPC providers or settlers (no network)")

    graph = sub.add_parser("graph", help="print a pipeline's wiring")
    graph.add_argument("pipeline", type=Path, help="the pipeline file (TOML)")
    graph.add_argument("--format", choices=["dot", "text"], default="dot",
                       help="Graphviz dot (default) or an indented text list")

    sub.add_parser("plugins", help="list plugins, their distributions and components")

    journal = sub.add_parser("journal", help="show the trades a pipeline's journal holds")
    journal.add_argument("target", metavar="TARGET",
                         help="a pipeline file, a journal .sqlite file, or a postgresql:// "
                              "url (the password from PGPASSWORD or ~/.pgpass)")
    journal.add_argument("--state", choices=[s.value for s in TradeState], metavar="STATE",
                         help="only trades in STATE: " + ", ".join(s.value for s in TradeState))
    journal.add_argument("--limit", type=_count, default=50, metavar="N",
                         help="show at most N trades, newest first (default: 50)")
    journal.add_argument("--trade", metavar="ID", help="show one trade with its legs and orders")
    if pm is not None:
        load_providing = getattr(pm, "load_providing", None)
        if load_providing is not None:  # plugins that add commands are imported for them
            load_providing(COMMANDS)
        pm.hook.pr3dict_add_commands(subparsers=sub)
    for command in sub.choices.values():
        if "-p" not in command._option_string_actions:
            _common_options(command, top=False)
    return parser


def _version() -> str:
    """The installed distribution's version (the one pip reports), not a constant in code."""
    try:
        return metadata.version("pr3dict")
    except metadata.PackageNotFoundError:  # imported from a checkout that is not installed
        return "unknown (not installed)"


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
        parser = build_parser(pm)  # imports the plugins that add commands
    except (UsageError, DuplicateComponent, PluginIndexError, ImportError) as exc:
        print(f"pr3dict: {exc}", file=err)
        return EX_CONFIG
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0) and EX_USAGE
    undo_logging = logs.configure(args.log_level, args.log_format, err)
    try:
        return _dispatch(args, pm, registry, tracer_provider, out, err)
    finally:
        undo_logging()


def _dispatch(args: argparse.Namespace, pm: pluggy.PluginManager, registry: ComponentRegistry,
              tracer_provider: trace.TracerProvider | None, out: TextIO, err: TextIO) -> int:
    try:
        handler = getattr(args, "handler", None)
        if handler is not None:
            return int(handler(args, CommandContext(pm, registry, out, err, tracer_provider)))
        if args.command == "plugins":
            return cmd_plugins(pm, registry, out)
        if args.command == "journal":
            return cmd_journal(args, registry, out, err, pm)
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
    """The console script. A reader that stops early (``pr3dict ... | head``) is no error."""
    try:
        code = main()
        sys.stdout.flush()
    except BrokenPipeError:
        # Python would complain again when it flushes stdout at exit: point it at devnull.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        code = EX_PIPE
    raise SystemExit(code)


# --------------------------------------------------------------------------- plugins


def cmd_plugins(pm: pluggy.PluginManager, registry, out: TextIO) -> int:  # type: ignore[no-untyped-def]
    """Plugins and what they provide, from the entry-point index where it says (no import)."""
    dists = plugin_distributions(pm)
    by_plugin = registry.by_plugin()
    commands: dict[str, list[str]] = {}
    names = pm.plugin_names() if isinstance(pm, PluginManager) else [
        n for n in (pm.get_name(p) for p in pm.get_plugins()) if n]
    for name, spec in getattr(pm, "indexed", {}).items():
        commands[name] = [f"command:{c}" for k, c in spec.provides if k == COMMANDS]
    rows = []
    for name in sorted(names):
        dist, version = dists.get(name, ("-", "-"))
        comps = ", ".join([f"{KINDS[r.kind]}:{r.name}" for r in sorted(
            by_plugin.get(name, []), key=lambda r: (r.kind, r.name))]
            + sorted(commands.get(name, []))) or "-"
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
                err: TextIO, pm: pluggy.PluginManager) -> int:
    """Read a journal (while a run writes it, too): its trades, or one trade; the engines
    sharing it, the instruments each holds and the capital books."""
    target: str = args.target
    try:
        if target.endswith(".toml"):
            config = load_pipelines([Path(target)], registry)[0]
            journal = open_journal(config, pm, read_only=True)
            if journal is None:
                print(f"pr3dict: {target} keeps no journal ([journal] url = \"\")", file=err)
                return EX_FAILED
        else:
            journal = Journal(target, read_only=True)
    except (StoreError, JournalError) as exc:
        print(f"pr3dict: {exc}", file=err)
        return EX_FAILED
    try:
        if args.trade:
            _show_trade(journal, args.trade, out)
            return EX_OK
        rows = journal.trades(limit=args.limit, state=args.state)
        engines = journal.engines()
        print(f"{'trade':<30} {'state':<12} {'strategy':<10} "
              + (f"{'engine':<24} " if len(engines) > 1 else "") + "note", file=out)
        for r in rows:
            print(f"{r['id']:<30} {r['state']:<12} {r['strategy']:<10} "
                  + (f"{r['engine_id']:<24} " if len(engines) > 1 else "")
                  + f"{r['error'] or r['reject_reason']}", file=out)
        placeholders = ",".join("?" * 3)
        open_count = journal.query(
            f"SELECT count(*) FROM trades WHERE state NOT IN ({placeholders})",
            ("committed", "rolled_back", "rejected"))[0][0]
        print(f"{len(rows)} shown; {open_count} not final", file=out)
        _show_engines(journal, engines, out)
    except KeyError as exc:
        print(f"pr3dict: no trade {exc} in {journal.where}", file=err)
        return EX_FAILED
    finally:
        journal.close()
    return EX_OK


def _show_trade(journal: Journal, trade_id: str, out: TextIO) -> None:
    trade = journal.load_trade(trade_id)
    owner = journal.query("SELECT engine_id FROM trades WHERE id = ?", (trade_id,))[0][0]
    print(f"trade {trade.id}  {trade.state.value}  {trade.opportunity.kind}  "
          f"size {trade.opportunity.size}  engine {owner or '-'}", file=out)
    if trade.reject_reason:
        print(f"  rejected: {trade.reject_reason}", file=out)
    if trade.error:
        print(f"  error: {trade.error}", file=out)
    for leg in trade.all_legs:
        print(f"  leg {leg.index} {leg.purpose:<8} {leg.side.value:<4} {leg.instrument:<28}"
              f" {leg.state.value:<16} filled {leg.filled}/{leg.size}"
              f" avg {leg.average_price or '-'}"
              + (f"  error: {leg.error}" if leg.error else ""), file=out)
        for cid, ref in leg.orders.items():
            venue_id = f"  venue id {ref.venue_order_id}" if ref.venue_order_id else ""
            print(f"      order {cid}{venue_id}", file=out)


def _show_engines(journal: Journal, engines: list[dict[str, Any]], out: TextIO) -> None:
    """Which engine is alive, which instruments each holds, and the capital books."""
    if engines:
        print("\nengines", file=out)
        for e in engines:
            left = e["lease_left_s"]
            lease = f"lease {left:.1f} s left" if left > 0 else "lease expired"
            print(f"  {e['engine_id']:<30} pid {e['pid']:<7} on {e['host']:<16} "
                  f"run {e['run_id']:<22} {lease}", file=out)
    leases = journal.leases()
    if leases:
        print(f"\nleases ({len(leases)})", file=out)
        for venue, instrument, engine_id, trade_id in leases:
            print(f"  {venue}:{instrument:<40} {engine_id:<30} trade {trade_id}", file=out)
    books = journal.query("SELECT name FROM capital_books ORDER BY name")
    if books:
        print("\ncapital books", file=out)
        for (name,) in books:
            state = journal.book(name)
            assert state is not None
            bankroll, used, reserved = state
            print(f"  {name:<16} bankroll {bankroll} USDC  reserved now {reserved}  "
                  f"available {bankroll - used}", file=out)


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
# validate builds them to check what they read (scenario, mapping and key files). Sinks are
# not built: they open their files and ports when built.
_CHECKED_KINDS = ("rpc", "venues", "detectors", "gates", "settlers")


async def _check_components(config: PipelineConfig, registry, pm, *,  # type: ignore[no-untyped-def]
                            environment: bool) -> str:
    """Build the side-effect-free components and the strategy; with ``environment``, also
    start the RPC providers and venues, bind the detectors to the markets they report (and
    to their capital gates), and run each settler's read-only ``check()`` (contracts and
    conditions on chain): what ``run`` checks before its first trade.

    A PostgreSQL journal is connected to (read only). Nothing else is built (no journal
    written, no sinks, no recovery): validating never trades.
    """
    components, ctx = build_components(config, registry, pm, kinds=_CHECKED_KINDS)
    strategy = registry.get("strategies", config.execution.strategy)
    assert strategy is not None
    strategy.cls.from_config(config.execution.strategy, config.strategy_options, ctx)
    if not environment:
        return ""
    if config.journal.shared:  # the shared journal is reachable with these credentials
        try:
            journal = open_journal(config, pm, read_only=True)
        except JournalError as exc:
            if "schema version" not in str(exc):  # a database no engine has used yet
                return f"journal.url: {exc}"
        except StoreError as exc:
            return f"journal.url: {exc}"
        else:
            if journal is not None:
                journal.close()
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
        for cid, settler in components["settlers"].items():
            check = getattr(settler, "check", None)
            if check is not None:
                try:
                    await asyncio.wait_for(check(), 30)
                except Exception as exc:
                    return f"settlers.{cid}: {type(exc).__name__}: {exc}"
        return ""
    finally:
        for component in reversed(started):
            try:
                await component.close()
            except Exception:  # closing is best effort here; the check already answered
                pass


def _venue_refs(spec: ComponentSpec) -> list[str]:
    """The venues a component's options refer to (for a detector: the books it reads)."""
    return [rid for _, target, rid in references(spec.options) if target.kind == "venues"]


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
            lines.append(f"  detector {d.id} [{d.type}] <- {', '.join(_venue_refs(d))}")
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
        for vid in _venue_refs(d):
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
    for r in config.section("rpc").values():
        out.append(f'  "rpc.{r.id}" [label="{r.id}\\n{r.type}", shape=cylinder];')
    # Every other declared reference (a capital gate, an RPC provider, watched venues).
    for kind, specs in config.components.items():
        for spec in specs.values():
            for key, target, rid in references(spec.options):
                if kind == "detectors" and target.kind == "venues":
                    continue  # drawn above as the books it reads
                out.append(f'  "{kind}.{spec.id}" -> "{target.kind}.{rid}" '
                           f'[label="{key.split("[")[0]}", style=dashed];')
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
                                    run_id=run_id, engine_id=args.engine_id)
    except BaseException:
        if owned_provider is not None:  # nothing ran: nothing to flush, no file left
            owned_provider.shutdown()
        raise
    cycles = args.cycles if args.cycles is not None else config.pipeline.cycles
    duration = args.duration if args.duration is not None else config.pipeline.duration_s
    status = _StatusLine(err, enabled=not args.quiet and err.isatty())
    code, interrupted = EX_OK, 0
    token = logs.RUN_ID.set(run_id)
    started = time.monotonic()
    try:
        # A replay runs on a loop whose time is the recording's (Engine.loop_factory).
        with asyncio.Runner(loop_factory=engine.loop_factory()) as runner:
            interrupted = runner.run(_run_engine(
                engine, cycles, duration, config.pipeline.interval_ms / 1000, status, err,
                f"pr3dict: run {run_id} of {config.pipeline.name} ({config.pipeline.mode})"))
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
    except Exception as exc:  # a bug: say so loudly, but still flush and summarise
        print(f"pr3dict: run failed with an internal error: {type(exc).__name__}: {exc}",
              file=err)
        # The traceback is a log record (one JSON object with --log-format json).
        log.error("run failed with an internal error", exc_info=True)
        code = EX_FAILED
        summary = engine.statistics()
    finally:
        elapsed = time.monotonic() - started
        logs.RUN_ID.reset(token)
        status.clear()
        if owned_provider is not None:
            owned_provider.force_flush()
            owned_provider.shutdown()
    print(_with_duration(summary.table(), elapsed), file=out)
    for line in _outputs(engine, config, run_id,
                         getattr(owned_provider, "pr3dict_exporter", None)):
        print(line, file=err)
    if engine.halted:
        print(f"pr3dict: halted: {engine.halted}", file=err)
    if interrupted:
        code = 128 + interrupted  # 130 for SIGINT, 143 for SIGTERM, as a shell reports them
    elif engine.fatal:
        print(f"pr3dict: run failed: {engine.fatal}", file=err)
        code = EX_FAILED
    elif summary.unresolved:
        code = EX_FAILED
    return code


def hedge(held: dict[tuple[str, str], Decimal], sets: list[tuple[tuple[str, str], ...]]
          ) -> tuple[Decimal, dict[tuple[str, str], Decimal]]:
    """Hedged sets among the positions (each set pays 1 at resolution), and what is left.

    Greedy in the order given: a market's own YES + NO first, then the detectors' sets.
    """
    left = dict(held)
    hedged = Decimal(0)
    for legs in sets:
        if len(set(legs)) != len(legs):
            continue
        size = min((left.get(leg, Decimal(0)) for leg in legs), default=Decimal(0))
        if size <= 0:
            continue
        hedged += size
        for leg in legs:
            left[leg] -= size
    return hedged, {k: q for k, q in left.items() if q}


def _number(value: Decimal) -> str:
    """A share count without trailing zeros (200, not 200.00)."""
    return f"{value.normalize():f}"


def _with_duration(table: str, seconds: float) -> str:
    """The summary table with the run's wall-clock duration as its last row."""
    body, rule = table.rsplit("\n", 1)
    width = len(rule) - 22
    return f"{body}\n{'run duration':<{width}}  {_duration(seconds):>18}\n{rule}"


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.2f} s"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"


def _outputs(engine: Engine, config: PipelineConfig, run_id: str,
             exporter: Any = None) -> list[str]:
    """Where this run wrote things, and how to read them."""
    cwd = Path.cwd()

    def show(path: Path) -> str:
        return str(path.relative_to(cwd)) if path.is_relative_to(cwd) else str(path)

    lines = []
    held: dict[tuple[str, str], Decimal] = {}
    sets: list[tuple[tuple[str, str], ...]] = []
    for vid, venue in engine.venues.items():
        try:
            positions = {i: Decimal(q) for i, q in venue.positions().items() if q}
            sets += [((vid, m.yes), (vid, m.no)) for m in venue.markets()]
        except Exception:  # a venue that cannot say (closed connection) is not reported
            continue
        held.update({(vid, i): q for i, q in positions.items()})
        total = sum(positions.values(), Decimal(0))
        lines.append(f"  venue    {vid}: {_number(total)} shares held in {len(positions)} "
                     f"instrument(s)")
    for detector in engine.detectors:
        extra = getattr(detector, "hedge_sets", None)
        if extra is not None:
            sets += extra()
    if held:
        hedged, rest = hedge(held, sets)
        unhedged = sum((abs(q) for q in rest.values()), Decimal(0))
        worst = ", ".join(f"{v} {i} {_number(q)}" for (v, i), q in sorted(
            rest.items(), key=lambda kv: -abs(kv[1]))[:3])
        lines.append(f"  hedged   {_number(hedged)} set(s), paying {_number(hedged)} USDC at "
                     f"resolution; {_number(unhedged)} unhedged share(s)"
                     + (f" ({worst}{', ...' if len(rest) > 3 else ''})" if rest else ""))
    for sink in engine.sinks:
        path = getattr(sink, "path", None)
        if isinstance(path, Path) and path.exists():
            # `pr3dict report` reads the jsonl sink's format; other files are only named.
            hint = f"   (pr3dict report {run_id})" if getattr(sink, "type", "") == "jsonl" else ""
            lines.append(f"  {'metrics' if hint else 'output':<8} {show(path)}{hint}")
    if config.telemetry.exporter == "jsonl":
        spans = Path(config.telemetry.path.replace("{run_id}", run_id)).absolute()
        if spans.exists():
            lines.append(f"  spans    {show(spans)}")
    elif config.telemetry.exporter == "otlp":
        report = getattr(exporter, "report", None)  # what the exporter really managed
        where = report() if report else f"to {tm.otlp_traces_endpoint(config.telemetry)}"
        lines.append(f"  spans    {where}")
    url = config.journal.resolved_url(config.pipeline.name)
    if config.journal.shared:
        lines.append(f"  journal  {redact_url(url)}   (engine {engine.engine_id})")
    elif url:
        journal = Path(sqlite_path(url))
        lines.append(f"  journal  {show(journal.absolute())}   (pr3dict journal {show(journal)})")
    return lines


async def _run_engine(engine: Engine, cycles: int | None, duration: float | None,
                      interval: float, status: _StatusLine, err: TextIO, banner: str) -> int:
    """Run until done or interrupted; returns the signal number that stopped it, or 0.

    ``banner`` is printed once the signal handlers are in place: a supervisor (or a test)
    that waits for it knows SIGINT and SIGTERM now stop the run cleanly.
    """
    stop = asyncio.Event()
    interrupted = 0
    started = False
    kills: list[str] = []  # kill switch signals that came before the engine had started
    loop = asyncio.get_running_loop()

    def on_kill() -> None:
        if started:
            engine.kill("SIGUSR1")
        else:
            kills.append("SIGUSR1")

    def on_signal(signum: int) -> None:
        nonlocal interrupted
        status.clear()
        name = signal.Signals(signum).name
        if interrupted:
            print(f"pr3dict: {name} again: still finishing; trades in flight end within "
                  f"their deadline, then the venues close", file=err, flush=True)
            return
        interrupted = signum
        in_flight = len(engine._tasks)
        print(f"pr3dict: {name}: stopping: no new trades; finishing {in_flight} trade(s) in "
              f"flight and cancelling what rests, then closing the venues and writing the "
              f"summary", file=err, flush=True)
        stop.set()

    installed = []
    failed = False
    handlers = {signal.SIGINT: lambda: on_signal(signal.SIGINT),
                signal.SIGTERM: lambda: on_signal(signal.SIGTERM),
                # The kill switch: no new entries, resting orders cancelled, the run goes on.
                signal.SIGUSR1: on_kill}
    for sig, handler in handlers.items():
        try:
            loop.add_signal_handler(sig, handler)
            installed.append(sig)
        except (NotImplementedError, RuntimeError, ValueError):
            pass
    print(banner, file=err, flush=True)
    log.info("%s", banner.removeprefix("pr3dict: "))
    halts = _HaltLog()

    def on_cycle(engine: Engine, cycle: int) -> None:
        halts.update(engine.halts)
        status.update(engine, cycle)

    try:
        await engine.start()
        started = True
        from . import launch

        if signal.SIGUSR1 in launch.pending:  # sent before the event loop could take it
            launch.pending.clear()
            kills.append("SIGUSR1")
        for reason in kills:
            engine.kill(reason)
        # A venue with ``exhausted()`` (a replay) ends the run when all such venues are.
        finite = [f for v in engine.venues.values()
                  if callable(f := getattr(v, "exhausted", None))]

        def until_exhausted(engine: Engine, cycle: int) -> None:
            on_cycle(engine, cycle)
            if finite and all(exhausted() for exhausted in finite):
                stop.set()

        await engine.run(cycles=cycles, duration=duration, stop=stop, interval=interval,
                         on_cycle=until_exhausted)
    except BaseException:
        failed = True
        raise
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)
        # Waits for trades in flight (nothing is left resting); run_finish fires there.
        await engine.close(exit_code=128 + interrupted if interrupted else
                           EX_FAILED if failed else None)
    return interrupted


class _HaltLog:
    """Logs each cause of a halt of new entries when it appears and when it is lifted."""

    def __init__(self) -> None:
        self._seen: dict[str, str] = {}

    def update(self, typed: Mapping[tuple[str, str], Any]) -> None:
        halts = {f"{cause}:{subject}": h.reason for (cause, subject), h in typed.items()}
        if halts == self._seen:
            return
        for cause, reason in halts.items():
            if cause not in self._seen:
                log.warning("halted: %s", reason)
        for cause, reason in self._seen.items():
            if cause not in halts:
                log.warning("halt lifted: %s", reason)
        self._seen = dict(halts)


class _StatusLine:
    """A one-line live status on a terminal, redrawn at most 10 times a second."""

    def __init__(self, stream: TextIO, enabled: bool):
        self.stream = stream
        self.enabled = enabled
        self._last = 0.0
        self._started = time.monotonic()

    def update(self, engine: Engine, cycle: int) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if now - self._last < 0.1:
            return
        self._last = now
        s = engine.statistics()
        elapsed = now - self._started
        rate = cycle / elapsed if elapsed > 0 else 0.0
        halted = f"  HALTED ({len(engine.halts)})" if engine.halts else ""
        self.stream.write(
            f"\r\x1b[2K{_duration(elapsed)}  cycle {cycle} ({rate:.0f}/s)  opportunities "
            f"{s.opportunities}  committed {s.committed}  rolled back {s.rolled_back}  "
            f"rejected {s.rejected}  unresolved {s.unresolved}  PnL {s.realised_pnl:.4f}"
            f"{halted}")
        self.stream.flush()

    def clear(self) -> None:
        if self.enabled:
            self.stream.write("\r\x1b[2K")
            self.stream.flush()
