"""The student's init weights: the captured teacher tier's, resolved from the gateway config."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import sqlalchemy as sa

from flywheel.teacher import PACKAGED, captured_tier, teacher_weights
from gateway.config import GatewayConfig
from gateway.ledger.schema import captures_table, metadata

PRICE = {"input_per_million": 1.0, "output_per_million": 2.0}


def config(tmp_path: Path) -> GatewayConfig:
    base, adapter, student = tmp_path / "base", tmp_path / "adapter", tmp_path / "student"
    for d in (base, adapter, student):
        d.mkdir()
    return GatewayConfig.model_validate({"model_list": [
        {"model_name": "flagship", "role": "teacher", "price": PRICE,
         "vllm": {"model": str(base), "lora_modules": {"support": str(adapter)}}},
        {"model_name": "support", "role": "teacher", "served_by": "flagship", "price": PRICE},
        {"model_name": "student", "role": "student", "price": PRICE, "vllm": {"model": str(student)}},
        {"model_name": "hub", "role": "teacher", "price": PRICE, "vllm": {"model": "org/not-a-dir"}},
        {"model_name": "remote", "role": "teacher", "price": PRICE, "url": {"base_url": "http://127.0.0.1:9/v1"}},
    ], "router": {"policy": "fixed", "default_tier": "flagship"}})


def test_an_adapter_tier_is_its_hosts_model_with_its_adapter_merged(tmp_path):
    w = teacher_weights(config(tmp_path), "support")
    assert (w.model, w.adapter) == (str(tmp_path / "base"), tmp_path / "adapter")
    assert w.as_recipe() == {"teacher": str(tmp_path / "base"), "teacher_adapter": str(tmp_path / "adapter")}


def test_a_vllm_tier_is_its_model_dir(tmp_path):
    w = teacher_weights(config(tmp_path), "flagship")
    assert (w.model, w.adapter) == (str(tmp_path / "base"), None)
    assert w.as_recipe() == {"teacher": str(tmp_path / "base")}


def test_without_local_weights_the_student_starts_from_the_packaged_model(tmp_path):
    cfg = config(tmp_path)
    for tier, reason in (("remote", "url tier"), ("hub", "not a model dir"), ("gone", "not in the gateway config"),
                         (None, "no captured tier")):
        w = teacher_weights(cfg, tier)
        assert (w.model, w.adapter) == (PACKAGED, None) and reason in w.why, (tier, w.why)
    assert teacher_weights(None, "support").model == PACKAGED


def test_the_captured_tier_is_the_one_that_answered_most(tmp_path):
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'ledger.db'}")
    metadata.create_all(engine, tables=[captures_table])
    rows = [("support", "support")] * 3 + [("support", "flagship")] + [("exam", "flagship")]
    with engine.begin() as conn:
        conn.execute(captures_table.insert(), [
            {"ts": datetime.now(timezone.utc), "request_id": f"r{i}", "workload": w, "endpoint": "chat", "tier": t,
             "request_json": "{}", "response_json": "{}", "size_bytes": 2} for i, (w, t) in enumerate(rows)])
    assert captured_tier(engine, "support") == "support"
    assert captured_tier(engine, "exam") == "flagship"
    assert captured_tier(engine, "nothing") is None
