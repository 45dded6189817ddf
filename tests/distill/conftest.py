"""Shared fixtures: one materialized teacher and one tiny layer-dropped student per session.

Materializing the teacher takes ~20 s on 2 cores, so it is done once per test session
(or reused from ``$TIERWISE_TEST_CACHE`` when set, e.g. to the gateway's cache). A missing
packaged teacher fails the tests (it is a locked dependency), like missing shared data.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from support.shared_data import packaged_teacher_gguf

torch = pytest.importorskip("torch")
torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    env = os.environ.get("TIERWISE_TEST_CACHE")
    return Path(env) if env else tmp_path_factory.mktemp("distill-cache")


@pytest.fixture(scope="session")
def teacher_dir(cache_dir) -> Path:
    from distill.packaged import materialize_teacher

    packaged_teacher_gguf()  # fails the test with install instructions when it is missing
    return materialize_teacher(cache_dir / "base-teacher")


@pytest.fixture(scope="session")
def student2_dir(teacher_dir, tmp_path_factory) -> Path:
    from distill.student_init import layer_drop

    return layer_drop(teacher_dir, tmp_path_factory.mktemp("s2") / "student", 2)
