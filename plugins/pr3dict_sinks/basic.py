"""``memory`` and ``jsonl`` metrics sinks."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, ClassVar

import attrs
from attrs import frozen

from pr3dict_core.components import BuildContext
from pr3dict_core.config import output
from pr3dict_core.metrics import TradeRecord

from .collector import MetricsCollector


class MemorySink:
    """Keeps every trade record in memory (tests, notebooks, the Python API).

    ``collector`` is a :class:`MetricsCollector` over the same records: ``get_summary()``,
    ``strategy_performance()``, ``recent_trades()``, ``export()``. With ``export`` set, the
    collector's summary is written there when the run closes (json, jsonl or csv by suffix).
    """

    type: ClassVar[str] = "memory"

    @frozen(kw_only=True)
    class Config:
        max_records: int | None = attrs.field(default=None, validator=attrs.validators.optional(
            attrs.validators.ge(1)))
        export: str | None = output(default=None)  # written at close; {run_id} is replaced

    def __init__(self, id: str, config: Config | None = None, export: Any = None):
        self.id = id
        self.config = config or self.Config()
        self.records: list[TradeRecord] = []
        self.summary: Mapping[str, Any] | None = None
        self.collector = MetricsCollector(max_records=self.config.max_records or 100_000)
        self.export_path = export

    @classmethod
    def from_config(cls, id: str, config: Config, ctx: BuildContext) -> MemorySink:
        export = ctx.output_path(config.export) if config.export is not None else None
        return cls(id, config, export)

    def record(self, record: TradeRecord) -> None:
        self.records.append(record)
        self.collector.record(record)
        limit = self.config.max_records
        if limit is not None and len(self.records) > limit:
            del self.records[: len(self.records) - limit]

    async def close(self, summary: Mapping[str, Any]) -> None:
        self.summary = summary
        self.collector.run_summary = summary
        if self.export_path is not None:
            self.collector.export(self.export_path)


class JsonLinesSink:
    """One JSON object per finished trade (``{"trade": ...}``), then ``{"summary": ...}``.

    Lines are written as trades finish, so a crashed run keeps what it recorded;
    ``{run_id}`` in the path is replaced by the run's id.
    """

    type: ClassVar[str] = "jsonl"

    @frozen(kw_only=True)
    class Config:
        path: str = output(default="runs/{run_id}/metrics.jsonl")

    def __init__(self, id: str, path: Any):
        self.id = id
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = path.open("a", encoding="utf-8")

    @classmethod
    def from_config(cls, id: str, config: Config, ctx: BuildContext) -> JsonLinesSink:
        return cls(id, ctx.output_path(config.path))

    def record(self, record: TradeRecord) -> None:
        self._file.write(json.dumps({"trade": record.to_json()}, separators=(",", ":")) + "\n")

    async def close(self, summary: Mapping[str, Any]) -> None:
        if self._file.closed:
            return
        self._file.write(json.dumps({"summary": summary}, separators=(",", ":")) + "\n")
        self._file.close()
