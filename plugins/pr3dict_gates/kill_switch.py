"""``kill_switch``: stop new entries on a file or a signal.

The engine already refuses every entry while ``[pipeline] kill_switch_file`` exists (checked
before any gate). This gate complements it:

- ``file``: a second, per-gate path; absolute paths let one file stop every pipeline on a
  host (a desk-wide switch) while each pipeline keeps its own ``kill_switch_file``.
- ``signal = "SIGUSR2"``: once received the gate stays tripped for the rest of the run
  (restart to clear): a signal is an event, not a level. ``SIGUSR1`` is the engine's own
  kill switch under ``pr3dict run`` (it also cancels resting orders), so the gate takes
  ``SIGUSR2``: a softer switch that stops new entries and lets everything else run.

The gate stops *entries* only: trades already executing finish (or roll back) normally.
"""

from __future__ import annotations

import logging
import signal
import threading
import weakref
from pathlib import Path
from typing import Any, ClassVar, Literal

import attrs
from attrs import frozen

from pr3dict_core.components import BuildContext, GateDecision
from pr3dict_core.model import Trade

log = logging.getLogger("pr3dict.gates.kill_switch")

# One process-wide handler per signal number, fanning out to every live gate listening.
_LISTENERS: dict[int, weakref.WeakSet[KillSwitchGate]] = {}
_PREVIOUS: dict[int, Any] = {}


def _handler(signum: int, frame: Any) -> None:
    for gate in list(_LISTENERS.get(signum, ())):
        gate.trip(f"signal {signal.Signals(signum).name} received")
    previous = _PREVIOUS.get(signum)
    if callable(previous):
        previous(signum, frame)


def _listen(gate: KillSwitchGate, signum: int) -> bool:
    if threading.current_thread() is not threading.main_thread():
        return False
    if signum not in _LISTENERS:
        _PREVIOUS[signum] = signal.signal(signum, _handler)
        _LISTENERS[signum] = weakref.WeakSet()
    _LISTENERS[signum].add(gate)
    return True


def _file_or_signal(config: Any, file: str | None) -> None:
    if file is None and config.signal is None:
        raise ValueError("a kill switch needs `file`, `signal` or both")


class KillSwitchGate:
    type: ClassVar[str] = "kill_switch"

    @frozen(kw_only=True)
    class Config:
        file: str | None = attrs.field(default=None,  # relative to the pipeline file
                                       validator=lambda c, _, v: _file_or_signal(c, v))
        signal: Literal["SIGUSR2"] | None = None

    def __init__(self, id: str, config: Config, file: Path | None = None):
        self.id = id
        self.config = config
        self.file = file
        self.tripped = ""  # why, once a signal (or trip()) fired
        if config.signal is not None:
            signum = getattr(signal, config.signal)
            if not _listen(self, signum):
                log.warning("gates.%s: not on the main thread; %s cannot be caught", id,
                            config.signal)

    @classmethod
    def from_config(cls, id: str, config: Config, ctx: BuildContext) -> KillSwitchGate:
        return cls(id, config, ctx.path(config.file) if config.file is not None else None)

    def trip(self, reason: str) -> None:
        """Latch the switch (a signal handler, an operator's script, a test)."""
        if not self.tripped:
            log.warning("gates.%s: kill switch tripped: %s", self.id, reason)
        self.tripped = self.tripped or reason

    def evaluate(self, trade: Trade) -> GateDecision:
        if self.tripped:
            return GateDecision.reject(f"kill switch: {self.tripped}")
        if self.file is not None and self.file.exists():
            return GateDecision.reject(f"kill switch file {self.file} exists")
        return GateDecision.approve()

    def on_trade_finished(self, trade: Trade) -> None:
        pass
