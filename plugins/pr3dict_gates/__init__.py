"""Built-in risk gates."""

from pr3dict_core import hookimpl

from .breakers import DailyLossGate, LossStreakGate
from .capital import CapitalGate
from .connectivity import ConnectivityGate
from .heat import PortfolioHeatGate
from .kill_switch import KillSwitchGate
from .position import MaxPositionGate


@hookimpl
def pr3dict_register_risk_gates(registry):  # type: ignore[no-untyped-def]
    registry.add(CapitalGate, MaxPositionGate, ConnectivityGate, PortfolioHeatGate,
                 LossStreakGate, DailyLossGate, KillSwitchGate)
