"""A broken component costs its trade or stops the run cleanly; it never crashes the engine."""

from __future__ import annotations

from typing import ClassVar

import attrs
from support import MINIMAL

from pr3dict_core import hookimpl
from pr3dict_paper.venue import PaperVenue


class DyingVenue(PaperVenue):
    """A paper venue whose book feed dies after a few polls."""

    type: ClassVar[str] = "test_dying_paper"
    instances: ClassVar[list] = []

    @attrs.frozen(kw_only=True)
    class Config(PaperVenue.Config):
        die_after: int = 30

    @classmethod
    def from_config(cls, id, config, ctx):
        venue = super().from_config(id, PaperVenue.Config(scenario=config.scenario), ctx)
        venue.die_after = config.die_after
        DyingVenue.instances.append(venue)
        return venue

    async def poll_books(self):
        if self.steps >= self.die_after:
            raise ConnectionResetError("feed closed by peer")
        return await super().poll_books()


class BrokenDetector:
    type: ClassVar[str] = "test_broken_detector"

    @attrs.frozen(kw_only=True)
    class Config:
        venues: tuple[str, ...]

    def __init__(self, id, venues):
        self.id, self.venue_ids = id, venues

    @classmethod
    def from_config(cls, id, config, ctx):
        return cls(id, config.venues)

    def bind(self, venues):
        pass

    def detect(self, changed):
        raise ZeroDivisionError("detector bug")


class BrokenGate:
    type: ClassVar[str] = "test_broken_gate"

    @attrs.frozen(kw_only=True)
    class Config:
        pass

    @classmethod
    def from_config(cls, id, config, ctx):
        self = cls()
        self.id = id
        return self

    def evaluate(self, trade):
        raise KeyError("gate bug")

    def on_trade_finished(self, trade):
        pass


class BrokenSink:
    type: ClassVar[str] = "test_broken_sink"

    @attrs.frozen(kw_only=True)
    class Config:
        pass

    @classmethod
    def from_config(cls, id, config, ctx):
        self = cls()
        self.id = id
        return self

    def record(self, record):
        raise OSError("disk full")

    async def close(self, summary):
        pass


class Broken:
    @hookimpl
    def pr3dict_register_venues(self, registry):
        registry.add(DyingVenue)

    @hookimpl
    def pr3dict_register_detectors(self, registry):
        registry.add(BrokenDetector)

    @hookimpl
    def pr3dict_register_risk_gates(self, registry):
        registry.add(BrokenGate)

    @hookimpl
    def pr3dict_register_metrics_sinks(self, registry):
        registry.add(BrokenSink)


def test_failing_venue_stops_the_run_cleanly(write_pipeline, run_pr3dict, register_plugin):
    register_plugin(Broken(), name="broken")
    DyingVenue.instances.clear()
    path = write_pipeline(MINIMAL.replace('type = "paper"', 'type = "test_dying_paper"')
                          .replace("cycles = 5", "cycles = 500"))
    outcome = run_pr3dict("run", str(path)).assert_failed(1)
    assert "pr3dict: run failed: venue sim failed: ConnectionResetError: feed closed by peer" \
        in outcome.err
    assert "trades committed" in outcome.out  # summary still printed
    (venue,) = DyingVenue.instances
    assert venue.engine.open_orders("pr3dict") == []  # nothing left resting
    (poll,) = outcome.spans_named("poll venue")  # telemetry.SPAN_POLL
    assert poll.status.status_code.name == "ERROR"


def test_broken_detector_costs_only_its_opportunities(write_pipeline, run_pr3dict,
                                                      register_plugin):
    register_plugin(Broken(), name="broken")
    path = write_pipeline(MINIMAL.replace("cycles = 5", "cycles = 120") +
                          '[detectors.bad]\ntype = "test_broken_detector"\nvenues = ["sim"]\n')
    outcome = run_pr3dict("run", str(path)).assert_success()
    errors = [s for s in outcome.spans_named("detect opportunities")
              if s.status.status_code.name == "ERROR"]
    assert errors and errors[0].events[0].attributes["exception.type"] == "ZeroDivisionError"
    assert outcome.spans_named("finalize trade")  # the good detector still traded


def test_broken_gate_fails_closed_and_sink_errors_do_not_stop_the_run(
        write_pipeline, run_pr3dict, register_plugin):
    register_plugin(Broken(), name="broken")
    path = write_pipeline(MINIMAL.replace("cycles = 5", "cycles = 120") +
                          '[gates.bad]\ntype = "test_broken_gate"\n'
                          '[sinks.bad]\ntype = "test_broken_sink"\n')
    outcome = run_pr3dict("run", str(path)).assert_success()
    gates = outcome.spans_named("evaluate risk_gate")
    assert gates and all(s.attributes["pr3dict.gate.approved"] is False for s in gates)
    assert all("gate bad failed: KeyError" in s.attributes["pr3dict.gate.reason"]
               for s in gates)
    assert not outcome.spans_named("submit order")
