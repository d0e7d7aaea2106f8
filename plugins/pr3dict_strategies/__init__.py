"""Built-in execution strategies."""

from pr3dict_core import hookimpl

from .limit import HybridStrategy, LimitStrategy
from .market import MarketStrategy


@hookimpl
def pr3dict_register_execution_strategies(registry):  # type: ignore[no-untyped-def]
    registry.add(MarketStrategy, LimitStrategy, HybridStrategy)
