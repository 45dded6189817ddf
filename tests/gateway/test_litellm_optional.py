"""litellm is optional: the default gateway image leaves it out (deploy/README.md). A config
with a litellm: tier must then stop at start with what to do, not fail on the first request.
(The real image refusing such a config is tests/deploy/test_containers.py.)"""

from __future__ import annotations

import importlib.util

import pytest
import yaml
from typer.testing import CliRunner

from gateway.cli import app
from gateway.tiers import litellm_provider


def hide_litellm(monkeypatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "litellm" else real(name, *a))


def test_require_litellm_names_the_image_and_the_lock(monkeypatch):
    litellm_provider.require_litellm("hosted")  # installed in the dev venv
    hide_litellm(monkeypatch)
    with pytest.raises(ValueError, match="tierwise/gateway-litellm") as exc:
        litellm_provider.require_litellm("hosted")
    assert "'hosted'" in str(exc.value) and "lock-gateway-litellm.txt" in str(exc.value)


def test_serve_refuses_a_litellm_tier_without_litellm(monkeypatch, tmp_path):
    hide_litellm(monkeypatch)
    config = tmp_path / "gateway.yaml"
    config.write_text(yaml.safe_dump({
        "model_list": [{"model_name": "hosted", "role": "teacher", "litellm": {"model": "openai/gpt-4o-mini"},
                        "price": {"input_per_million": 1.0, "output_per_million": 2.0}}],
        "router": {"policy": "fixed", "default_tier": "hosted"},
        "ledger": {"url": f"sqlite:///{tmp_path / 'ledger.db'}"}, "state_dir": str(tmp_path)}))
    result = CliRunner().invoke(app, ["serve", "--config", str(config), "--port", "1"])
    assert result.exit_code == 2, result.output
    assert "tierwise/gateway-litellm" in result.output
    assert not (tmp_path / "ledger.db").exists()  # stopped before anything started
