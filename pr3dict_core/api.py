"""The Python API in one import: ``from pr3dict_core.api import Engine, ...``.

Everything in ``__all__`` is public and documented in docs/python-api.md; the modules it
comes from may move, this list is what scripts should import. The built-in components are
included so an engine can be built from Python objects without a pipeline file.
"""

from __future__ import annotations

from pr3dict_detectors.complement import BinaryComplement
from pr3dict_detectors.cross_venue import CrossVenue
from pr3dict_detectors.multi_outcome import MultiOutcome
from pr3dict_gates.capital import CapitalGate
from pr3dict_gates.position import MaxPositionGate
from pr3dict_paper.scenario import load_scenario
from pr3dict_paper.venue import PaperVenue
from pr3dict_sinks.basic import JsonLinesSink, MemorySink
from pr3dict_sinks.collector import MetricsCollector
from pr3dict_strategies.limit import HybridStrategy, LimitStrategy
from pr3dict_strategies.market import MarketStrategy

from .components import GateDecision
from .config import ExecutionSection, PipelineConfig, load_pipeline
from .metrics import LegRecord, RunSummary, TradeRecord
from .model import (
    Book,
    Leg,
    LegSpec,
    LegState,
    Market,
    Opportunity,
    Side,
    Trade,
    TradeState,
)
from .pipeline import Engine, new_run_id
from .plugins import collect_components, make_plugin_manager
from .telemetry import make_tracer_provider

__all__ = [
    "BinaryComplement",
    "Book",
    "CapitalGate",
    "CrossVenue",
    "Engine",
    "ExecutionSection",
    "GateDecision",
    "HybridStrategy",
    "JsonLinesSink",
    "Leg",
    "LegRecord",
    "LegSpec",
    "LegState",
    "LimitStrategy",
    "Market",
    "MarketStrategy",
    "MaxPositionGate",
    "MemorySink",
    "MetricsCollector",
    "MultiOutcome",
    "Opportunity",
    "PaperVenue",
    "PipelineConfig",
    "RunSummary",
    "Side",
    "Trade",
    "TradeRecord",
    "TradeState",
    "collect_components",
    "load_pipeline",
    "load_scenario",
    "make_plugin_manager",
    "make_tracer_provider",
    "new_run_id",
]
