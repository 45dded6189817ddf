"""What a caller without a key can see or hold (issue #15, item 14).

A real gateway with auth on in front of the stub upstream: API docs closed, ``/health`` reduced
to state names unless an admin key asks, 401s counted in Prometheus but not booked, and
clients that send their headers or body too slowly cut off with 408 instead of holding sockets.
"""

from __future__ import annotations

import socket
import sqlite3
import time

import httpx
import pytest
from support.configs import stub_config
from support.processes import ServerProcess, start_gateway
from support.stub_modes import stub_factory  # noqa: F401 - a fixture

ADMIN = "tw-exposure-admin-secret"
CHAT = {"model": "teacher", "messages": [{"role": "user", "content": "hello"}]}


@pytest.fixture
def closed_gateway(stub, tmp_path) -> ServerProcess:
    ledger = tmp_path / "ledger.db"
    config = stub_config(stub.url, f"sqlite:///{ledger}", auth=True,
                         server={"header_read_timeout_s": 1.0, "body_read_timeout_s": 1.0})
    gw = start_gateway(config, tmp_path, timeout_s=120, env={"TIERWISE_ADMIN_KEY": ADMIN})
    gw.ledger = ledger  # type: ignore[attr-defined]
    yield gw
    gw.stop()


def test_docs_are_closed_and_health_shows_details_to_admins_only(closed_gateway):
    for path in ("/docs", "/redoc", "/openapi.json"):
        assert httpx.get(closed_gateway.url + path).status_code == 404, path
    public = httpx.get(closed_gateway.url + "/health")
    assert public.status_code == 200
    assert public.json() == {"status": "ok", "tiers": {"teacher": {"status": "ready"}, "student": {"status": "ready"}}}
    assert "127.0.0.1" not in public.text
    wrong = httpx.get(closed_gateway.url + "/health", headers={"authorization": "Bearer tw-wrong"})
    assert wrong.status_code == 200 and wrong.json() == public.json()
    admin = httpx.get(closed_gateway.url + "/health", headers={"authorization": f"Bearer {ADMIN}"}).json()
    assert admin["tiers"]["student"]["circuit"]["open"] is False
    assert "ledger_backlog" in admin and "routing_policy" in admin


def test_docs_open_when_configured(stub, tmp_path):
    config = stub_config(stub.url, f"sqlite:///{tmp_path / 'ledger.db'}", auth=True,
                         server={"expose_docs": True, "public_health_details": True})
    gw = start_gateway(config, tmp_path, timeout_s=120)
    try:
        assert httpx.get(gw.url + "/openapi.json").json()["info"]["title"] == "tierwise gateway"
        assert "circuit" in httpx.get(gw.url + "/health").json()["tiers"]["teacher"]
    finally:
        gw.stop()


def test_401s_are_counted_not_booked(closed_gateway):
    for _ in range(3):
        resp = httpx.post(closed_gateway.url + "/v1/chat/completions", json=CHAT,
                          headers={"authorization": "Bearer tw-wrong"})
        assert resp.status_code == 401
    ok = httpx.post(closed_gateway.url + "/v1/chat/completions", json=CHAT, headers={"authorization": f"Bearer {ADMIN}"})
    assert ok.status_code == 200
    metrics = httpx.get(closed_gateway.url + "/metrics").text
    assert "tierwise_auth_failures_total 3.0" in metrics
    with sqlite3.connect(closed_gateway.ledger) as db:
        assert db.execute("SELECT http_status FROM ledger_requests").fetchall() == [(200,)]


def _address(gw: ServerProcess) -> tuple[str, int]:
    host, port = gw.url.removeprefix("http://").split(":")
    return host, int(port)


def test_unfinished_headers_are_cut_off(closed_gateway):
    socks = []
    for _ in range(50):
        sock = socket.create_connection(_address(closed_gateway))
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\n")  # never the blank line
        socks.append(sock)
    idle = socket.create_connection(_address(closed_gateway))  # connects, sends nothing
    socks.append(idle)
    started = time.monotonic()
    try:
        for sock in socks:
            sock.settimeout(10)
            reply = sock.recv(4096)
            assert reply.startswith(b"HTTP/1.1 408") or reply == b""
            assert sock.recv(4096) == b""  # closed by the gateway
        waited = time.monotonic() - started
    finally:
        for sock in socks:
            sock.close()
    assert waited < 5, f"unfinished headers held for {waited:.1f} s"
    assert httpx.get(closed_gateway.url + "/health").status_code == 200


def test_a_trickled_body_gets_408_and_a_row(closed_gateway):
    sock = socket.create_connection(_address(closed_gateway))
    try:
        sock.sendall(f"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
                     f"authorization: Bearer {ADMIN}\r\ncontent-length: 500\r\n\r\n".encode())
        sock.settimeout(10)
        started = time.monotonic()
        reply = b""
        for _ in range(8):  # a byte every 0.5 s: past the 1 s body deadline
            sock.sendall(b" ")
            time.sleep(0.5)
            try:
                sock.setblocking(False)
                reply += sock.recv(4096)
            except BlockingIOError:
                pass
            finally:
                sock.setblocking(True)
            if reply:
                break
        waited = time.monotonic() - started
    finally:
        sock.close()
    assert reply.startswith(b"HTTP/1.1 408"), reply[:200]
    assert b"request_timeout" in reply
    assert waited < 3
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with sqlite3.connect(closed_gateway.ledger) as db:
            rows = db.execute("SELECT status, http_status FROM ledger_requests").fetchall()
        if rows:
            break
        time.sleep(0.2)
    assert rows == [("rejected", 408)]


def test_upstream_cookies_are_not_carried_to_other_requests(stub_factory, tmp_path):
    """The gateway's one upstream session is shared by every client: a cookie that a tier sets
    on one answer (a load balancer's sticky session, a hosted provider's bot check) must not be
    sent back with the next client's request. Reached by host name, since aiohttp's default jar
    already refuses cookies from IP addresses."""
    upstream = stub_factory("--set-cookie")
    by_name = upstream.url.replace("127.0.0.1", "localhost")
    gw = start_gateway(stub_config(by_name, f"sqlite:///{tmp_path / 'ledger.db'}"), tmp_path, timeout_s=120)
    try:
        for stream in (False, True, False):
            reply = httpx.post(gw.url + "/v1/chat/completions", json={**CHAT, "stream": stream}, timeout=30)
            assert reply.status_code == 200
            assert "stub_session" not in reply.headers.get("set-cookie", "")  # not relayed to the client either
        direct = httpx.post(upstream.url + "/v1/chat/completions", json=CHAT, timeout=30)
        assert "stub_session" in direct.headers["set-cookie"]  # the stub does set one
        metrics = httpx.get(upstream.url + "/metrics", timeout=10).text
        assert "stub_requests_with_cookie_total 0" in metrics.splitlines()
    finally:
        gw.stop()
