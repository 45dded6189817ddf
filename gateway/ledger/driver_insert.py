"""The ledger's INSERT compiled once and run through the database driver's ``executemany``.

SQLAlchemy's ``conn.execute(insert, rows)`` re-derives, for every batch, which parameters each
row has, applies column defaults and type processors row by row and builds the driver's
parameter sets; on a group commit of a few dozen ledger rows that was about a third of the
ledger thread's CPU (``benchmarks/results/gateway_profile_pyspy.txt``). Here the statement is
compiled once for the engine's dialect; a row becomes a tuple in the compiled order, through
the bind processors of the dialect's column types, as SQLAlchemy applies them (SQLite stores
the same text for a datetime; the generic type's processor would have let the driver add a
UTC offset), and with the same scalar column defaults for a key a row lacks.

SQLite only (positional ``?`` parameters); other databases keep SQLAlchemy's path.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import Table
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.sql.dml import Insert


class DriverInsert:
    def __init__(self, engine: Engine, table: Table, statement: Insert) -> None:
        dialect = engine.dialect
        names = [c.name for c in table.columns if not (c.primary_key and c.autoincrement is not False)]
        compiled = statement.values({name: None for name in names}).compile(dialect=dialect)
        if not compiled.positional or compiled.positiontup is None:
            raise ValueError(f"{dialect.name} does not take positional parameters")
        self.sql = compiled.string
        self.columns: list[tuple[str, Callable[[Any], Any] | None, Any]] = []
        for name in compiled.positiontup:
            column = table.c[name]
            default = column.default.arg if column.default is not None and column.default.is_scalar else None
            self.columns.append((name, column.type.dialect_impl(dialect).bind_processor(dialect), default))

    @staticmethod
    def supported(engine: Engine) -> bool:
        return engine.dialect.name == "sqlite"

    def parameters(self, row: dict) -> tuple:
        out = []
        for name, process, default in self.columns:
            value = row.get(name, default)
            out.append(process(value) if process is not None and value is not None else value)
        return tuple(out)

    def execute(self, conn: Connection, rows: list[dict]) -> None:
        conn.exec_driver_sql(self.sql, [self.parameters(row) for row in rows])
