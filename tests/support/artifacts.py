"""Signed artifacts edited after they were written: what every loader must refuse."""

from __future__ import annotations

import zipfile
from collections.abc import Callable
from pathlib import Path


def edited_copy(source: Path, target: Path, edit: Callable[[bytes], bytes], member: str = "schema.json") -> Path:
    """``source`` copied to ``target`` with ``edit`` applied to one archive member (the digest left as it was)."""
    with zipfile.ZipFile(source) as src, zipfile.ZipFile(target, "w") as dst:
        for item in src.infolist():
            data = src.read(item.filename)
            dst.writestr(item, edit(data) if item.filename == member else data)
    return target
