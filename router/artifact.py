"""Save and load the router with skops, refusing anything that is not a router.

Pickle runs arbitrary code on load; a router file comes from CI or a colleague's disk, so it
is written with skops and read back only if every type it names is on an explicit allow-list
(``TRUSTED_TYPES``). A SHA-256 digest of the archive's members is stored beside them, so a
file edited after it was written (a swapped threshold, a patched coefficient) is refused too.
The digest detects accidents and naive edits; it is not a signature.
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path
from typing import Any

import skops.io as sio

from router.estimator import ComplexityRouter
from router.scoring import Router

FORMAT = "tierwise-router"
FORMAT_VERSION = 1
DIGEST_MEMBER = "tierwise-digest.sha256"

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


class UntrustedArtifactError(ValueError):
    """The file is not a router artifact we wrote, or it was changed since."""


def _digest(path: Path) -> str:
    h = hashlib.sha256()
    with zipfile.ZipFile(path) as zf:
        for name in sorted(zf.namelist()):
            if name == DIGEST_MEMBER:
                continue
            h.update(name.encode())
            h.update(b"\0")
            h.update(zf.read(name))
    return h.hexdigest()


def save_router(router: Router, path: Path | str) -> Path:
    """Write ``router`` to ``path`` (skops archive plus content digest)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "estimator": router.estimator,
        "threshold": float(router.threshold),
        # JSON text keeps the metadata free-form without widening the trusted-type list.
        "metadata_json": json.dumps(router.metadata, sort_keys=True),
    }
    sio.dump(payload, path, compression=zipfile.ZIP_DEFLATED)
    digest = _digest(path)
    with zipfile.ZipFile(path, "a") as zf:
        zf.writestr(DIGEST_MEMBER, digest)
    return path


def load_router(path: Path | str) -> Router:
    """Load a router artifact, or raise ``UntrustedArtifactError`` / ``FileNotFoundError``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"router artifact not found: {path}")
    try:
        with zipfile.ZipFile(path) as zf:
            stored = zf.read(DIGEST_MEMBER).decode().strip() if DIGEST_MEMBER in zf.namelist() else None
        untrusted = sio.get_untrusted_types(file=path)
    except Exception as exc:  # not a zip, no schema, unreadable: not ours
        raise UntrustedArtifactError(f"{path} is not a skops router artifact ({exc})") from exc
    foreign = sorted(set(untrusted) - TRUSTED_TYPES)
    if foreign:
        raise UntrustedArtifactError(
            f"refusing to load {path}: it contains types outside the router's trusted list: {', '.join(foreign)}"
        )
    if stored is None:
        raise UntrustedArtifactError(f"refusing to load {path}: no content digest (not written by router.save_router)")
    if stored != _digest(path):
        raise UntrustedArtifactError(f"refusing to load {path}: contents changed after it was written (digest mismatch)")
    try:
        payload = sio.load(path, trusted=list(untrusted))
    except Exception as exc:
        raise UntrustedArtifactError(f"{path} could not be loaded as a router artifact ({exc})") from exc
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise UntrustedArtifactError(f"{path} is a skops file but not a {FORMAT} artifact")
    if payload.get("format_version") != FORMAT_VERSION:
        raise UntrustedArtifactError(
            f"{path} has router format version {payload.get('format_version')}, this code reads {FORMAT_VERSION}"
        )
    estimator = payload.get("estimator")
    if not isinstance(estimator, ComplexityRouter):
        raise UntrustedArtifactError(f"{path} does not hold a ComplexityRouter")
    return Router(estimator=estimator, threshold=float(payload["threshold"]), metadata=json.loads(payload["metadata_json"]))
