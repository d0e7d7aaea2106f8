"""Registers ``pr3dict sim SCENARIO [--host H] [--port N]``."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

from pr3dict_core import hookimpl
from pr3dict_core.model import Pr3dictError


@hookimpl
def pr3dict_add_commands(subparsers):  # type: ignore[no-untyped-def]
    p = subparsers.add_parser(
        "sim", help="serve a scenario as a Polymarket CLOB + Kalshi API simulator")
    p.add_argument("scenario", type=Path, help="scenario file (see docs/venues.md)")
    p.add_argument("--host", default="127.0.0.1", help="listen address (loopback by default)")
    p.add_argument("--port", type=int, default=8765, help="port; 0 picks a free one")
    p.add_argument("--duration", type=float, metavar="SECONDS",
                   help="stop after SECONDS (default: until interrupted)")
    p.set_defaults(handler=run_sim)


def run_sim(args, ctx) -> int:  # type: ignore[no-untyped-def]
    from .server import SimServer

    if not args.scenario.exists():
        raise Pr3dictError(f"no such scenario file: {args.scenario}")
    server = SimServer.from_file(args.scenario, host=args.host, port=args.port)

    async def serve() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, stop.set)
            except (NotImplementedError, RuntimeError, ValueError):
                pass
        await server.start()
        out = ctx.stdout
        print(f"pr3dict sim: listening on {server.url}", file=out)
        print(f"  polymarket  rest {server.polymarket_url}  ws {server.polymarket_ws}", file=out)
        print(f"  kalshi      rest {server.kalshi_url}  ws {server.kalshi_ws}", file=out)
        print(f"  markets     {len(server.polymarket.markets)}; accounts "
              f"{', '.join(a.name for a in server.accounts) or '(auto-registered)'}", file=out)
        out.flush()
        try:
            if args.duration is not None:
                try:
                    await asyncio.wait_for(stop.wait(), args.duration)
                except TimeoutError:
                    pass
            else:
                await stop.wait()
        finally:
            await server.stop()
            routes = ", ".join(f"{r} x{n}" for r, n in sorted(server.requests.items()))
            print(f"pr3dict sim: served {routes or 'nothing'}", file=out, flush=True)

    asyncio.run(serve())
    return 0
