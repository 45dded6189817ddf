"""Signed skops archives: the one way router, competence and cascade artifacts are written and read.

skops refuses to instantiate types outside a trusted list, and a content digest stored inside
the archive makes any later edit (a swapped estimator, a changed threshold) a refusal rather
than a silent change of behaviour. Each artifact kind brings its own trusted types and format
name; the checks themselves are the same and live here once.
"""

from __future__ import annotations

import hashlib
import json
import sys
import zipfile
from pathlib import Path
from typing import Any

# skops builds its trusted-type list at import by listing scikit-learn's estimators, which walks
# (imports) every scikit-learn package, its array-API shim for torch included: with torch in the
# venv that pulled torch into the gateway (+1 s at start-up, +~300 MB RSS) though nothing here
# uses it. Hiding that one shim for the walk (an ImportError it skips) keeps torch out; the shim
# imports normally afterwards for anyone who does pass torch arrays to scikit-learn.
_TORCH_SHIM = "sklearn.externals.array_api_compat.torch"
_hide_shim = _TORCH_SHIM not in sys.modules
if _hide_shim:
    sys.modules[_TORCH_SHIM] = None  # type: ignore[assignment]
try:
    import skops.io as sio
finally:
    if _hide_shim and sys.modules.get(_TORCH_SHIM, 0) is None:
        del sys.modules[_TORCH_SHIM]

DIGEST_MEMBER = "tierwise-digest.sha256"


class UntrustedArtifactError(ValueError):
    """The file is not an artifact we wrote, or it was changed since."""


def content_digest(path: Path) -> str:
    """sha256 over every member's name and bytes, except the digest member itself."""
    h = hashlib.sha256()
    with zipfile.ZipFile(path) as zf:
        for name in sorted(zf.namelist()):
            if name == DIGEST_MEMBER:
                continue
            h.update(name.encode())
            h.update(b"\0")
            h.update(zf.read(name))
    return h.hexdigest()


def stored_digest(path: Path | str) -> str | None:
    """The digest written into the archive (``load_signed`` checks it against the contents)."""
    with zipfile.ZipFile(path) as zf:
        return zf.read(DIGEST_MEMBER).decode().strip() if DIGEST_MEMBER in zf.namelist() else None


def dump_signed(payload: dict[str, Any], path: Path | str) -> Path:
    """Write ``payload`` as a compressed skops archive, then add its content digest."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sio.dump(payload, path, compression=zipfile.ZIP_DEFLATED)
    digest = content_digest(path)
    with zipfile.ZipFile(path, "a") as zf:
        zf.writestr(DIGEST_MEMBER, digest)
    return path


def load_signed(path: Path | str, trusted_types: frozenset[str], what: str, fmt: str, fmt_version: int) -> dict:
    """The payload of a signed archive of format ``fmt`` (``what`` names it in errors).

    Raises ``FileNotFoundError`` for a missing file and ``UntrustedArtifactError`` for anything
    we did not write: not a skops zip, a type outside ``trusted_types``, no or a wrong digest,
    another format or format version.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    try:
        stored = stored_digest(path)
        untrusted = sio.get_untrusted_types(file=path)
    except Exception as exc:  # not a zip, no schema, unreadable: not ours
        raise UntrustedArtifactError(f"{path} is not a skops {what} ({exc})") from exc
    foreign = sorted(set(untrusted) - trusted_types)
    if foreign:
        raise UntrustedArtifactError(
            f"refusing to load {path}: it contains types outside the {what}'s trusted list: {', '.join(foreign)}")
    if stored is None:
        raise UntrustedArtifactError(f"refusing to load {path}: no content digest (not written by tierwise)")
    if stored != content_digest(path):
        raise UntrustedArtifactError(f"refusing to load {path}: contents changed after it was written (digest mismatch)")
    try:
        payload = sio.load(path, trusted=list(untrusted))
    except Exception as exc:
        raise UntrustedArtifactError(f"{path} could not be loaded as a {what} ({exc})") from exc
    if not isinstance(payload, dict) or payload.get("format") != fmt:
        raise UntrustedArtifactError(f"{path} is a skops file but not a {fmt} artifact")
    if payload.get("format_version") != fmt_version:
        raise UntrustedArtifactError(
            f"{path} has {fmt} format version {payload.get('format_version')}, this code reads {fmt_version}")
    return payload


def dump_thresholded(path: Path | str, fmt: str, fmt_version: int, model: Any, threshold: float,
                     metadata: dict | None) -> Path:
    """A fitted model, the threshold it is served at and a free-form card (JSON), signed."""
    return dump_signed({"format": fmt, "format_version": fmt_version, "model": model, "threshold": float(threshold),
                        "metadata_json": json.dumps(metadata or {}, sort_keys=True, default=str)}, path)


def load_thresholded(path: Path | str, trusted_types: frozenset[str], what: str, fmt: str, fmt_version: int,
                     model_type: type) -> tuple[Any, float, dict]:
    """``(model, threshold, metadata)`` of a ``dump_thresholded`` archive holding a ``model_type``."""
    payload = load_signed(path, trusted_types, what, fmt, fmt_version)
    if not isinstance(payload.get("model"), model_type):
        raise UntrustedArtifactError(f"{path} does not hold a {model_type.__name__}")
    return payload["model"], float(payload["threshold"]), json.loads(payload["metadata_json"])
