"""One default router for the CLI and the gateway (issue #15, item 13).

``python -m router score`` used to default to a path relative to the working directory and to
the MMLU router, while the gateway served the support router at its measured threshold.
"""

from __future__ import annotations

import json

from typer.testing import CliRunner

from gateway.config import RouterConfig, load_config
from router.artifact import load_router
from router.cli import app
from router.defaults import DEFAULT_ARTIFACT, DEFAULT_THRESHOLD

PROMPT = "I was charged twice for the same card payment"


def test_score_defaults_to_what_the_gateway_serves_from_any_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a relative default would not be found from here
    result = CliRunner().invoke(app, ["score", PROMPT])
    assert result.exit_code == 0, result.output
    scored = json.loads(result.stdout.strip().splitlines()[-1])
    assert scored["model"] == str(DEFAULT_ARTIFACT)
    assert scored["threshold"] == DEFAULT_THRESHOLD

    served = load_config()  # the embedded defaults
    assert served.router.artifact == str(DEFAULT_ARTIFACT)
    assert served.router.threshold == DEFAULT_THRESHOLD
    expected = load_router(DEFAULT_ARTIFACT).score([{"role": "user", "content": PROMPT}])
    assert scored["score"] == round(expected, 6)
    assert scored["tier"] == ("teacher (strong)" if expected >= DEFAULT_THRESHOLD else "student (cheap)")


def test_another_artifact_keeps_its_own_threshold_unless_overridden():
    assert RouterConfig(artifact="/elsewhere/router.skops").threshold is None  # the artifact's own
    assert RouterConfig(artifact="/elsewhere/router.skops", threshold=0.4).threshold == 0.4
    assert RouterConfig(artifact=str(DEFAULT_ARTIFACT), threshold=0.4).threshold == 0.4
