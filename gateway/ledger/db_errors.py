"""Which database errors mean "try again later" and which mean "this row will never fit".

The distinction decides whether a ledger row is kept queued or quarantined, so it must not
follow SQLAlchemy's class tree: ``OperationalError`` (a dropped connection) is a subclass of
``StatementError`` just like ``DataError`` (a bad value), and treating a connection loss as
bad rows once gave up on every row written during a Postgres blip (issue #15).

Rule: an error is about the rows' *content* only when the database says so (SQLSTATE class
22 data exception, 23 integrity violation, 54 program limit exceeded) or when the driver
refuses a value before sending it (a NUL byte, a lone surrogate, an unsupported type).
Everything else - connection refused or reset, server shutting down, out of disk, pool
exhausted, locked SQLite file, a missing table - is the database's state, which changes, so
the same rows are retried.
"""

from __future__ import annotations

from sqlalchemy import exc as sa_exc

# SQLSTATE classes that blame the values sent, not the server's state.
_CONTENT_SQLSTATE_CLASSES = frozenset({"22", "23", "54"})


def is_transient(error: BaseException) -> bool:
    """True when retrying the same statement later can succeed (the database was unreachable
    or busy); False when the database refused what the rows hold."""
    if isinstance(error, sa_exc.DBAPIError):
        if error.connection_invalidated:
            return True
        sqlstate = getattr(error.orig, "sqlstate", None)  # psycopg sets it on server errors
        if isinstance(sqlstate, str) and len(sqlstate) == 5:
            return sqlstate[:2] not in _CONTENT_SQLSTATE_CLASSES
        # Client-side refusals (psycopg's NUL check, sqlite3's binding errors) carry no SQLSTATE.
        return not isinstance(error, (sa_exc.DataError, sa_exc.IntegrityError, sa_exc.ProgrammingError))
    if isinstance(error, (sa_exc.DisconnectionError, sa_exc.TimeoutError, ConnectionError, TimeoutError)):
        return True
    if isinstance(error, OSError):
        return True
    return False  # StatementError from binding, UnicodeEncodeError, TypeError: the row's values


def describe(error: BaseException) -> str:
    """A one-line account of ``error`` without the SQL statement or its parameters.

    SQLAlchemy's ``str()`` appends the statement (and, unless ``hide_parameters``, the bound
    values: user names, prompts), so logs and dead letters get the driver's message only.
    """
    orig = getattr(error, "orig", None)
    source = orig if orig is not None else error
    first_line = (str(source).strip().splitlines() or [""])[0]
    return f"{type(source).__name__}: {first_line[:300]}"
