"""API keys: created once, shown once, stored only as a hash.

Keys are 256-bit random tokens (``tw-`` + 43 url-safe characters), so a plain SHA-256 is
the right hash: there is nothing to brute-force, and the lookup stays a dictionary hit on the
request path. The store is the ledger's database, so every gateway replica sees the same keys.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from gateway.ledger.schema import api_keys_table as keys_t

KEY_PREFIX = "tw-"


def hash_key(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


@dataclass(frozen=True, slots=True)
class ApiKey:
    id: str
    name: str
    prefix: str
    admin: bool = False
    rpm: int | None = None
    tpm: int | None = None
    budget: float | None = None
    budget_period: str | None = None  # "day" | "month"
    capture: bool = False  # opted in to content capture for the flywheel (gateway/capture/)
    created_at: datetime | None = None
    revoked_at: datetime | None = None

    @property
    def active(self) -> bool:
        return self.revoked_at is None

    def public(self) -> dict:
        """What may be shown about a key (never its secret or hash)."""
        return {"id": self.id, "name": self.name, "prefix": self.prefix, "admin": self.admin, "rpm": self.rpm,
                "tpm": self.tpm, "budget": self.budget, "budget_period": self.budget_period,
                "capture": self.capture, "created_at": self.created_at.isoformat() if self.created_at else None,
                "revoked_at": self.revoked_at.isoformat() if self.revoked_at else None}


def _from_row(row) -> ApiKey:
    return ApiKey(id=row.id, name=row.name, prefix=row.prefix, admin=bool(row.admin), rpm=row.rpm, tpm=row.tpm,
                  budget=row.budget, budget_period=row.budget_period, capture=bool(row.capture),
                  created_at=row.created_at, revoked_at=row.revoked_at)


class KeyStore:
    """CRUD on the ``api_keys`` table (synchronous: called from the CLI or a worker thread)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def create(self, name: str, *, admin: bool = False, rpm: int | None = None, tpm: int | None = None,
               budget: float | None = None, budget_period: str | None = None,
               capture: bool = False) -> tuple[ApiKey, str]:
        """Create a key; returns it and its secret, which is never stored or shown again."""
        if budget is not None and budget_period not in ("day", "month"):
            raise ValueError("a budget needs budget_period 'day' or 'month'")
        secret = KEY_PREFIX + secrets.token_urlsafe(32)
        key = ApiKey(id="key_" + secrets.token_hex(6), name=name, prefix=secret[:10], admin=admin, rpm=rpm, tpm=tpm,
                     budget=budget, budget_period=budget_period, capture=capture, created_at=datetime.now(UTC))
        with self.engine.begin() as conn:
            conn.execute(keys_t.insert().values(
                id=key.id, name=name, key_hash=hash_key(secret), prefix=key.prefix, admin=admin,
                created_at=key.created_at, rpm=rpm, tpm=tpm, budget=budget, budget_period=budget_period,
                capture=capture))
        return key, secret

    def list(self, include_revoked: bool = True) -> list[ApiKey]:
        stmt = sa.select(keys_t).order_by(keys_t.c.created_at)
        if not include_revoked:
            stmt = stmt.where(keys_t.c.revoked_at.is_(None))
        with self.engine.connect() as conn:
            return [_from_row(r) for r in conn.execute(stmt)]

    def revoke(self, key_id: str) -> bool:
        with self.engine.begin() as conn:
            result = conn.execute(keys_t.update().where(keys_t.c.id == key_id, keys_t.c.revoked_at.is_(None))
                                  .values(revoked_at=datetime.now(UTC)))
        return result.rowcount == 1

    def active_by_hash(self) -> dict[str, ApiKey]:
        """Every active key by hash: the request path's lookup table."""
        stmt = sa.select(keys_t).where(keys_t.c.revoked_at.is_(None))
        with self.engine.connect() as conn:
            return {r.key_hash: _from_row(r) for r in conn.execute(stmt)}
