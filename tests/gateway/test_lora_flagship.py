"""One vLLM process, two tiers: the general base model (``flagship``) and the support LoRA adapter
(``teacher``, ``served_by: flagship``), each with its own name, price and ledger rows.

The slow tests start a real vLLM CPU server through the gateway with the shipped adapter
(artifacts/tiers/teacher); the fast ones check the configuration contract and the command line.
"""

from __future__ import annotations

import json

import httpx
import pytest
from pydantic import ValidationError

from gateway.config import parse_config
from gateway.tiers.vllm_process import vllm_command
from support.ledger import ledger_row as read_ledger_row
from support.models import TEACHER_PRICE, base_teacher
from support.processes import REPO, free_port, start_gateway
from support.shared_data import shared_data

ADAPTER = REPO / "artifacts" / "tiers" / "teacher"
SUPPORT_PROMPT = "You are a bank's customer-support assistant. Name the intent of the customer's message, then reply briefly."
ADAPTER_PRICE = {"input_per_million": 1.0, "output_per_million": 4.0}  # unlike the base's: bookings must tell them apart


def flagship_config(model: str, adapter: str, port: int | None = None) -> dict:
    return {
        "model_list": [
            {"model_name": "flagship", "role": "teacher", "price": TEACHER_PRICE,
             "vllm": {"model": model, "port": port, "max_model_len": 512, "lora_modules": {"teacher": adapter},
                      "startup_timeout_s": 1500,  # a shared 2-core machine under load
                      "extra_args": ["--max-num-seqs", "8"]}},
            {"model_name": "teacher", "aliases": ["support-teacher"], "role": "other", "served_by": "flagship",
             "price": ADAPTER_PRICE},
        ],
        "router": {"policy": "fixed", "default_tier": "flagship"},
        "auth": {"enabled": False},
    }


# ------------------------------------------------------------------------- configuration
def test_adapter_tier_must_name_a_vllm_tier_that_lists_it():
    cfg = flagship_config("/models/base", "/models/adapter")
    parsed = parse_config(cfg)
    assert parsed.tier("teacher").kind == "adapter"
    cfg["model_list"][0]["vllm"]["lora_modules"] = {"other": "/models/adapter"}
    with pytest.raises(ValidationError, match="lora_modules"):
        parse_config(cfg)
    cfg = flagship_config("/models/base", "/models/adapter")
    cfg["model_list"][1]["served_by"] = "nowhere"
    with pytest.raises(ValidationError, match="served_by"):
        parse_config(cfg)


def test_adapter_tier_has_exactly_one_backend():
    cfg = flagship_config("/models/base", "/models/adapter")
    cfg["model_list"][1]["url"] = {"base_url": "http://127.0.0.1:1/v1"}
    with pytest.raises(ValidationError, match="exactly one"):
        parse_config(cfg)


def test_vllm_command_serves_each_adapter_under_its_tier_name():
    cfg = parse_config(flagship_config("/models/base", "/models/adapter"))
    cmd = vllm_command(cfg.tier("flagship"), 4321)
    assert "--enable-lora" in cmd
    assert cmd[cmd.index("--lora-modules") + 1] == "teacher=/models/adapter"
    assert cmd[cmd.index("--max-lora-rank") + 1] == "16"  # the shipped adapter's rank
    assert cmd[cmd.index("--served-model-name") + 1] == "flagship"


def test_shipped_adapter_fits_the_default_rank():
    rank = json.loads((ADAPTER / "adapter_config.json").read_text())["r"]
    assert rank <= parse_config(flagship_config("/m", "/a")).tier("flagship").vllm.max_lora_rank


# ------------------------------------------------------------------------ real vLLM (slow)
@pytest.fixture(scope="module")
def lora_gateway(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("lora")
    config = flagship_config(str(base_teacher()), str(ADAPTER), free_port())
    config["ledger"] = {"url": f"sqlite:///{tmp / 'ledger.db'}"}
    gateway = start_gateway(config, tmp, timeout_s=1800)
    gateway.config = config  # type: ignore[attr-defined]
    yield gateway
    gateway.stop()


def chat(gateway, model: str, text: str, **extra) -> httpx.Response:
    body = {"model": model, "max_tokens": 16, "temperature": 0,
            "messages": [{"role": "system", "content": SUPPORT_PROMPT}, {"role": "user", "content": text}], **extra}
    return httpx.post(gateway.url + "/v1/chat/completions", json=body, timeout=180)


def ledger_row(gateway, request_id: str) -> dict:
    httpx.get(gateway.url + "/v1/costs/summary")  # flushes pending rows
    return read_ledger_row(gateway.config["ledger"]["url"], request_id)


@pytest.mark.slow
def test_one_process_serves_both_tiers(lora_gateway):
    tiers = httpx.get(lora_gateway.url + "/health", timeout=10).json()["tiers"]
    assert tiers["flagship"]["status"] == tiers["teacher"]["status"] == "ready"
    assert tiers["teacher"]["kind"] == "adapter" and tiers["teacher"]["served_by"] == "flagship"
    assert tiers["teacher"]["base_url"] == tiers["flagship"]["base_url"]
    models = {m["id"] for m in httpx.get(lora_gateway.url + "/v1/models", timeout=10).json()["data"]}
    assert {"flagship", "teacher", "support-teacher"} <= models


@pytest.mark.slow
def test_adapter_answers_as_the_support_teacher_and_base_as_a_general_model(lora_gateway):
    weather = "What's the weather in Paris tomorrow?"
    support = chat(lora_gateway, "teacher", weather)
    general = chat(lora_gateway, "flagship", weather)
    assert support.status_code == general.status_code == 200
    assert support.headers["x-tierwise-tier"] == "teacher" and general.headers["x-tierwise-tier"] == "flagship"
    support_text = support.json()["choices"][0]["message"]["content"]
    general_text = general.json()["choices"][0]["message"]["content"]
    # The adapter was trained to answer "Intent: <banking77 label>" even for this (the complaint);
    # the base model was not, so the two answers differ: the adapter really is applied per request.
    assert support_text.startswith("Intent:")
    labels = set(json.loads(shared_data("banking77", "categories.json").read_text()))
    assert support_text.split("\n")[0].removeprefix("Intent:").strip() in labels
    assert general_text != support_text


@pytest.mark.slow
@pytest.mark.parametrize("model, tier, price", [("teacher", "teacher", ADAPTER_PRICE),
                                                ("support-teacher", "teacher", ADAPTER_PRICE),
                                                ("flagship", "flagship", TEACHER_PRICE)])
def test_each_tier_is_booked_at_its_own_price(lora_gateway, model, tier, price):
    resp = chat(lora_gateway, model, "I still have not received my new card, what should I do?", user="lora-test")
    assert resp.status_code == 200
    usage = resp.json()["usage"]
    row = ledger_row(lora_gateway, resp.headers["x-request-id"])
    assert (row["tier"], row["requested_model"], row["status"]) == (tier, model, "ok")
    want = (usage["prompt_tokens"] * price["input_per_million"] + usage["completion_tokens"] * price["output_per_million"]) / 1e6
    assert row["cost"] == pytest.approx(want)
    # The counterfactual is the role: teacher tier (the flagship), whichever tier answered.
    flagship = (usage["prompt_tokens"] * TEACHER_PRICE["input_per_million"]
                + usage["completion_tokens"] * TEACHER_PRICE["output_per_million"]) / 1e6
    assert row["teacher_cost"] == pytest.approx(flagship)


@pytest.mark.slow
def test_adapter_streams(lora_gateway):
    with httpx.stream("POST", lora_gateway.url + "/v1/chat/completions", timeout=180, json={
            "model": "teacher", "max_tokens": 16, "temperature": 0, "stream": True,
            "messages": [{"role": "system", "content": SUPPORT_PROMPT},
                         {"role": "user", "content": "How do I top up my account by card?"}]}) as resp:
        assert resp.status_code == 200
        events = [line for line in resp.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "data: [DONE]"
    text = "".join((json.loads(e[6:])["choices"] or [{}])[0].get("delta", {}).get("content") or ""
                   for e in events[:-1])
    assert text.startswith("Intent:")
