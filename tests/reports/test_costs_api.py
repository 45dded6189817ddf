"""``GET /v1/costs/timeseries`` and ``/v1/costs/summary`` through a real gateway process (stub
upstream, SQLite ledger), checked against requests whose cost is known from the prices."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import pytest
import sqlalchemy as sa

from support.configs import STUDENT, TEACHER, stub_config
from support.processes import start_gateway

from gateway.auth.keys import KeyStore
from gateway.ledger.schema import make_engine

STUB_COMPLETION = 16  # the stub answers 16 tokens; prompt tokens = words in the messages


def price(p: dict, prompt: int, completion: int = STUB_COMPLETION) -> float:
    return (prompt * p["input_per_million"] + completion * p["output_per_million"]) / 1e6


@pytest.fixture
def gateway(stub, tmp_path):
    """Auth on, with two client keys and an admin key created in the ledger database."""
    db = tmp_path / "ledger.db"
    url = f"sqlite:///{db}"
    engine = make_engine(url)
    store = KeyStore(engine)
    keys = {name: store.create(name, admin=name == "admin") for name in ("alice", "bob", "admin")}
    engine.dispose()
    gw = start_gateway(stub_config(stub.url, url, auth=True), tmp_path, timeout_s=60)
    gw.db = db
    gw.keys = {name: (key.id, secret) for name, (key, secret) in keys.items()}
    yield gw
    gw.stop()


def _chat(client: httpx.Client, model: str, content: str, stream: bool = False) -> int:
    body = {"model": model, "stream": stream, "messages": [{"role": "user", "content": content}]}
    if stream:
        with client.stream("POST", "/v1/chat/completions", json=body) as resp:
            resp.read()
            return resp.status_code
    return client.post("/v1/chat/completions", json=body).status_code


def _client(gw, name: str) -> httpx.Client:
    return httpx.Client(base_url=gw.url, timeout=30, headers={"authorization": f"Bearer {gw.keys[name][1]}"})


def test_timeseries_and_summary_match_the_requests_made(gateway):
    alice_id, bob_id = gateway.keys["alice"][0], gateway.keys["bob"][0]
    with _client(gateway, "alice") as alice, _client(gateway, "bob") as bob:
        assert [_chat(alice, "teacher", "a b c d") for _ in range(2)] == [200, 200]
        assert [_chat(bob, "student", "a b") for _ in range(3)] == [200] * 3
        assert _chat(bob, "student", "a b", stream=True) == 200
        assert _chat(alice, "no-such-model", "a b") == 404
        bob_sees = bob.get("/v1/costs/timeseries", params={"key": alice_id}).json()  # not an admin: own costs only
    with _client(gateway, "admin") as client:
        hourly = client.get("/v1/costs/timeseries", params={"bucket": "hour"}).json()
        daily = client.get("/v1/costs/timeseries").json()
        summary = client.get("/v1/costs/summary").json()
        alice_daily = client.get("/v1/costs/timeseries", params={"key": alice_id}).json()
        later = (datetime.now(UTC) + timedelta(hours=2)).isoformat()
        empty = client.get("/v1/costs/timeseries", params={"since": later}).json()
        nobody = client.get("/v1/costs/timeseries", params={"key": "nobody"}).json()
        nobody_summary = client.get("/v1/costs/summary", params={"key": "nobody"}).json()
        bad_bucket = client.get("/v1/costs/timeseries", params={"bucket": "week"})
        backwards = client.get("/v1/costs/timeseries", params={"since": "2026-03-02", "until": "2026-03-01"})
    anonymous = httpx.get(gateway.url + "/v1/costs/timeseries")

    # Hand-computed from the prices: alice made 2 teacher requests of 4 prompt words and one
    # refused one; bob made 4 student requests of 2.
    expected = {
        "teacher": {"requests": 2, "errors": 0, "cost": 2 * price(TEACHER, 4), "teacher_cost": 2 * price(TEACHER, 4)},
        "student": {"requests": 4, "errors": 0, "cost": 4 * price(STUDENT, 2), "teacher_cost": 4 * price(TEACHER, 2)},
        "none": {"requests": 1, "errors": 1, "cost": 0.0, "teacher_cost": 0.0},  # refused: unknown model
    }
    total_cost = sum(e["cost"] for e in expected.values())
    total_teacher = sum(e["teacher_cost"] for e in expected.values())

    for series in (hourly, daily):
        assert series["object"] == "cost_timeseries" and series["teacher_tier"] == "teacher"
        summed: dict[str, dict] = {}
        for point in series["data"]:
            for tier, f in point["tiers"].items():
                acc = summed.setdefault(tier, {"requests": 0, "errors": 0, "cost": 0.0, "teacher_cost": 0.0})
                for k in acc:
                    acc[k] += f[k]
            assert point["cost"] == pytest.approx(sum(f["cost"] for f in point["tiers"].values()))
            assert point["savings"] == pytest.approx(point["teacher_cost"] - point["cost"])
        assert set(summed) == set(expected)
        for tier, e in expected.items():
            assert summed[tier] == pytest.approx(e), tier
        assert sum(p["cost"] for p in series["data"]) == pytest.approx(total_cost)
        assert sum(p["teacher_cost"] for p in series["data"]) == pytest.approx(total_teacher)
    assert sum(p["tiers"].get("student", {}).get("completion_tokens", 0) for p in hourly["data"]) == 4 * STUB_COMPLETION

    # Buckets are the UTC hours (days) of the ledger rows' timestamps, oldest first, one hour (day) long.
    engine = sa.create_engine(f"sqlite:///{gateway.db}")
    with engine.connect() as conn:
        stamps = [r[0] for r in conn.execute(sa.text("SELECT ts FROM ledger_requests"))]
    engine.dispose()
    stamps = [datetime.fromisoformat(s).replace(tzinfo=UTC) for s in stamps]
    assert len(stamps) == 7  # one ledger row per request, the refused one included
    hours = sorted({s.replace(minute=0, second=0, microsecond=0) for s in stamps})
    assert [datetime.fromisoformat(p["start"]) for p in hourly["data"]] == hours
    assert all(datetime.fromisoformat(p["end"]) - datetime.fromisoformat(p["start"]) == timedelta(hours=1)
               for p in hourly["data"])
    days = sorted({s.replace(hour=0, minute=0, second=0, microsecond=0) for s in stamps})
    assert [datetime.fromisoformat(p["start"]) for p in daily["data"]] == days
    assert abs(datetime.fromisoformat(hourly["data"][-1]["start"]) - datetime.now(UTC)) < timedelta(hours=1, minutes=5)

    assert summary["total_cost"] == pytest.approx(total_cost)
    assert summary["teacher_counterfactual_cost"] == pytest.approx(total_teacher)
    assert summary["savings_pct"] == pytest.approx(100 * (total_teacher - total_cost) / total_teacher)

    # Per key: alice's requests only; bob asking for alice's gets his own.
    def tiers_of(series: dict) -> dict[str, int]:
        out: dict[str, int] = {}
        for point in series["data"]:
            for tier, f in point["tiers"].items():
                out[tier] = out.get(tier, 0) + f["requests"]
        return out

    assert alice_daily["api_key_id"] == alice_id and tiers_of(alice_daily) == {"teacher": 2, "none": 1}
    assert sum(p["cost"] for p in alice_daily["data"]) == pytest.approx(expected["teacher"]["cost"])
    assert bob_sees["api_key_id"] == bob_id and tiers_of(bob_sees) == {"student": 4}
    assert sum(p["teacher_cost"] for p in bob_sees["data"]) == pytest.approx(expected["student"]["teacher_cost"])
    # A period with nothing in it, a key nobody used, no key at all.
    assert empty["data"] == [] and empty["since"] is not None
    assert nobody["data"] == [] and nobody["api_key_id"] == "nobody"
    assert nobody_summary["requests"] == 0 and nobody_summary["total_cost"] == 0
    # Bad input gets the OpenAI error envelope.
    assert bad_bucket.status_code == 400 and bad_bucket.json()["error"]["param"] == "query.bucket"
    assert backwards.status_code == 400 and "since" in backwards.json()["error"]["message"]
    assert anonymous.status_code == 401
