"""The stub upstream with the behaviours the gateway CLI does not expose (reliability tests).

``python -m gateway.devtools.stub_upstream`` adds continuous usage (as vLLM reports it) and
streams that the upstream drops mid-way; it also starts faster than the full gateway CLI,
which matters on a loaded 2-core machine.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from support.processes import ServerProcess, free_port, spawn, wait_until


def start_stub_with(tmp: Path, *flags: str, tokens: int = 16, delay_ms: float = 0, word: str = "tok",
                    port: int | None = None, timeout_s: float = 90) -> ServerProcess:
    """Start the stub with extra ``flags`` (``--continuous-usage``, ``--drop-after N``)."""
    port = port or free_port()
    log = tmp / f"stub-{port}.log"
    proc = spawn(["gateway.devtools.stub_upstream", "--port", str(port), "--tokens", str(tokens),
                   "--token-delay-ms", str(delay_ms), "--word", word, *flags], log)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: httpx.get(url + "/health").status_code == 200, timeout_s, "stub upstream", proc, log)
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    return ServerProcess(proc, url, log)


@pytest.fixture
def stub_factory(tmp_path: Path) -> Iterator[Callable[..., ServerProcess]]:
    """``stub_factory(*flags, **options)`` starts a stub; every one started is stopped at teardown,
    even when the test fails before its own clean-up (e.g. while starting the gateway)."""
    started: list[ServerProcess] = []

    def start(*flags: str, **options) -> ServerProcess:
        stub = start_stub_with(tmp_path, *flags, **options)
        started.append(stub)
        return stub

    yield start
    for stub in started:
        stub.stop()
