"""Real processes for tests and benchmarks: the gateway CLI, the stub upstream, readiness polling.

Why in the package and not under ``tests/``: the benchmarks start the same processes the
tests do, and a benchmark must not import from ``tests/`` or edit ``sys.path``. Nothing in
the gateway's request path imports this module. ``tests/support/processes.py`` re-exports it.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import yaml

from gateway.config import default_model_cache

REPO = Path(__file__).resolve().parents[2]  # processes run from the repository root


def model_cache() -> Path:
    """Where assembled model dirs live: ``$TIERWISE_MODEL_CACHE``, else the gateway's default."""
    return Path(os.environ.get("TIERWISE_MODEL_CACHE") or default_model_cache())


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(check, timeout_s: float, what: str, proc: subprocess.Popen | None = None, log: Path | None = None):
    start = time.monotonic()
    deadline = start + timeout_s
    last = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            tail = log.read_text()[-3000:] if log and log.exists() else ""
            raise RuntimeError(f"{what}: process exited with {proc.returncode}\n{tail}")
        try:
            last = check()
            if last:
                return last
        except httpx.HTTPError:
            pass
        # Most servers here are ready within seconds: poll often at first, gently later (vLLM).
        time.sleep(0.05 if time.monotonic() - start < 10 else 0.5)
    tail = log.read_text()[-3000:] if log and log.exists() else ""
    raise TimeoutError(f"{what} not ready after {timeout_s} s (last: {last})\n{tail}")


@dataclass
class ServerProcess:
    proc: subprocess.Popen
    url: str  # base URL without /v1
    log: Path

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 60) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def log_text(self) -> str:
        return self.log.read_text() if self.log.exists() else ""


def spawn(args: list[str], log: Path, env: dict | None = None, root: Path | None = None) -> subprocess.Popen:
    """``python -m <args>`` from the repository root (or another checkout, ``root``: a benchmark's
    baseline), output appended to ``log``."""
    log.parent.mkdir(parents=True, exist_ok=True)
    extra = {"PYTHONPATH": str(root)} if root is not None else {}
    with open(log, "ab") as out:
        return subprocess.Popen([sys.executable, "-m", *args], cwd=root or REPO, stdout=out,
                                stderr=subprocess.STDOUT, env={**os.environ, **extra, **(env or {})})


def start_stub(tmp: Path, tokens: int = 16, token_delay_ms: float = 0, port: int | None = None,
               word: str = "tok", timeout_s: float = 180) -> ServerProcess:
    """Run the stub upstream and wait until it answers; a stub that does not come up is stopped.

    The wait is generous because a loaded 2-core CI box can take tens of seconds to import it.
    """
    port = port or free_port()
    log = tmp / f"stub-{word}-{port}.log"
    proc = spawn(["gateway", "stub-upstream", "--port", str(port), "--tokens", str(tokens),
                  "--token-delay-ms", str(token_delay_ms), "--word", word], log)
    server = ServerProcess(proc, f"http://127.0.0.1:{port}", log)
    try:
        wait_until(lambda: httpx.get(server.url + "/health").status_code == 200, timeout_s, "stub upstream",
                   proc, log)
    except BaseException:
        server.stop()
        raise
    return server


def start_gateway(config: dict, tmp: Path, *, ready_tiers: int | None = None, timeout_s: float = 600,
                  env: dict | None = None, root: Path | None = None) -> ServerProcess:
    """Run ``python -m gateway serve -c <config>`` and wait until it serves.

    ``ready_tiers``: how many tiers must report ready (default: all in the config).
    """
    port = free_port()
    config = {**config, "server": {**config.get("server", {}), "port": port}}
    config.setdefault("state_dir", str(tmp / "state"))
    path = tmp / f"gateway-{port}.yaml"
    path.write_text(yaml.safe_dump(config))
    log = tmp / f"gateway-{port}.log"
    proc = spawn(["gateway", "serve", "-c", str(path)], log, env, root)
    url = f"http://127.0.0.1:{port}"
    want = len(config["model_list"]) if ready_tiers is None else ready_tiers

    def ready() -> bool:
        resp = httpx.get(url + "/health", timeout=5)
        tiers = resp.json().get("tiers", {}) if resp.headers.get("content-type", "").startswith("application/json") else {}
        return sum(t["status"] == "ready" for t in tiers.values()) >= want

    wait_until(ready, timeout_s, "gateway", proc, log)
    return ServerProcess(proc, url, log)
