"""Who may see and do what, on the app in this process: admin-only key management, what each
caller sees of costs, and the public versus detailed health views.

Keys are real (hashed in the SQLite ledger, a bootstrap admin from the environment); only the
cost-visibility test stands in for the caller with ``app.dependency_overrides``.
"""

from __future__ import annotations

import pytest

from gateway.auth.keys import ApiKey
from gateway.ledger.schema import make_engine, requests_table
from support.configs import stub_config
from support.inprocess import dependency_named, running_app
from support.ledger import sample_row
from support.processes import free_port

ADMIN_SECRET = "tw-admin-inprocess-secret"


def config(stub_url: str, tmp_path, *, auth: bool, **extra) -> dict:
    return stub_config(stub_url, f"sqlite:///{tmp_path / 'ledger.db'}", auth=auth, state_dir=str(tmp_path), **extra)


def bearer(secret: str) -> dict:
    return {"authorization": f"Bearer {secret}"}


@pytest.fixture
async def secured(stub, tmp_path, monkeypatch):
    monkeypatch.setenv("TIERWISE_ADMIN_KEY", ADMIN_SECRET)
    async with running_app(config(stub.url, tmp_path, auth=True)) as (app, client):
        yield client


async def test_key_management_needs_an_admin_key(secured):
    created = await secured.post("/v1/keys", json={"name": "plain"}, headers=bearer(ADMIN_SECRET))
    assert created.status_code == 200, created.text
    plain = created.json()["key"]
    for method, path, body in (("GET", "/v1/keys", None), ("POST", "/v1/keys", {"name": "more"}),
                               ("DELETE", f"/v1/keys/{created.json()['id']}", None)):
        refused = await secured.request(method, path, json=body, headers=bearer(plain))
        assert refused.status_code == 403, (method, path, refused.text)
        assert refused.json()["error"]["code"] == "admin_required"
    listed = await secured.get("/v1/keys", headers=bearer(ADMIN_SECRET))
    assert [k["name"] for k in listed.json()["data"]] == ["plain"]  # the refused create made nothing


async def test_key_management_without_a_key_is_a_401_not_a_403(secured):
    response = await secured.get("/v1/keys")
    assert response.status_code == 401 and response.json()["error"]["type"] == "invalid_request_error"


async def test_revoking_an_unknown_key_is_a_404(secured):
    response = await secured.delete("/v1/keys/no-such-id", headers=bearer(ADMIN_SECRET))
    assert response.status_code == 404 and response.json()["error"]["code"] == "key_not_found"


async def test_an_invalid_key_spec_is_a_400(secured):
    response = await secured.post("/v1/keys", json={"name": "x", "rpm": -3}, headers=bearer(ADMIN_SECRET))
    assert response.status_code == 400 and response.json()["error"]["param"] == "rpm"


async def test_a_non_admin_caller_sees_only_its_own_costs_whatever_key_it_asks_for(stub, tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'ledger.db'}")
    with engine.begin() as conn:
        conn.execute(requests_table.insert(), [sample_row("a1", api_key_id="key-a", cost=1.0),
                                               sample_row("b1", api_key_id="key-b", cost=10.0)])
    engine.dispose()
    async with running_app(config(stub.url, tmp_path, auth=True)) as (app, client):
        as_key_a = ApiKey(id="key-a", name="a", prefix="tw-aaa", admin=False)
        app.dependency_overrides[dependency_named(app, "caller")] = lambda: as_key_a
        own = (await client.get("/v1/costs/summary?key=key-b")).json()
        as_admin = ApiKey(id="root", name="admin", prefix="tw-adm", admin=True)
        app.dependency_overrides[dependency_named(app, "caller")] = lambda: as_admin
        chosen = (await client.get("/v1/costs/summary?key=key-b")).json()
        everyone = (await client.get("/v1/costs/summary")).json()
    assert own["total_cost"] == pytest.approx(1.0)  # key-b was asked for; key-a's own figures came back
    assert chosen["total_cost"] == pytest.approx(10.0) and everyone["total_cost"] == pytest.approx(11.0)


async def test_health_shows_details_to_everyone_while_auth_is_off(stub, tmp_path):
    async with running_app(config(stub.url, tmp_path, auth=False)) as (_, client):
        response = await client.get("/health")
    body = response.json()
    assert response.status_code == 200 and body["status"] == "ok"
    assert body["routing_policy"] == "fixed" and body["ledger_backlog"] == 0
    assert body["tiers"]["student"]["circuit"] == {"open": False, "consecutive_failures": 0, "times_opened": 0}


async def test_health_with_auth_shows_probes_only_state_names_and_admins_the_details(secured):
    public = await secured.get("/health")
    wrong_key = await secured.get("/health", headers=bearer("tw-wrong"))
    admin = await secured.get("/health", headers=bearer(ADMIN_SECRET))
    expected_public = {"status": "ok", "tiers": {"teacher": {"status": "ready"}, "student": {"status": "ready"}}}
    assert public.status_code == 200 and public.json() == expected_public
    assert wrong_key.status_code == 200 and wrong_key.json() == expected_public  # a probe never gets a 401
    assert admin.json()["tiers"]["teacher"]["kind"] == "url" and "routing_policy" in admin.json()


async def test_health_is_degraded_with_one_tier_down_and_503_with_none(stub, tmp_path):
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    student_down = config(stub.url, tmp_path, auth=False)
    student_down["model_list"][1]["url"]["base_url"] = dead + "/v1"
    async with running_app(student_down, tier_wait_s=3) as (_, client):
        degraded = await client.get("/health")
    async with running_app(config(dead, tmp_path, auth=False), tier_wait_s=1) as (_, client):
        down = await client.get("/health")
        models = await client.get("/v1/models")
    assert degraded.status_code == 200 and degraded.json()["status"] == "degraded"
    assert degraded.json()["tiers"]["student"]["status"] != "ready"
    assert down.status_code == 503 and down.json()["status"] == "unavailable"
    assert models.json()["data"] == []  # no tier ready: nothing to offer, not even "auto"
