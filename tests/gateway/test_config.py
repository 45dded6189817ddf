"""Config validation: mistakes fail at load time with a message naming the problem."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from gateway.config import PROJECT_ROOT, load_config, parse_config

PRICE = {"input_per_million": 1, "output_per_million": 2}


def tier(name: str, **kw) -> dict:
    return {"model_name": name, "price": PRICE, "url": {"base_url": "http://127.0.0.1:1/v1"}, **kw}


def test_embedded_defaults_load_with_placeholders_expanded(monkeypatch, tmp_path):
    monkeypatch.setenv("TIERWISE_MODEL_CACHE", str(tmp_path))
    cfg = load_config()
    assert [t.model_name for t in cfg.model_list] == ["flagship", "teacher", "student"]
    # One process: the general base as the flagship, the support adapter as the teacher tier.
    assert cfg.tier("flagship").vllm.model == f"{tmp_path}/base-teacher"
    assert cfg.tier("flagship").vllm.lora_modules == {"teacher": f"{tmp_path}/teacher-adapter"}
    assert cfg.tier("teacher").served_by == "flagship"
    assert cfg.router.competence.tier == "flagship"
    assert cfg.router.policy == "cascade" and cfg.router.artifact is None  # no router in front of the cascade
    assert cfg.router.competence.near_tier == "teacher"
    for artifact in (cfg.router.cascade.artifact, cfg.router.competence.artifact,
                     cfg.router.competence.near_check.artifact):
        assert artifact.startswith(f"{PROJECT_ROOT}/artifacts/") and Path(artifact).exists()
    assert cfg.ledger.url == f"sqlite:///{PROJECT_ROOT}/.tierwise/ledger.db"
    assert cfg.teacher_tier == "flagship"


@pytest.mark.parametrize("model_list, message", [
    ([tier("a"), tier("a")], "used twice"),
    ([tier("a", aliases=["auto"])], "reserved 'auto'"),
    ([{"model_name": "a", "price": PRICE}], "exactly one of vllm:, url:, litellm:"),
    ([{"model_name": "a", "url": {"base_url": "http://x/v1"}}], "needs a price"),
    ([tier("a", vllm={"model": "/m"})], "exactly one of"),
])
def test_bad_model_lists_are_refused(model_list, message):
    with pytest.raises(ValidationError, match=message):
        parse_config({"model_list": model_list})


def test_unknown_counterfactual_teacher_is_refused():
    with pytest.raises(ValidationError, match="counterfactual teacher tier 'ghost'"):
        parse_config({"model_list": [tier("a")], "teacher": "ghost"})


def test_unknown_keys_are_refused():
    with pytest.raises(ValidationError, match="max_tokenz"):
        parse_config({"model_list": [tier("a", max_tokenz=3)]})


def test_teacher_defaults_to_role_then_first_tier():
    assert parse_config({"model_list": [tier("a"), tier("b", role="teacher")]}).teacher_tier == "b"
    assert parse_config({"model_list": [tier("a"), tier("b")]}).teacher_tier == "a"


def test_capabilities_start_vllm_with_the_flags_they_need():
    """A tier that supports tools gets vLLM's tool calling and the packaged tools template; an
    embedding-only tier runs as a pooling model; the default flagship and its adapter call tools."""
    from gateway.config import load_config
    from gateway.tier_config import TOOLS_CHAT_TEMPLATE
    from gateway.tiers.vllm_process import vllm_command

    defaults = load_config()
    flagship = defaults.tier("flagship")
    cmd = vllm_command(flagship, 8100)
    assert cmd[cmd.index("--tool-call-parser") + 1] == "hermes" and "--enable-auto-tool-choice" in cmd
    assert cmd[cmd.index("--tool-strict-level") + 1] == "parameter"
    assert cmd[cmd.index("--chat-template") + 1] == TOOLS_CHAT_TEMPLATE and Path(TOOLS_CHAT_TEMPLATE).is_file()
    # The specialists declare neither tools nor structured output: such requests go to the flagship.
    assert not defaults.tier("teacher").supports.tools and not defaults.tier("student").supports.tools
    assert not defaults.tier("student").supports.structured_output and flagship.supports.structured_output
    student = vllm_command(defaults.tier("student"), 8101)
    assert "--enable-auto-tool-choice" not in student and "--chat-template" not in student
    embed = parse_config({"model_list": [{"model_name": "e", "price": PRICE, "supports": {"embeddings": True,
                                                                                        "chat": False},
                                          "vllm": {"model": "/m"}}]}).tier("e")
    cmd = vllm_command(embed, 8102)
    assert cmd[cmd.index("--runner") + 1] == "pooling" and "--structured-outputs-config" not in cmd


def test_an_adapter_cannot_call_tools_its_process_cannot():
    host = {"model_name": "base", "price": PRICE, "vllm": {"model": "/m", "lora_modules": {"lora": "/a"}}}
    with pytest.raises(ValueError, match="tool calling"):
        parse_config({"model_list": [host, {"model_name": "lora", "price": PRICE, "served_by": "base",
                                            "supports": {"tools": True}}]})


def test_per_hour_prices_are_for_tiers_with_a_throughput():
    with pytest.raises(ValueError, match="per_hour"):
        parse_config({"model_list": [{"model_name": "h", "price": {"per_hour": 1.0},
                                      "litellm": {"model": "openai/gpt-4o"}}]})
