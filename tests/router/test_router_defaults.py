"""One default router for the CLI and the gateway (issue #15 item 13; issue #12 retired the
support router trained on Banking77 test outcomes)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from gateway.config import CompetenceGateConfig, RouterConfig
from router.artifact import load_router
from router.cli import app
from router.defaults import DEFAULT_ARTIFACT, DEFAULT_OUTCOME_ARTIFACT, PROJECT_ROOT

PROMPT = "I was charged twice for the same card payment"
INDEX = PROJECT_ROOT / "artifacts" / "tiers" / "student" / "competence.skops"


def test_score_defaults_to_the_shipped_trained_router_from_any_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a relative default would not be found from here
    result = CliRunner().invoke(app, ["score", PROMPT])
    assert result.exit_code == 0, result.output
    scored = json.loads(result.stdout.strip().splitlines()[-1])
    router = load_router(DEFAULT_ARTIFACT)
    assert scored["model"] == str(DEFAULT_ARTIFACT)
    assert scored["threshold"] == round(router.threshold, 6)  # the artifact's own operating point
    expected = router.score([{"role": "user", "content": PROMPT}])
    assert scored["score"] == round(expected, 6)
    assert scored["tier"] == ("teacher (strong)" if expected >= router.threshold else "student (cheap)")
    assert RouterConfig(policy="trained").artifact == str(DEFAULT_ARTIFACT)


def test_the_support_router_trained_on_test_outcomes_is_retired():
    assert not (PROJECT_ROOT / "artifacts" / "router" / "support_router.skops").exists()
    assert DEFAULT_OUTCOME_ARTIFACT.is_file()
    gate = CompetenceGateConfig(artifact=str(INDEX))
    assert RouterConfig(policy="outcome", competence=gate).artifact == str(DEFAULT_OUTCOME_ARTIFACT)


def test_thresholds_are_the_artifacts_unless_overridden():
    assert RouterConfig(artifact="/elsewhere/router.skops").threshold is None  # the artifact's own
    assert RouterConfig(artifact="/elsewhere/router.skops", threshold=0.4).threshold == 0.4


def test_the_outcome_router_needs_the_competence_distance():
    with pytest.raises(ValueError, match="competence"):
        RouterConfig(policy="outcome")
