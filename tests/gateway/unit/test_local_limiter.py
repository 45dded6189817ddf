"""The in-process limiter (``gateway/limits/local.py``): minute windows, budget holds, settling.

Budgets are seeded from a real SQLite ledger through ``queries.spent_since``, as the app does.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest

from gateway.auth.keys import ApiKey
from gateway.config import LimitsConfig
from gateway.errors import GatewayError
from gateway.ledger import queries
from gateway.ledger.schema import make_engine, requests_table
from gateway.limits.local import LocalLimiter
from support.ledger import sample_row


@pytest.fixture
def engine(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'ledger.db'}")
    yield engine
    engine.dispose()


@pytest.fixture(autouse=True)
def whole_minute():
    """Minute windows are fixed (UTC minutes): start early enough in one to finish in it."""
    left = 60 - time.time() % 60
    if left < 5:
        time.sleep(left + 0.05)


def limiter(engine, **config) -> LocalLimiter:
    return LocalLimiter(LimitsConfig(**config), lambda key_id, since: queries.spent_since(engine, key_id, since))


def key(**fields) -> ApiKey:
    return ApiKey(id=fields.pop("id", "k1"), name="test", prefix="tw-test", **fields)


async def test_rpm_admits_the_limit_then_refuses_with_429_and_retry_after(engine):
    limits, caller = limiter(engine), key(rpm=2)
    await limits.admit(caller)
    await limits.admit(caller)
    with pytest.raises(GatewayError) as refused:
        await limits.admit(caller)
    assert refused.value.status_code == 429 and refused.value.code == "rate_limit_exceeded"
    assert 1 <= int(refused.value.headers["retry-after"]) <= 60
    await limits.admit(key(id="k2", rpm=2))  # counters are per key


async def test_the_config_default_rpm_applies_to_keys_without_their_own(engine):
    limits = limiter(engine, default_rpm=1)
    await limits.admit(key())
    with pytest.raises(GatewayError):
        await limits.admit(key())


async def test_tpm_counts_settled_tokens_and_refuses_once_they_reach_the_limit(engine):
    limits, caller = limiter(engine), key(tpm=100)
    await limits.admit(caller)
    await limits.settle(caller, tokens=99, cost=0.0)
    await limits.admit(caller)  # 99 < 100: still admitted
    await limits.settle(caller, tokens=1, cost=0.0)
    with pytest.raises(GatewayError) as refused:
        await limits.admit(caller)
    assert "tokens per minute" in refused.value.message


async def test_a_new_minute_window_forgets_the_old_counts(engine):
    limits, caller = limiter(engine), key(rpm=1)
    await limits.admit(caller)
    window = limits._window
    limits.requests = {(caller.id, window - 1): 1}  # as left by the previous minute
    limits._window = window - 1
    await limits.admit(key(id="other"))  # the next admit of the new minute prunes old windows
    assert (caller.id, window - 1) not in limits.requests


async def test_budget_is_seeded_from_the_ledger_and_holds_count_until_settled(engine):
    with engine.begin() as conn:
        conn.execute(requests_table.insert(), [sample_row("r1", api_key_id="k1", cost=0.7, ts=datetime.now(UTC))])
    limits, caller = limiter(engine), key(budget=1.0, budget_period="day")
    first = await limits.reserve(caller, 0.2)  # admitted on 0.7 spent + 0.0 held < 1.0
    second = await limits.reserve(caller, 0.2)  # admitted on 0.7 spent + 0.2 held < 1.0
    assert first is not None and second is not None and first.id != second.id
    with pytest.raises(GatewayError) as refused:  # 0.7 spent + 0.4 held >= 1.0: the holds count
        await limits.reserve(caller, 0.2)
    assert refused.value.code == "budget_exceeded"
    await limits.settle(caller, tokens=10, cost=0.05, reservation=first)  # hold released, real cost booked
    assert set(limits.holds[(caller.id, first.period)]) == {second.id}
    assert limits.spend[(caller.id, first.period)] == pytest.approx(0.75)


async def test_spend_reaching_the_budget_refuses_without_any_hold(engine):
    with engine.begin() as conn:
        conn.execute(requests_table.insert(), [sample_row("r1", api_key_id="k1", cost=1.0)])
    with pytest.raises(GatewayError) as refused:
        await limiter(engine).reserve(key(budget=1.0, budget_period="month"), 0.01)
    assert refused.value.status_code == 429


async def test_keys_without_a_budget_get_no_reservation(engine):
    assert await limiter(engine).reserve(key(), 5.0) is None


async def test_an_unreadable_ledger_is_a_503_not_an_unchecked_budget(tmp_path):
    broken = make_engine(f"sqlite:///{tmp_path / 'ledger.db'}")
    with broken.begin() as conn:
        conn.execute(requests_table.delete())
    requests_table.drop(broken)
    try:
        with pytest.raises(GatewayError) as refused:
            await limiter(broken).reserve(key(budget=1.0, budget_period="day"), 0.1)
    finally:
        broken.dispose()
    assert refused.value.status_code == 503 and refused.value.code == "database_unavailable"
