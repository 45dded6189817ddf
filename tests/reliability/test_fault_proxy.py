"""The fault proxy itself, against the real Postgres and Redis it will sit in front of.

Other reliability tests trust ``TcpProxy`` to produce an outage (cut), a silent peer (hang) and a
recovery (restore); if it forwarded during a cut or dropped bytes after a restore, their results would
mean nothing. These tests pin each mode down with the real drivers.
"""

from __future__ import annotations

import os
import socket
import time

import psycopg
import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from support.faults import BlackHoleServer, TcpProxy

PG_HOST, PG_PORT = "127.0.0.1", 5432
REDIS_HOST, REDIS_PORT = "127.0.0.1", int(os.environ.get("TIERWISE_TEST_REDIS_PORT", "6379"))


def _pg(port: int) -> psycopg.Connection:
    return psycopg.connect(host="127.0.0.1", port=port, user="postgres", dbname="test", connect_timeout=3,
                           autocommit=True)


def _select(conn: psycopg.Connection, value: int) -> int:
    row = conn.execute("SELECT %s::int + 1", (value,)).fetchone()
    assert row is not None
    return row[0]


def test_postgres_query_works_through_the_proxy_fails_while_cut_and_works_after_restore():
    with TcpProxy(PG_HOST, PG_PORT) as proxy:
        conn = _pg(proxy.port)
        assert _select(conn, 41) == 42

        proxy.cut()
        # The open connection is reset: the next statement fails at once, not after a timeout.
        started = time.monotonic()
        with pytest.raises(psycopg.OperationalError):
            _select(conn, 1)
        assert time.monotonic() - started < 2
        # New connections are refused (reset on accept) while the cut lasts.
        with pytest.raises(psycopg.OperationalError):
            _pg(proxy.port)

        proxy.restore()
        fresh = _pg(proxy.port)
        assert _select(fresh, 99) == 100
        fresh.close()
        assert proxy.accepted == 3


def test_large_payloads_cross_the_proxy_intact():
    """Many chunks both ways: a proxy that reorders or drops bytes would corrupt the echoed value."""
    payload = "x" * 3_000_000 + "end"
    with TcpProxy(PG_HOST, PG_PORT) as proxy, _pg(proxy.port) as conn:
        row = conn.execute("SELECT %s::text", (payload,)).fetchone()
        assert row is not None and row[0] == payload


def test_redis_ping_hangs_while_hanging_and_the_held_connection_resumes_after_restore():
    with TcpProxy(REDIS_HOST, REDIS_PORT) as proxy:
        client = redis.Redis(host="127.0.0.1", port=proxy.port, socket_timeout=0.5, socket_connect_timeout=0.5,
                             retry=Retry(NoBackoff(), 0))
        assert client.ping() is True

        proxy.hang()
        started = time.monotonic()
        with pytest.raises(redis.exceptions.TimeoutError):
            client.ping()
        assert time.monotonic() - started >= 0.45  # it waited for the answer: the connection is still open

        # A brand-new connection is accepted (no connection error) but gets no answer either.
        raw = socket.create_connection(("127.0.0.1", proxy.port), timeout=0.5)
        raw.sendall(b"PING\r\n")
        with pytest.raises(TimeoutError):
            raw.recv(16)

        proxy.restore()
        # The bytes held during the hang are delivered now, so the raw socket gets its late answer.
        raw.settimeout(3)
        assert raw.recv(16) == b"+PONG\r\n"
        raw.close()
        fresh = redis.Redis(host="127.0.0.1", port=proxy.port, socket_timeout=2)
        assert fresh.ping() is True


def test_black_hole_accepts_reads_and_never_answers():
    with BlackHoleServer() as hole:
        client = redis.Redis(host="127.0.0.1", port=hole.port, socket_timeout=0.3, socket_connect_timeout=0.3,
                             retry=Retry(NoBackoff(), 0))
        with pytest.raises(redis.exceptions.TimeoutError):
            client.ping()
        assert hole.accepted == 1
