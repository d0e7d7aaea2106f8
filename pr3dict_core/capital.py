"""Capital books: the bankroll that trades reserve their worst case against.

A ``LocalBook`` lives in one process (no journal, or a Python script's engine). A
``JournalBook`` lives in the journal: on PostgreSQL every engine that names the same book
reserves against one bankroll, atomically (the book's row is locked for the check and the
update), so no interleaving of engines can over-commit it. A component gets the right one
from ``BuildContext.capital_book``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from decimal import Decimal
from typing import TYPE_CHECKING, Protocol

from .model import ZERO

log = logging.getLogger("pr3dict.capital")

if TYPE_CHECKING:
    from .journal import Journal

# (trade id, final, amount): a final trade's amount is what it spent; an open one's is
# what it may still spend (its reservation).
BookEntry = tuple[str, bool, Decimal]


class CapitalBook(Protocol):
    name: str
    bankroll: Decimal

    @property
    def available(self) -> Decimal:
        """Bankroll less what is reserved and spent (as last seen, for a shared book)."""

    async def reserve(self, trade_id: str, amount: Decimal) -> bool:
        """Reserve ``amount`` for a trade before any order; False if it does not fit."""

    def settle(self, trade_id: str, spent: Decimal) -> None:
        """The trade is final: its reservation becomes what it spent (idempotent)."""

    def restore(self, entries: Sequence[BookEntry]) -> None:
        """At start, from the journal's executed trades."""


class LocalBook:
    """Available = bankroll - reserved - deployed, in this process's memory."""

    def __init__(self, name: str, bankroll: Decimal):
        self.name = name
        self.bankroll = bankroll
        self.reserved: dict[str, Decimal] = {}
        self.deployed = ZERO

    @property
    def available(self) -> Decimal:
        return self.bankroll - sum(self.reserved.values(), ZERO) - self.deployed

    async def reserve(self, trade_id: str, amount: Decimal) -> bool:
        if amount > self.available:
            return False
        self.reserved[trade_id] = amount
        return True

    def settle(self, trade_id: str, spent: Decimal) -> None:
        if self.reserved.pop(trade_id, None) is not None:
            self.deployed += spent

    def restore(self, entries: Sequence[BookEntry]) -> None:
        self.reserved.clear()
        self.deployed = ZERO
        for trade_id, final, amount in entries:
            if final:
                self.deployed += amount
            else:
                self.reserved[trade_id] = amount


class JournalBook:
    """A book in the journal (``capital_books`` and ``capital_entries``), shared by every
    engine of that journal that names it."""

    def __init__(self, name: str, bankroll: Decimal, journal: Journal | None = None):
        self.name = name
        self.bankroll = bankroll
        self._available = bankroll
        self.previous_bankroll: Decimal | None = None  # what the book said, when it differed
        self._journal = journal
        if journal is not None:
            self.bind(journal)

    def bind(self, journal: Journal) -> None:
        """Open (or create) the book in the journal; before the engine starts."""
        self._journal = journal
        self.previous_bankroll = journal.open_book(self.name, self.bankroll)
        if self.previous_bankroll is not None:  # every engine sharing it should say the same
            log.warning("capital book %r: bankroll %s (was %s in the journal)", self.name,
                        self.bankroll, self.previous_bankroll)
        self._available = self.bankroll - journal.book(self.name)[1]  # type: ignore[index]

    @property
    def journal(self) -> Journal:
        if self._journal is None:
            raise RuntimeError(f"capital book {self.name!r} is not bound to a journal yet")
        return self._journal

    @property
    def available(self) -> Decimal:
        return self._available

    async def reserve(self, trade_id: str, amount: Decimal) -> bool:
        reserved, self._available = await self.journal.reserve(self.name, trade_id, amount)
        return reserved

    def settle(self, trade_id: str, spent: Decimal) -> None:
        self.journal.settle_capital(trade_id, spent)

    def restore(self, entries: Sequence[BookEntry]) -> None:
        self.journal.reconcile_book(self.name, entries)
        self._available = self.bankroll - self.journal.book(self.name)[1]  # type: ignore[index]
