"""Where the shared data sets (Banking77, HWU64, RouteLLM) live: one lookup for everyone.

Order: an explicit folder (a CLI flag, a recipe's ``data.root``) > ``$TIERWISE_DATA_DIR`` >
``<repo>/../shared/data``. CI clones the repository with ``shared/`` beside it, so the
default works there and on developer machines without configuration.

Missing data is an error with the expected location in the message, never a silent skip:
a green test run or a benchmark number must mean the real data was read.
"""

from __future__ import annotations

import os
from pathlib import Path

DATA_ENV_VAR = "TIERWISE_DATA_DIR"
REPO_ROOT = Path(__file__).resolve().parent.parent


class MissingDataError(FileNotFoundError):
    """A shared data file or folder is not where it is expected; the message says where."""


def data_root(override: Path | str | None = None) -> Path:
    """The shared data folder: ``override`` > ``$TIERWISE_DATA_DIR`` > ``<repo>/../shared/data``."""
    if override:
        return Path(override)
    env = os.environ.get(DATA_ENV_VAR)
    if env:
        return Path(env)
    return REPO_ROOT.parent / "shared" / "data"


def require_data(*parts: str, root: Path | str | None = None) -> Path:
    """``data_root(root) / parts...``, or :class:`MissingDataError` naming where it was expected."""
    path = data_root(root).joinpath(*parts)
    if not path.exists():
        raise MissingDataError(
            f"shared data not found: {path} (expected under {data_root(root)}; set ${DATA_ENV_VAR} "
            f"or place shared/data beside the repository)"
        )
    return path
