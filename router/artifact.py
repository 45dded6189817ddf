"""Save and load the router with skops, refusing anything that is not a router.

Pickle runs arbitrary code on load; a router file comes from CI or a colleague's disk, so it
is written with skops and read back only if every type it names is on an explicit allow-list
(``TRUSTED_TYPES``). A SHA-256 digest of the archive's members is stored beside them, so a
file edited after it was written (a swapped threshold, a patched coefficient) is refused too.
The digest detects accidents and naive edits; it is not a signature.
"""

from __future__ import annotations

import json
from pathlib import Path

from router.estimator import ComplexityRouter
from router.scoring import Router
from router.signed import DIGEST_MEMBER, UntrustedArtifactError, dump_signed, load_signed

FORMAT = "tierwise-router"
FORMAT_VERSION = 1

# The types a router artifact may contain beyond those skops trusts by default (NumPy,
# SciPy sparse, the standard scikit-learn estimators, builtins). Anything else named in a
# file (e.g. builtins.eval, os.system, a foreign class) makes the load fail before any
# object is constructed.
TRUSTED_TYPES: frozenset[str] = frozenset(
    {
        "router.estimator.ComplexityRouter",
        "router.features.CompactTfidfVectorizer",
        "router.features.ConversationColumns",
        "router.features.HandFeatures",
        "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
    }
)


def save_router(router: Router, path: Path | str) -> Path:
    """Write ``router`` to ``path`` (signed skops archive, see ``router/signed.py``)."""
    return dump_signed({
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "estimator": router.estimator,
        "threshold": float(router.threshold),
        # JSON text keeps the metadata free-form without widening the trusted-type list.
        "metadata_json": json.dumps(router.metadata, sort_keys=True),
    }, path)


def load_router(path: Path | str) -> Router:
    """Load a router artifact, or raise ``UntrustedArtifactError`` / ``FileNotFoundError``."""
    payload = load_signed(path, TRUSTED_TYPES, "router artifact", FORMAT, FORMAT_VERSION)
    estimator = payload.get("estimator")
    if not isinstance(estimator, ComplexityRouter):
        raise UntrustedArtifactError(f"{path} does not hold a ComplexityRouter")
    return Router(estimator=estimator, threshold=float(payload["threshold"]), metadata=json.loads(payload["metadata_json"]))
