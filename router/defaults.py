"""The router the project ships and serves by default, and the threshold it is served at.

One source of truth for both ``python -m router score`` and the gateway's config (which may
import ``router``; ``router`` never imports the gateway). The threshold is the operating point
``benchmarks/e2e_savings.py`` measured for the support workload on its validation mix (95 % of
all-teacher quality), not the artifact's own training-time threshold, so it lives here rather
than inside the artifact.
"""

from __future__ import annotations

from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_ARTIFACT = PROJECT_ROOT / "artifacts" / "router" / "support_router.skops"
DEFAULT_THRESHOLD = 0.139


def default_threshold_for(artifact: str | Path) -> float | None:
    """The measured operating point if ``artifact`` is the default one; None for any other
    artifact, whose own (training-time) threshold then applies."""
    return DEFAULT_THRESHOLD if Path(artifact).expanduser().resolve() == DEFAULT_ARTIFACT else None


def served_threshold(artifact: str | Path, override: float | None, artifact_threshold: float) -> float:
    """The threshold to route at: an explicit override, else the default artifact's measured
    operating point, else the threshold the artifact carries."""
    if override is not None:
        return override
    default = default_threshold_for(artifact)
    return artifact_threshold if default is None else default
