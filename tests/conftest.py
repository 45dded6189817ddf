"""Shared fixtures: real model dirs, real vLLM tiers behind a real gateway, a stub upstream.

The expensive pieces (two vLLM servers, ~40 s each to start on 2 cores) are session-scoped
and started once, by the gateway itself, exactly as `python -m gateway serve` does it.
"""

from __future__ import annotations

import os
import sys
import uuid
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from support.models import STUDENT_PRICE, TEACHER_PRICE, base_teacher, layer_dropped  # noqa: E402
from support.processes import REPO, ServerProcess, free_port, start_gateway, start_stub  # noqa: E402


@pytest.fixture(scope="session")
def model_dirs() -> dict[str, Path]:
    """The packaged teacher, dequantized, and a small 4-layer model built from it."""
    return {"teacher": base_teacher(), "student": layer_dropped(4)}


@pytest.fixture(scope="session")
def session_tmp(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("tierwise")


def vllm_tier(name: str, model: Path, role: str, price: dict, port: int, aliases: list[str] | None = None,
              supports: dict | None = None) -> dict:
    return {"model_name": name, "role": role, "aliases": aliases or [], "price": price,
            "vllm": {"model": str(model), "port": port, "max_model_len": 512,
                     "extra_args": ["--max-num-seqs", "16"]}, "supports": supports or {}}


@pytest.fixture(scope="session")
def vllm_gateway(model_dirs, session_tmp) -> ServerProcess:
    """The gateway supervising two real vLLM tiers, ledger in SQLite, trained router if shipped."""
    router_artifact = REPO / "artifacts" / "router" / "mmlu_router.skops"
    config = {
        "model_list": [
            # The teacher calls tools (vLLM's hermes parser + the packaged tools template); the student does not.
            vllm_tier("teacher", model_dirs["teacher"], "teacher", TEACHER_PRICE, free_port(), ["flagship"],
                      supports={"tools": True}),
            vllm_tier("student", model_dirs["student"], "student", STUDENT_PRICE, free_port()),
        ],
        "router": {"policy": "trained", "artifact": str(router_artifact), "strong_tier": "teacher",
                   "weak_tier": "student"},
        "ledger": {"url": f"sqlite:///{session_tmp / 'ledger.db'}"},
        "auth": {"enabled": False},
    }
    gateway = start_gateway(config, session_tmp, timeout_s=900)
    gateway.config = config  # type: ignore[attr-defined]
    yield gateway
    gateway.stop()


@pytest.fixture(scope="session")
def stub(session_tmp) -> ServerProcess:
    server = start_stub(session_tmp)
    yield server
    server.stop()


@pytest.fixture
def postgres_url() -> str:
    """A fresh schema on the real PostgreSQL server, dropped afterwards."""
    import sqlalchemy as sa

    base = os.environ.get("TIERWISE_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
    schema = "tw_" + uuid.uuid4().hex[:10]
    engine = sa.create_engine(base)
    with engine.begin() as conn:
        conn.execute(sa.text(f"CREATE SCHEMA {schema}"))
    yield f"{base}?options=-csearch_path%3D{schema}"
    with engine.begin() as conn:
        conn.execute(sa.text(f"DROP SCHEMA {schema} CASCADE"))
    engine.dispose()
