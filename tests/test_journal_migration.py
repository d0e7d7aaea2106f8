"""A journal written by an older pr3dict is migrated when a run opens it, and nothing in it
is lost: open trades are recovered, persistent halts restored."""

from __future__ import annotations

import sqlite3

import pytest

from pr3dict_core.journal import SCHEMA_VERSION, Journal, _opportunity_json
from pr3dict_core.testing import make_opportunity

# The tables as version 1 (no venue order ids, no halts) and version 2 (PRAGMA
# user_version = 2; halts keyed by cause and subject, no engines) wrote them.
V1 = """
CREATE TABLE trades (id TEXT PRIMARY KEY, run_id TEXT NOT NULL, strategy TEXT NOT NULL,
    state TEXT NOT NULL, opportunity TEXT NOT NULL, reject_reason TEXT NOT NULL DEFAULT '',
    error TEXT NOT NULL DEFAULT '', created_at REAL NOT NULL, updated_at REAL NOT NULL);
CREATE TABLE legs (trade_id TEXT NOT NULL, idx INTEGER NOT NULL, venue TEXT NOT NULL,
    instrument TEXT NOT NULL, side TEXT NOT NULL, size TEXT NOT NULL,
    limit_price TEXT NOT NULL, target_price TEXT NOT NULL, tick_size TEXT NOT NULL,
    purpose TEXT NOT NULL, state TEXT NOT NULL, attempts INTEGER NOT NULL,
    error TEXT NOT NULL DEFAULT '', PRIMARY KEY (trade_id, idx));
CREATE TABLE orders (client_order_id TEXT PRIMARY KEY, trade_id TEXT NOT NULL,
    idx INTEGER NOT NULL, venue TEXT NOT NULL, instrument TEXT NOT NULL, side TEXT NOT NULL,
    price TEXT NOT NULL, size TEXT NOT NULL, time_in_force TEXT NOT NULL,
    created_at REAL NOT NULL);
CREATE TABLE fills (fill_id TEXT NOT NULL, trade_id TEXT NOT NULL, idx INTEGER NOT NULL,
    client_order_id TEXT NOT NULL, price TEXT NOT NULL, size TEXT NOT NULL, fee TEXT NOT NULL,
    PRIMARY KEY (trade_id, idx, fill_id));
CREATE TABLE transitions (seq INTEGER PRIMARY KEY AUTOINCREMENT, trade_id TEXT NOT NULL,
    idx INTEGER, from_state TEXT NOT NULL, to_state TEXT NOT NULL, at REAL NOT NULL);
"""
V2 = V1 + """
ALTER TABLE orders ADD COLUMN venue_order_id TEXT NOT NULL DEFAULT '';
CREATE TABLE halts (cause TEXT NOT NULL, subject TEXT NOT NULL, reason TEXT NOT NULL,
    run_id TEXT NOT NULL, created_at REAL NOT NULL, lifted_at REAL,
    PRIMARY KEY (cause, subject));
PRAGMA user_version = 2;
"""


def old_journal(path, schema: str) -> str:
    opp = make_opportunity()
    db = sqlite3.connect(path)
    db.executescript(schema)
    db.execute("INSERT INTO trades VALUES ('old-1', 'old-run', 'market', 'executing', ?, '', "
               "'', 1.0, 2.0)", (_opportunity_json(opp),))
    leg = opp.legs[0]
    db.execute("INSERT INTO legs VALUES ('old-1', 0, ?, ?, 'buy', '10', '0.5', '0.45', "
               "'0.01', 'entry', 'submitted', 1, '')", (leg.venue, leg.instrument))
    db.execute("INSERT INTO orders (client_order_id, trade_id, idx, venue, instrument, side, "
               "price, size, time_in_force, created_at) VALUES ('old-1-0-1', 'old-1', 0, ?, "
               "?, 'buy', '0.5', '10', 'FOK', 1.5)", (leg.venue, leg.instrument))
    if "halts" in schema:
        db.execute("INSERT INTO halts VALUES ('exposure', 'old-1', 'left unhedged', "
                   "'old-run', 2.0, NULL)")
    db.commit()
    db.close()
    return opp.legs[0].instrument


@pytest.mark.parametrize("schema", [V1, V2], ids=["v1", "v2"])
def test_an_older_journal_is_migrated_and_keeps_what_it_holds(tmp_path, schema):
    path = tmp_path / "old.sqlite"
    instrument = old_journal(path, schema)
    journal = Journal(path, "new-run", engine_id="host/p")
    try:
        journal.register_engine("p")
        (trade,) = journal.open_trades()
        assert trade.id == "old-1" and trade.legs[0].instrument == instrument
        assert list(trade.legs[0].orders) == ["old-1-0-1"]  # asked about at recovery
        if "halts" in schema:  # taken over by the engine that now writes the journal
            assert journal.active_halts() == [("exposure", "old-1", "left unhedged")]
        assert journal.query("SELECT value FROM meta WHERE key = 'schema_version'") == [
            (str(SCHEMA_VERSION),)]
        assert "engine_id" in {r[1] for r in journal.query("PRAGMA table_info(halts)")}
    finally:
        journal.close()
    reopened = Journal(path, "newer-run", engine_id="host/p")  # idempotent
    assert [t.id for t in reopened.open_trades()] == ["old-1"]
    reopened.close()


def test_a_journal_from_a_newer_pr3dict_is_refused(tmp_path):
    path = tmp_path / "new.sqlite"
    Journal(path).close()
    db = sqlite3.connect(path)
    db.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    db.commit()
    db.close()
    with pytest.raises(Exception, match="schema version 99, newer than this pr3dict"):
        Journal(path)
