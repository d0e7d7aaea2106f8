from __future__ import annotations

import pytest
from venue_fixtures import kalshi_venue, poly_venue, scenario

from pr3dict_sim import SimServer


@pytest.fixture
async def sim(tmp_path):
    """A simulator on a free loopback port with static books (its clock does not run)."""
    server = SimServer(scenario(tmp_path), base_dir=tmp_path, clock=False, page_size=3)
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def make_sim(tmp_path):
    """``await make_sim(**scenario options)``: a simulator with faults or other options."""
    servers = []

    async def make(*, clock: bool = False, page_size: int = 100, **kwargs):
        server = SimServer(scenario(tmp_path, **kwargs), base_dir=tmp_path, clock=clock,
                           page_size=page_size)
        await server.start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        await server.stop()


@pytest.fixture
async def poly(sim):
    venue = poly_venue(sim)
    await venue.start()
    yield venue
    await venue.close()


@pytest.fixture
async def kalshi(sim):
    venue = kalshi_venue(sim)
    await venue.start()
    yield venue
    await venue.close()
