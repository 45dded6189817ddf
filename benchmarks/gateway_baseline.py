"""A git worktree of an earlier commit, so a benchmark can run its gateway beside the current one.

Judging a change by ratios measured side by side in one run, rather than against an old
results file from a differently loaded machine. The worktree shares this checkout's venv and
its packaged artifacts are the baseline commit's own.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from benchmarks.common import REPO


def baseline_worktree(ref: str, tmp: Path) -> tuple[Path, str]:
    """A detached checkout of ``ref`` under ``tmp`` and its commit id."""
    commit = subprocess.run(["git", "rev-parse", ref], cwd=REPO, check=True, capture_output=True,
                            text=True).stdout.strip()
    path = tmp / f"baseline-{commit[:8]}"
    subprocess.run(["git", "worktree", "add", "--detach", str(path), commit], cwd=REPO, check=True,
                   capture_output=True)
    return path, commit


def remove_worktree(path: Path) -> None:
    subprocess.run(["git", "worktree", "remove", "--force", str(path)], cwd=REPO, check=False)
