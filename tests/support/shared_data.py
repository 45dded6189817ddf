"""The one policy for data a test needs but the checkout does not carry: fail, saying where.

A skipped test would let a run stay green without the router or the student ever touching
real data; a failure with the expected location tells the reader what to fix.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tierwise_common.data_dir import MissingDataError, require_data


def shared_data(*parts: str) -> Path:
    """``<shared data>/parts...`` (see :func:`tierwise_common.data_dir.data_root`), or fail the test."""
    try:
        return require_data(*parts)
    except MissingDataError as e:
        pytest.fail(str(e), pytrace=False)


def packaged_teacher_gguf() -> Path:
    """The packaged teacher's GGUF (a locked dependency), or fail the test with how to install it."""
    from distill.packaged import TeacherNotInstalled, teacher_gguf_path

    try:
        return teacher_gguf_path()
    except TeacherNotInstalled as e:
        pytest.fail(str(e), pytrace=False)
