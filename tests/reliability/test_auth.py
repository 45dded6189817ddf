"""API keys through a real gateway process: 401s, CLI-created keys, revocation, admin scope,
per-key cost visibility, and no secret in logs or the ledger."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import httpx
import pytest
import sqlalchemy as sa

from support.configs import stub_config
from support.processes import REPO, start_gateway

CHAT = {"model": "teacher", "messages": [{"role": "user", "content": "hello there"}]}


def cli_key(db_url: str, *args: str) -> str:
    out = subprocess.run([sys.executable, "-m", "gateway", "keys", "create", *args, "--ledger-url", db_url],
                         cwd=REPO, capture_output=True, text=True, check=True)
    return out.stdout.strip().splitlines()[-1]


@pytest.fixture
def auth_gateway(stub, tmp_path):
    db_url = f"sqlite:///{tmp_path / 'ledger.db'}"
    gw = start_gateway(stub_config(stub.url, db_url, auth=True), tmp_path, timeout_s=60,
                       env={"TIERWISE_ADMIN_KEY": "tw-bootstrap-admin-secret"})
    gw.db_url = db_url
    yield gw
    gw.stop()


def post(gw, key: str | None, body=CHAT, path="/v1/chat/completions"):
    headers = {"authorization": f"Bearer {key}"} if key else {}
    return httpx.post(gw.url + path, json=body, headers=headers, timeout=30)


def test_missing_and_wrong_keys_are_401_in_openai_shape(auth_gateway):
    for key in (None, "tw-not-a-real-key"):
        resp = post(auth_gateway, key)
        assert resp.status_code == 401
        error = resp.json()["error"]
        assert error["code"] == "invalid_api_key" and error["type"] == "invalid_request_error"
        assert "tw-not-a-real-key" not in resp.text
    assert httpx.get(auth_gateway.url + "/v1/models").status_code == 401
    assert httpx.get(auth_gateway.url + "/health").status_code == 200  # probes need no key


def test_cli_key_works_is_booked_and_revocation_takes_effect(auth_gateway):
    secret = cli_key(auth_gateway.db_url, "support-bot")
    assert secret.startswith("tw-") and len(secret) > 40
    resp = post(auth_gateway, secret)
    assert resp.status_code == 200
    engine = sa.create_engine(auth_gateway.db_url)
    with engine.connect() as conn:
        key_id, stored_hash = conn.execute(sa.text("SELECT id, key_hash FROM api_keys WHERE name='support-bot'")).one()
    httpx.get(auth_gateway.url + "/v1/costs/summary", headers={"authorization": f"Bearer {secret}"})
    with engine.connect() as conn:
        row = conn.execute(sa.text("SELECT api_key_id FROM ledger_requests WHERE request_id=:r"),
                           {"r": resp.headers["x-request-id"]}).one()
    assert row.api_key_id == key_id
    assert secret not in stored_hash
    listing = subprocess.run([sys.executable, "-m", "gateway", "keys", "list", "--json", "--ledger-url",
                              auth_gateway.db_url], cwd=REPO, capture_output=True, text=True, check=True).stdout
    assert [k["id"] for k in json.loads(listing)] == [key_id] and secret not in listing
    subprocess.run([sys.executable, "-m", "gateway", "keys", "revoke", key_id, "--ledger-url", auth_gateway.db_url],
                   cwd=REPO, check=True, capture_output=True)
    deadline = time.monotonic() + 10
    while post(auth_gateway, secret).status_code != 401:
        assert time.monotonic() < deadline, "revoked key still accepted"
        time.sleep(0.2)
    engine.dispose()


def test_admin_scope_and_own_costs_only(auth_gateway):
    admin = "tw-bootstrap-admin-secret"
    plain = cli_key(auth_gateway.db_url, "plain")
    assert httpx.get(auth_gateway.url + "/v1/keys", headers={"authorization": f"Bearer {plain}"}).status_code == 403
    created = httpx.post(auth_gateway.url + "/v1/keys", json={"name": "via-api", "rpm": 100},
                         headers={"authorization": f"Bearer {admin}"})
    assert created.status_code == 200, created.text
    other = created.json()["key"]
    for _ in range(2):
        assert post(auth_gateway, other).status_code == 200
    assert post(auth_gateway, plain).status_code == 200
    own = httpx.get(auth_gateway.url + "/v1/costs/summary", headers={"authorization": f"Bearer {plain}"}).json()
    everyone = httpx.get(auth_gateway.url + "/v1/costs/summary", headers={"authorization": f"Bearer {admin}"}).json()
    assert own["requests"] == 1 and everyone["requests"] == 3
    # A plain key cannot peek at another key by asking for it.
    peek = httpx.get(auth_gateway.url + "/v1/costs/summary", params={"key": created.json()["id"]},
                     headers={"authorization": f"Bearer {plain}"}).json()
    assert peek["requests"] == 1
    listed = httpx.get(auth_gateway.url + "/v1/keys", headers={"authorization": f"Bearer {admin}"}).json()["data"]
    assert {k["name"] for k in listed} == {"plain", "via-api"}
    assert all("key" not in k and "key_hash" not in k for k in listed)


def test_no_secret_in_logs_or_ledger(auth_gateway):
    secret = cli_key(auth_gateway.db_url, "quiet")
    post(auth_gateway, secret)
    post(auth_gateway, secret + "x")  # a wrong key, logged nowhere either
    post(auth_gateway, secret, body={"model": "nope", "messages": [{"role": "user", "content": "x"}]})
    httpx.get(auth_gateway.url + "/v1/costs/summary", headers={"authorization": f"Bearer {secret}"})
    auth_gateway.stop()
    assert secret[:20] not in auth_gateway.log_text()
    engine = sa.create_engine(auth_gateway.db_url)
    with engine.connect() as conn:
        dump = "\n".join(str(tuple(r)) for table in ("ledger_requests", "api_keys")
                         for r in conn.execute(sa.text(f"SELECT * FROM {table}")))
    engine.dispose()
    assert secret[:20] not in dump and "hello there" not in dump  # prompts are not stored by default
