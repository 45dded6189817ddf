"""skops artifacts: exact round trip, and refusal of anything tampered or foreign."""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest
import skops.io as sio

from router import ComplexityRouter, Router, UntrustedArtifactError, load_router, save_router
from router.artifact import DIGEST_MEMBER, TRUSTED_TYPES


@pytest.fixture()
def saved(tmp_path: Path, fitted: ComplexityRouter) -> tuple[Path, Router]:
    router = Router(estimator=fitted, threshold=fitted.threshold_for(0.3), metadata={"training_data": {"n_prompts": 4000}})
    return save_router(router, tmp_path / "router.skops"), router


def _rewrite_member(path: Path, member: str, edit) -> None:
    with zipfile.ZipFile(path) as zf:
        items = [(info, zf.read(info.filename)) for info in zf.infolist()]
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for info, data in items:
            zf.writestr(info.filename, edit(data) if info.filename == member else data)


def test_round_trip_gives_identical_scores(saved, sample) -> None:
    path, original = saved
    loaded = load_router(path)
    X = sample.test.prompts[:300]
    np.testing.assert_array_equal(loaded.estimator.predict_proba(X), original.estimator.predict_proba(X))
    assert [loaded.score(x) for x in X[:50]] == [original.score(x) for x in X[:50]]
    assert loaded.threshold == original.threshold
    assert loaded.metadata == original.metadata


def test_only_listed_types_need_trust(saved) -> None:
    path, _ = saved
    assert set(sio.get_untrusted_types(file=path)) <= TRUSTED_TYPES


def test_foreign_type_is_refused(saved) -> None:
    path, _ = saved
    # Point the estimator node at os.system: loading must stop before constructing anything.
    _rewrite_member(path, "schema.json", lambda b: b.replace(b'"router.estimator"', b'"os"', 1).replace(b'"ComplexityRouter"', b'"system"', 1))
    with pytest.raises(UntrustedArtifactError, match="os.system"):
        load_router(path)


def test_patched_coefficients_are_refused(saved) -> None:
    """A well-formed file whose numbers were changed after saving (same types) is refused."""
    path, _ = saved
    with zipfile.ZipFile(path) as zf:
        biggest = max((i for i in zf.infolist() if i.filename.endswith(".npy")), key=lambda i: i.file_size).filename

    def flip_last_byte(data: bytes) -> bytes:
        return data[:-1] + bytes([data[-1] ^ 0xFF])

    _rewrite_member(path, biggest, flip_last_byte)
    with pytest.raises(UntrustedArtifactError, match="digest"):
        load_router(path)


def test_missing_digest_is_refused(saved) -> None:
    path, _ = saved
    with zipfile.ZipFile(path) as zf:
        items = [(i.filename, zf.read(i.filename)) for i in zf.infolist() if i.filename != DIGEST_MEMBER]
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in items:
            zf.writestr(name, data)
    with pytest.raises(UntrustedArtifactError, match="digest"):
        load_router(path)


def test_pickle_and_garbage_are_refused(tmp_path: Path, fitted: ComplexityRouter) -> None:
    pkl = tmp_path / "router.pkl"
    pkl.write_bytes(pickle.dumps(Router(estimator=fitted, threshold=0.5)))
    junk = tmp_path / "junk.skops"
    junk.write_bytes(b"not a zip at all")
    for path in (pkl, junk):
        with pytest.raises(UntrustedArtifactError):
            load_router(path)
    assert issubclass(UntrustedArtifactError, ValueError)


def test_skops_file_of_something_else_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.skops"
    sio.dump({"format": "something-else", "numbers": [1, 2, 3]}, path)
    with pytest.raises(UntrustedArtifactError):
        load_router(path)


def test_missing_file_raises_file_not_found(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        load_router(tmp_path / "nope.skops")
