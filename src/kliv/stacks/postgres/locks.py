"""How many locks a plan's transaction takes, and whether the server's lock table can hold them.

Called by the native engine at plan time. Postgres keeps every lock a
transaction holds until it ends, in one shared table of
``max_locks_per_transaction x (backends + prepared transactions)`` entries: a
cold apply of 3,000 tables needs about 25,000 and fails on a stock server (64 x
~120) with "out of shared memory", after minutes of work. The estimate lets the
plan refuse it before anything changes, naming the setting and the value
needed, and lets ``--split`` (the explicit consent to several transactions)
cut the steps into transactions that each fit.

The weights were measured by counting a transaction's entries in ``pg_locks``
after each statement kliv emits: a new table takes about 4 (itself, its TOAST
table and index, its row type) plus one per identity sequence, a key or index
one more, everything else on a table already locked none. Where Postgres
really fails against the estimate is shown by tests/integration/test_lock_budget.py.
"""

from __future__ import annotations

import dataclasses
import math
import re

from kliv.stacks.plans import Step

# Of the shared table's nominal size. Postgres lets it grow into spare shared memory, so the real
# limit is higher (measured: a stock PG 15 of 7,808 entries failed between 9,600 and 12,000 estimated
# locks; one of 320 between 730 and 790): refusing at the nominal size keeps room for other sessions.
USABLE_SHARE = 1.0
MARGIN = 1.25
# The table a statement names first (the one it locks).
_TABLE = re.compile(
    r"^(?:ALTER TABLE|DROP TABLE|CREATE (?:UNIQUE )?INDEX \S+ ON|CREATE POLICY \S+ ON|CREATE TRIGGER \S+ .*? ON|"
    r'GRANT .*? ON|COMMENT ON (?:TABLE|COLUMN)|DROP POLICY \S+ ON) +("[^"]+")'
)
# The settings LockTable.from_settings reads, as one SQL array.
SETTINGS = (
    "ARRAY[current_setting('max_locks_per_transaction')::int, current_setting('max_connections')::int, "
    "current_setting('max_prepared_transactions')::int, current_setting('autovacuum_max_workers')::int, "
    "current_setting('max_worker_processes')::int, current_setting('max_wal_senders')::int]"
)


@dataclasses.dataclass(frozen=True)
class LockTable:
    """The server's shared lock table, from its settings."""

    per_transaction: int  # max_locks_per_transaction
    backends: int  # max_connections and the server's own processes, plus prepared transactions

    @classmethod
    def from_settings(cls, row: tuple[int, ...]) -> LockTable:
        per_transaction, connections, prepared, autovacuum, workers, senders = row
        return cls(per_transaction, connections + autovacuum + 1 + workers + senders + prepared)

    @property
    def entries(self) -> int:
        return self.per_transaction * self.backends

    @property
    def usable(self) -> int:
        return int(self.entries * USABLE_SHARE)

    def needed_setting(self, locks: int) -> int:
        """The max_locks_per_transaction at which ``locks`` would fit."""
        return math.ceil(locks * MARGIN / (self.backends * USABLE_SHARE))

    def refusal(self, locks: int) -> str:
        return (
            f"the plan takes about {locks:,} locks in one transaction; this server's lock table holds about "
            f"{self.entries:,} (max_locks_per_transaction {self.per_transaction} x {self.backends} backends), "
            "so the apply would fail with `out of shared memory` after doing most of its work"
        )

    def hint(self, locks: int) -> str:
        return (
            f"set max_locks_per_transaction to at least {self.needed_setting(locks)} (a server restart), or apply "
            "with --split: several transactions, each recorded and audited as it commits"
        )


class _Counter:
    """Locks taken so far by a run of steps in one transaction."""

    def __init__(self) -> None:
        self.total = 0
        self.locked: set[str] = set()

    def cost(self, step: Step) -> tuple[int, str | None]:
        """Locks ``step`` adds, and the table it locks first (if any)."""
        sql = step.sql
        if sql.startswith("CREATE TABLE"):
            words = sql.split(None, 6)
            return 4 + sql.count("GENERATED "), words[5] if sql.startswith("CREATE TABLE IF") else words[2]
        cost = 0
        if sql.startswith(("CREATE INDEX", "CREATE UNIQUE INDEX")) or " ADD CONSTRAINT " in sql:
            cost += 1
        elif sql.startswith("DROP TABLE"):
            cost += 4
        match = _TABLE.match(sql)
        if match and match.group(1) not in self.locked:
            return cost + 2, match.group(1)  # a table that existed before: itself and its TOAST table
        return cost, None

    def add(self, step: Step) -> None:
        cost, table = self.cost(step)
        self.total += cost
        if table is not None:
            self.locked.add(table)


def estimate(steps: list[Step]) -> int:
    """Locks the ``database`` steps take in one transaction (an estimate, on the safe side)."""
    counter = _Counter()
    for step in steps:
        counter.add(step)
    return counter.total


def chunks(owned: list[tuple[Step, str]], budget: int) -> list[list[tuple[Step, str]]]:
    """Consecutive runs of steps, in order, each estimated within ``budget`` locks (``--split``)."""
    found: list[list[tuple[Step, str]]] = [[]]
    counter = _Counter()
    for item in owned:
        if found[-1] and counter.total + counter.cost(item[0])[0] > budget:
            found.append([])
            counter = _Counter()
        counter.add(item[0])
        found[-1].append(item)
    return [chunk for chunk in found if chunk]
