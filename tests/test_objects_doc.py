"""docs/objects.md lists every field of every object a hook or component receives, and the
run's output lines name sink files the way it says."""

from __future__ import annotations

import importlib
import re
from pathlib import Path
from typing import ClassVar

import attrs
import pytest
from support import MINIMAL, REPO

from pr3dict_core import hookimpl

DOC = (REPO / "docs" / "objects.md").read_text()
SECTIONS = {name: (module, body) for name, module, body in re.findall(
    r"^## (\w+)\n\n`from ([\w.]+) import \1`(.*?)(?=^## |\Z)", DOC, re.M | re.S)}
EXPECTED = {"Book", "Level", "Market", "LegSpec", "Opportunity", "Trade", "Leg", "Fill",
            "OrderRequest", "OrderAck", "TradeRecord", "LegRecord", "RunSummary",
            "GateDecision", "BuildContext", "SecretRef"}


def test_objects_doc_covers_every_object():
    assert set(SECTIONS) == EXPECTED


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_objects_doc_lists_every_field(name):
    module, body = SECTIONS[name]
    cls = getattr(importlib.import_module(module), name)  # the import line works
    listed = re.findall(r"^\| `(\w+)` \|", body, re.M)
    assert listed == [f.name for f in attrs.fields(cls)], f"docs/objects.md, {name}"


class FileSink:
    """A sink writing its own file: named after the run, but not offered to pr3dict report."""

    type: ClassVar[str] = "counts"

    @attrs.frozen(kw_only=True)
    class Config:
        path: str = "runs/{run_id}/counts.txt"

    def __init__(self, id, path):
        self.id, self.path, self.n = id, path, 0

    @classmethod
    def from_config(cls, id, config, ctx):
        return cls(id, ctx.output_path(config.path))

    def record(self, record):
        self.n += 1

    async def close(self, summary):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(f"{self.n}\n")


class FileSinkPlugin:
    @hookimpl
    def pr3dict_register_metrics_sinks(self, registry):
        registry.add(FileSink)


def test_run_offers_report_only_for_the_jsonl_sink(write_pipeline, run_pr3dict,
                                                   register_plugin, tmp_path):
    register_plugin(FileSinkPlugin(), name="file-sink")
    pipeline = write_pipeline(MINIMAL + """
[sinks.counts]
type = "counts"

[sinks.metrics]
type = "jsonl"
""")
    err = run_pr3dict("run", str(pipeline), "--run-id", "r1").assert_success().err
    assert Path(tmp_path / "runs" / "r1" / "counts.txt").exists()
    assert "  output   runs/r1/counts.txt\n" in err
    assert "  metrics  runs/r1/metrics.jsonl   (pr3dict report r1)\n" in err
