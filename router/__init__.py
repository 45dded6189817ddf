"""tierwise router: decide per request whether the cheap tier (student) is good enough.

Public interface used by the gateway::

    from router import load_router
    r = load_router(path)          # skops artifact, trusted-types list
    r.score(messages) >= r.threshold   # True -> send to the teacher

``router`` never imports ``gateway``.
"""

from router.artifact import TRUSTED_TYPES, UntrustedArtifactError, load_router, save_router
from router.estimator import ComplexityRouter, threshold_for
from router.scoring import Router

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
