"""Set-up every benchmark shares: repository paths, shared data, progress lines.

Benchmarks run from the repository root as modules (``python -m benchmarks.<name>``), so the
project's packages import without ``sys.path`` edits, and nothing comes from ``tests/``. The
processes they start (stub upstream, gateway) and the model cache come from
:mod:`gateway.devtools.processes`, the same code the tests use; it is imported by the
benchmarks that start processes, not here, because ``distill_quality gpu`` runs on a GPU
machine that has the training stack but not the gateway's dependencies.

Missing shared data stops a benchmark with :class:`~tierwise_common.data_dir.MissingDataError`,
whose message says where the data was expected, before any number is measured.
"""

from __future__ import annotations

import time
from pathlib import Path

from tierwise_common.data_dir import MissingDataError, data_root, require_data  # noqa: F401  (re-exported)
from tierwise_common.intervals import wilson  # noqa: F401  (re-exported)

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results"
#: When the benchmark process started (``perf_counter``): time budgets count from here.
STARTED = time.perf_counter()


def log(msg: str) -> None:
    """A progress line with the seconds since the benchmark started (long runs, remote logs)."""
    print(f"[{time.perf_counter() - STARTED:7.1f}s] {msg}", flush=True)


