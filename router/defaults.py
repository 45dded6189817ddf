"""The routers the project ships and serves by default.

One source of truth for both ``python -m router score`` and the gateway's config (which may
import ``router``; ``router`` never imports the gateway). Each artifact carries the threshold
it is served at, chosen on validation data when it was written (its metadata says which):

* ``DEFAULT_OUTCOME_ARTIFACT``: the support workload's router trained on our own student's and
  teacher's outcomes on a validation carve of Banking77 *train* (``python -m router
  train-outcomes``), served by ``router.policy: outcome``;
* ``DEFAULT_ARTIFACT``: the general difficulty router trained on RouteLLM's MMLU train split
  (``router.policy: trained``).

The support router the project shipped before (trained partly on Banking77 *test* outcomes)
is retired (issue #12).
"""

from __future__ import annotations

from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_ARTIFACT = PROJECT_ROOT / "artifacts" / "router" / "mmlu_router.skops"
DEFAULT_OUTCOME_ARTIFACT = PROJECT_ROOT / "artifacts" / "router" / "support_outcome_router.skops"


def served_threshold(override: float | None, artifact_threshold: float) -> float:
    """The threshold to route at: an explicit override, else the one the artifact carries."""
    return artifact_threshold if override is None else override
