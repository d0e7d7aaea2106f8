"""``pr3dict record PIPELINE``: the public market data of a pipeline's venues, to a file."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from pathlib import Path
from typing import Any

from pr3dict_core.config import EX_CONFIG, ConfigError, SecretRef, load_pipelines
from pr3dict_kalshi import protocol as kp

from .decode import VENUE_TYPES
from .feeds import Feed
from .format import SUFFIX, RecordingWriter


def run_record(args: Any, ctx: Any) -> int:
    try:
        config = load_pipelines([args.pipeline], ctx.registry)[0]
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=ctx.stderr)
        return EX_CONFIG
    specs = [s for s in config.section("venues").values() if s.type in VENUE_TYPES]
    if not specs:
        print(f"{config.file}: venues: no polymarket or kalshi venue to record", file=ctx.stderr)
        return EX_CONFIG
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    out = args.out or Path("recordings") / f"{config.pipeline.name}-{stamp}{SUFFIX}"
    if out.exists():
        print(f"pr3dict record: {out} exists; a recording is never overwritten", file=ctx.stderr)
        return EX_CONFIG
    return asyncio.run(_record(args, ctx, config, specs, out))


async def _record(args: Any, ctx: Any, config: Any, specs: list[Any], out: Path) -> int:
    writer: RecordingWriter | None = None
    pending: list[Any] = []

    def emit(record: dict[str, Any]) -> None:
        if writer is not None:
            writer.write(record)

    feeds = [Feed(s.id, s.type, s.options, emit, snapshot_s=args.snapshot_s,
                  poll_s=args.poll_ms / 1000, base_dir=config.file.parent,
                  kalshi_key=None if s.type != "kalshi" or args.no_kalshi_ws
                  else _kalshi_key(ctx, config, s))
             for s in specs]

    def on_rotate() -> None:  # each part stands alone: markets, then full books
        for feed in feeds:
            feed.emit_markets()
            pending.append(asyncio.ensure_future(feed.snapshot()))

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, stop.set)
    try:
        await asyncio.gather(*(f.start() for f in feeds))
        writer = RecordingWriter(
            out, {"pipeline": config.pipeline.name,
                  "venues": {f.venue_id: f.venue_type for f in feeds}},
            rotate_bytes=int(args.rotate_mb * 1e6) if args.rotate_mb else None,
            rotate_s=args.rotate_s, on_rotate=on_rotate)
        for feed in feeds:
            feed.emit_markets()
        for feed in feeds:
            await feed.snapshot()
        for feed in feeds:
            feed.stream()
        await asyncio.gather(*(f.ready.wait() for f in feeds))
        print(f"pr3dict record: recording {len(feeds)} venue(s) to {out}", file=ctx.stdout,
              flush=True)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), args.duration)
    finally:
        for feed in feeds:
            await feed.close()
        for task in pending:
            task.cancel()
        if writer is not None:
            writer.close()
    assert writer is not None
    gaps = sum(f.gaps for f in feeds)
    print(f"pr3dict record: {writer.records} records, {writer.raw_bytes} bytes of JSON -> "
          f"{writer.compressed_bytes} compressed, {len(writer.parts)} part(s), {gaps} gap(s)",
          file=ctx.stdout)
    for part in writer.parts:
        print(f"  {part}", file=ctx.stdout)
    return 0


def _kalshi_key(ctx: Any, config: Any, spec: Any) -> tuple[str, Any] | None:
    """The Kalshi key, only to sign the websocket handshake (nothing else is signed);
    without one the feed polls the public REST order books."""
    ref = spec.options.private_key
    if ref.file is not None and not Path(ref.file).is_absolute():
        ref = SecretRef(file=str(config.base_dir / ref.file))
    try:
        text = ctx.pm.hook.pr3dict_resolve_secret(ref=ref)
        return (spec.options.key_id.strip(), kp.load_private_key(text)) if text else None
    except Exception as exc:  # no key: public data only
        print(f"pr3dict record: venue {spec.id}: no usable key ({type(exc).__name__}); "
              "polling the REST order books instead of the websocket", file=ctx.stderr)
        return None
