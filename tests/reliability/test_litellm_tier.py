"""litellm tiers recover and report mid-stream failures (issue #15, item 7).

The hosted tier is the stub upstream served by uvicorn, reached through litellm as an
``openai/...`` model with ``api_base``: litellm's real OpenAI path, no network.
"""

from __future__ import annotations

from pathlib import Path

import httpx

from support.ledger import ledger_row
from support.processes import ServerProcess, start_gateway, wait_until
from support.stub_modes import stub_factory  # noqa: F401 - a fixture

PRICE = {"input_per_million": 1.0, "output_per_million": 2.0}


def hosted_gateway(stub: ServerProcess, tmp: Path, ledger_url: str) -> ServerProcess:
    config = {
        "model_list": [{
            "model_name": "hosted", "role": "teacher", "price": PRICE, "timeout_s": 10,
            "breaker_failures": 2, "breaker_cooldown_s": 1.0,
            "litellm": {"model": "openai/stub", "api_base": stub.url + "/v1", "api_key_env": "STUB_KEY"},
        }],
        "router": {"policy": "fixed", "default_tier": "hosted"},
        "ledger": {"url": ledger_url},
        "auth": {"enabled": False},
    }
    return start_gateway(config, tmp, timeout_s=120, env={"STUB_KEY": "sk-stub"})


def ask(gw: ServerProcess, stream: bool = False) -> httpx.Response:
    return httpx.post(gw.url + "/v1/chat/completions", timeout=60, json={
        "model": "hosted", "stream": stream, "messages": [{"role": "user", "content": "hi there"}]})


def circuit(gw: ServerProcess) -> dict:
    return httpx.get(gw.url + "/health").json()["tiers"]["hosted"]["circuit"]


def booked(ledger_url: str, request_id: str) -> tuple:
    """(status, completion_tokens, usage_source) of the request, once booked."""
    row = ledger_row(ledger_url, request_id, wait_s=15)
    return row["status"], row["completion_tokens"], row["usage_source"]


def test_litellm_circuit_closes_again_once_the_provider_is_back(tmp_path, stub_factory):
    stub = stub_factory(tokens=8)
    port = int(stub.url.rsplit(":", 1)[1])
    gw = hosted_gateway(stub, tmp_path, f"sqlite:///{tmp_path / 'l.db'}")
    try:
        assert ask(gw).status_code == 200
        stub.stop()
        for _ in range(2):
            assert ask(gw).status_code == 502
        assert circuit(gw)["open"] is True
        assert ask(gw).status_code == 503  # open: refused without a call

        stub_factory(tokens=8, port=port)  # the provider is back, on the same address
        wait_until(lambda: not circuit(gw)["open"], 30, "the hosted tier's circuit to close")
        resp = ask(gw)
        assert resp.status_code == 200 and resp.json()["choices"][0]["message"]["content"].startswith("tok")
    finally:
        gw.stop()


def test_litellm_error_mid_stream_is_booked_as_an_error(tmp_path, stub_factory):
    ledger_url = f"sqlite:///{tmp_path / 'l.db'}"
    stub = stub_factory("--drop-after", "3", tokens=8)
    gw = hosted_gateway(stub, tmp_path, ledger_url)
    try:
        resp = ask(gw, stream=True)
        status, completion_tokens, source = booked(ledger_url, resp.headers["x-request-id"])
    finally:
        gw.stop()
    assert resp.status_code == 200
    assert '"error"' in resp.text and resp.text.rstrip().endswith("data: [DONE]")
    assert status == "error"
    assert (completion_tokens, source) == (3, "counted")


def test_provider_cookies_are_not_carried_to_other_requests(tmp_path, stub_factory):
    """litellm's HTTP client is one per process, shared by every client of the gateway: a cookie
    the provider sets on one answer must not go out with the next request (streamed or not).
    Reached by host name: cookies from an IP address would be refused anyway."""
    stub = stub_factory("--set-cookie", tokens=4)
    by_name = ServerProcess(stub.proc, stub.url.replace("127.0.0.1", "localhost"), stub.log)
    gw = hosted_gateway(by_name, tmp_path, f"sqlite:///{tmp_path / 'l.db'}")
    try:
        for stream in (False, True, False):
            assert ask(gw, stream=stream).status_code == 200
        assert "stub_session" in httpx.post(stub.url + "/v1/chat/completions", timeout=30, json={
            "model": "stub", "messages": [{"role": "user", "content": "hi"}]}).headers["set-cookie"]
        assert "stub_requests_with_cookie_total 0" in httpx.get(stub.url + "/metrics", timeout=10).text.splitlines()
    finally:
        gw.stop()
