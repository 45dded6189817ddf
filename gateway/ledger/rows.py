"""Ledger rows made storable, and rows as JSON text for the places a table cannot hold them.

Much of a row comes from the client (``user``, the requested model, prompts when content
storage is on, error text quoting the input). Postgres ``text`` refuses a NUL byte, no
database takes a lone UTF-16 surrogate (valid in a JSON string, not in UTF-8), and a
``VARCHAR(n)`` refuses a longer value: any of these once left an answer served and unbooked
(issue #15). So every row is cleaned before every insert, on every database (the ledger can
move from SQLite to Postgres): NUL and surrogates become U+FFFD, sized columns are cut to
their size. The common case (ASCII, short) costs a few ``str`` scans done in C.
"""

from __future__ import annotations

import json
import re
from datetime import datetime

from sqlalchemy import String, Table

REPLACEMENT = "\ufffd"
_SURROGATES = re.compile("[\ud800-\udfff]")


def text_limits(table: Table) -> dict[str, int | None]:
    """Every string column of ``table`` and its size (``None`` for unbounded ``Text``)."""
    return {c.name: getattr(c.type, "length", None) for c in table.columns if isinstance(c.type, String)}


def storable_text(value: str, limit: int | None) -> str:
    """``value`` with NUL and lone surrogates replaced, cut to ``limit`` characters."""
    if "\x00" in value:
        value = value.replace("\x00", REPLACEMENT)
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            value = _SURROGATES.sub(REPLACEMENT, value)
    if limit is not None and len(value) > limit:
        value = value[:limit]
    return value


def storable(row: dict, limits: dict[str, int | None]) -> dict:
    """A copy of ``row`` whose string values every supported database accepts."""
    out = dict(row)
    for name, limit in limits.items():
        value = out.get(name)
        if isinstance(value, str):
            out[name] = storable_text(value, limit)
    return out


def to_json(row: dict) -> str:
    """One row as a JSON line: ASCII-only (NUL and surrogates escaped), times in ISO form."""
    return json.dumps(row, ensure_ascii=True, default=_encode, separators=(",", ":"))


def from_json(line: str, time_columns: tuple[str, ...] = ("ts",)) -> dict:
    """Inverse of :func:`to_json` for a ledger row: ISO strings back into aware datetimes."""
    row = json.loads(line)
    for name in time_columns:
        if isinstance(row.get(name), str):
            row[name] = datetime.fromisoformat(row[name])
    return row


def _encode(value: object) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)
