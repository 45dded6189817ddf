"""Real processes for tests: re-exported from :mod:`gateway.devtools.processes` (benchmarks use it too)."""

from gateway.devtools.processes import (  # noqa: F401
    REPO,
    ServerProcess,
    free_port,
    model_cache,
    spawn,
    start_gateway,
    start_stub,
    wait_until,
)

_spawn = spawn  # older name, still imported by support/stub_modes.py
