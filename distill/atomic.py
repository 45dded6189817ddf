"""Write a model dir atomically: build it in a temporary sibling, then rename it into place.

Why: tiers, the training loop and other ranks read model dirs that this package writes. A
reader (vLLM starting, a resumed run, ``is_complete``) must see either the old dir or the
whole new one, never half of it, and a failed write must leave no debris. The temporary
dir is a sibling so the final rename stays on one filesystem (atomic).
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def tmp_sibling(out_dir: Path) -> Path:
    """A fresh temporary dir next to ``out_dir`` (same filesystem, so rename is atomic)."""
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.parent / f".{out_dir.name}.tmp-{os.getpid()}-{time.monotonic_ns()}"
    tmp.mkdir()
    return tmp


def commit_dir(tmp: Path, out_dir: Path) -> Path:
    """Replace ``out_dir`` by ``tmp``: readers never see a half-written model dir."""
    out_dir = Path(out_dir)
    for f in Path(tmp).iterdir():  # safetensors writes 0600; servers may run as another user
        if f.is_file():
            f.chmod(0o644)
    if out_dir.exists():
        old = out_dir.parent / f".{out_dir.name}.old-{os.getpid()}-{time.monotonic_ns()}"
        out_dir.rename(old)
        tmp.rename(out_dir)
        shutil.rmtree(old, ignore_errors=True)
    else:
        tmp.rename(out_dir)
    return out_dir


@contextmanager
def atomic_dir(out_dir: Path) -> Iterator[Path]:
    """Yield an empty temporary dir; on success it replaces ``out_dir``, on error it is removed.

    ::

        with atomic_dir(out) as tmp:
            write_files(tmp)
        # out now holds exactly what was written to tmp
    """
    tmp = tmp_sibling(out_dir)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    commit_dir(tmp, out_dir)
