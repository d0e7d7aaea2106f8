"""Built-in risk gates."""

from pr3dict_core import hookimpl

from .capital import CapitalGate
from .position import MaxPositionGate


@hookimpl
def pr3dict_register_risk_gates(registry):  # type: ignore[no-untyped-def]
    registry.add(CapitalGate, MaxPositionGate)
