"""tierwise router: decide per request whether the cheap tier (student) is good enough.

Public interface used by the gateway::

    from router import load_router
    r = load_router(path)          # skops artifact, trusted-types list
    r.score(messages) >= r.threshold   # True -> send to the teacher

``router`` never imports ``gateway``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from router.artifact import TRUSTED_TYPES, UntrustedArtifactError, load_router, save_router
    from router.estimator import ComplexityRouter, threshold_for
    from router.scoring import Router

# Imported on first use (PEP 562): the artifact code pulls in scikit-learn and skops (seconds),
# which ``import router.defaults`` (read by the gateway's config, hence by every CLI command)
# must not pay.
_LAZY = {
    "TRUSTED_TYPES": "router.artifact", "UntrustedArtifactError": "router.artifact",
    "load_router": "router.artifact", "save_router": "router.artifact",
    "ComplexityRouter": "router.estimator", "threshold_for": "router.estimator", "Router": "router.scoring",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'router' has no attribute {name!r}")


__all__ = [
    "TRUSTED_TYPES",
    "ComplexityRouter",
    "Router",
    "UntrustedArtifactError",
    "load_router",
    "save_router",
    "threshold_for",
]

__version__ = "0.1.0"
