"""Pieces the benchmarks share."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult


class NullExporter(SpanExporter):
    """Counts spans and drops them: the SDK's cost without any I/O."""

    def __init__(self) -> None:
        self.spans = 0

    def export(self, spans: Sequence[object]) -> SpanExportResult:
        self.spans += len(spans)
        return SpanExportResult.SUCCESS


def write_scenario(path: Path, markets: int, *, seed: int, arb_probability: str,
                   move_probability: str, level_size: str = "40") -> None:
    """A paper-venue scenario with ``markets`` markets and light injected faults; with a
    large ``level_size`` the market makers always leave a bid (an unwind can always sell)."""
    lines = [
        f"seed = {seed}", 'fee_rate = "0.02"', "latency_ms = 0", "[process]",
        f'arb_probability = "{arb_probability}"', f'move_probability = "{move_probability}"',
        "spread_ticks = 1", f'level_size = "{level_size}"',
        "[faults]", 'reject_rate = "0.02"', 'partial_fill_rate = "0.02"',
        'timeout_rate = "0.01"',
    ]
    for i in range(markets):
        lines += ["[[markets]]", f'id = "m{i}"', f'fair = "0.{20 + (i * 7) % 60:02d}"']
    path.write_text("\n".join(lines) + "\n")


FLAT_MB_PER_MIN = 0.2  # RSS "flat" over a soak; the leak issue 15's soak found was ~9 MB/min


def slope_per_min(points: Sequence[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, value) points, per minute."""
    n = len(points)
    mean_t = sum(t for t, _ in points) / n
    mean_v = sum(v for _, v in points) / n
    var = sum((t - mean_t) ** 2 for t, _ in points)
    return 60 * sum((t - mean_t) * (v - mean_v) for t, v in points) / var if var else 0.0
