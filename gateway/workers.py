"""Serving on several processes: ``server.workers``.

One event loop uses one core, and a Python gateway is CPU-bound long before its tiers are
(issue #17). With ``server.workers: N`` (or ``auto``: the CPUs this process may use) ``gateway
serve`` runs N uvicorn worker processes on one listening socket; uvicorn's supervisor restarts
a worker that dies. What must stay one, stays one:

* **vLLM tiers start once.** A tier supervisor process (``gateway supervise-tiers``) starts,
  health-checks and restarts the ``vllm:`` tiers on fixed ports; the workers reach them as
  ``url:`` tiers with the same names, prices and capabilities (an adapter tier, ``served_by``,
  as its host's URL under its own model name). If the supervisor itself dies, the parent
  starts it again (its vLLM servers die with it; meanwhile requests fail over as for any
  tier that is down).
* **The ledger is migrated once**, by the parent before any worker starts. Each worker then has
  its own group-commit writer; request ids are unique and inserts skip a known id, so every
  request is booked exactly once (SQLite in WAL mode with a busy timeout, or Postgres).
* **Metrics are summed over workers**: prometheus-client's multiprocess mode keeps each
  process's values in files under ``<state_dir>/prometheus-multiproc`` (emptied at start),
  and ``/metrics`` on any worker reports the aggregate.
* **Limits and budgets must be shared**: with auth on, more than one worker needs
  ``limits.redis_url`` (checked at start-up), since per-worker limits would each allow the
  full rate. Keys, runtime tiers and drift state are read from the database by every worker,
  as by every replica.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import aiohttp
import uvicorn

from gateway.config import GatewayConfig, RemoteServer, TierConfig

log = logging.getLogger("gateway.workers")

CONFIG_ENV = "TIERWISE_WORKER_CONFIG"  # path of the worker config (JSON) the parent writes
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def cpu_count() -> int:
    """CPUs this process may run on, within a container's CPU quota (cgroup v2 ``cpu.max``)."""
    count = len(os.sched_getaffinity(0))
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()
        if quota != "max":
            count = min(count, max(1, int(int(quota) // int(period))))
    except (OSError, ValueError):
        pass
    return max(1, count)


def worker_count(config: GatewayConfig) -> int:
    setting = config.server.workers
    return cpu_count() if setting == "auto" else int(setting)


def check_shareable(config: GatewayConfig, workers: int) -> None:
    """Refuse a multi-worker set-up whose limits each worker would enforce on its own."""
    if workers > 1 and config.auth.enabled and not config.limits.redis_url:
        raise ValueError(f"server.workers is {workers}, but rate limits and budgets are per process without "
                         "limits.redis_url: each worker would allow the full rate. Set limits.redis_url (or use "
                         "one worker).")


def split_tiers(config: GatewayConfig, pick_port) -> tuple[GatewayConfig | None, GatewayConfig]:
    """(the tier supervisor's config, the workers' config): vLLM tiers on fixed ports, reached
    by the workers as ``url:`` tiers. ``pick_port()`` gives a free port to a tier without one."""
    ports: dict[str, int] = {}
    managed: list[TierConfig] = []
    for tier in config.model_list:
        if tier.vllm is not None:
            port = tier.vllm.port or pick_port()
            ports[tier.model_name] = port
            managed.append(tier.model_copy(update={"vllm": tier.vllm.model_copy(update={"port": port})}))
    for tier in config.model_list:
        if tier.served_by is not None:
            managed.append(tier)
    if not managed:
        return None, config
    hosts = {t.model_name: t for t in managed if t.vllm is not None}
    workers_list = []
    for tier in config.model_list:
        host = hosts.get(tier.served_by or tier.model_name)
        if host is None:
            workers_list.append(tier)
            continue
        assert host.vllm is not None
        url = RemoteServer(base_url=f"http://{host.vllm.host}:{host.vllm.port}/v1", upstream_model=tier.model_name,
                           max_model_len=host.vllm.max_model_len, continuous_usage=True)
        workers_list.append(tier.model_copy(update={"vllm": None, "served_by": None, "url": url}))
    # The supervisor only runs processes: fallbacks name tiers it does not hold.
    managed = [t.model_copy(update={"fallbacks": []}) for t in managed]
    supervisor = config.model_copy(update={"model_list": managed, "teacher": managed[0].model_name})
    return supervisor, config.model_copy(update={"model_list": workers_list})


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve_workers(config: GatewayConfig, workers: int) -> None:
    """Run the tier supervisor (if any vLLM tier) and ``workers`` gateway processes until a signal."""
    from gateway.http_timeouts import TIMEOUT_ENV, HeaderTimeoutProtocol
    from gateway.ledger.schema import make_engine

    check_shareable(config, workers)
    state = Path(config.state_dir)
    state.mkdir(parents=True, exist_ok=True)
    metrics_dir = state / "prometheus-multiproc"
    shutil.rmtree(metrics_dir, ignore_errors=True)
    metrics_dir.mkdir(parents=True)
    make_engine(config.ledger.url).dispose()  # migrate once, before workers race to
    supervisor_config, worker_config = split_tiers(config, _free_port)
    config_path = state / "worker-config.json"
    config_path.write_text(worker_config.model_dump_json())
    os.environ.update({CONFIG_ENV: str(config_path), MULTIPROC_ENV: str(metrics_dir),
                       TIMEOUT_ENV: str(config.server.header_read_timeout_s)})
    supervisor = None
    if supervisor_config is not None:
        path = state / "tier-supervisor-config.json"
        path.write_text(supervisor_config.model_dump_json())
        supervisor = KeptAlive([sys.executable, "-m", "gateway", "supervise-tiers", str(path)], "tier supervisor")
    try:
        uvicorn.run("gateway.workers:worker_app", factory=True, workers=workers, host=config.server.host,
                    port=config.server.port, log_level=config.server.log_level, access_log=False, loop="uvloop",
                    http=HeaderTimeoutProtocol, timeout_graceful_shutdown=30, log_config=None)
    finally:
        if supervisor is not None:
            supervisor.stop()


class KeptAlive:
    """A child process started again whenever it exits, until :meth:`stop`.

    Restarts back off (1 s, doubling to 30 s) while the child keeps dying within a minute of
    starting, so a child that cannot start does not spin.
    """

    def __init__(self, command: list[str], what: str, max_backoff_s: float = 30.0) -> None:
        self.command, self.what, self.max_backoff_s = command, what, max_backoff_s
        self.restarts = 0
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self.process = subprocess.Popen(command)
        self._watcher = threading.Thread(target=self._watch, name=f"keep-alive:{what}", daemon=True)
        self._watcher.start()

    def _watch(self) -> None:
        backoff = 1.0
        while True:
            started = time.monotonic()
            code = self.process.wait()
            if self._stopping.is_set():
                return
            backoff = backoff if time.monotonic() - started < 60 else 1.0
            log.error("the %s exited with code %s; starting it again in %.0f s", self.what, code, backoff)
            if self._stopping.wait(backoff):
                return
            with self._lock:
                if self._stopping.is_set():
                    return
                self.process = subprocess.Popen(self.command)
                self.restarts += 1
            backoff = min(backoff * 2, self.max_backoff_s)

    def stop(self, timeout_s: float = 60.0) -> None:
        """SIGTERM the child (SIGKILL after ``timeout_s``); it is not started again."""
        with self._lock:
            self._stopping.set()
            process = self.process
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self._watcher.join(5)


def worker_app():
    """uvicorn's app factory in each worker process: the config the parent wrote."""
    from gateway.app import create_app
    from gateway.logging_setup import setup_logging

    config = GatewayConfig.model_validate(json.loads(Path(os.environ[CONFIG_ENV]).read_text()))
    setup_logging(config.server.log_level, own_signals=False)
    return create_app(config)


async def supervise_tiers(config: GatewayConfig) -> None:
    """Start, watch and restart the config's vLLM tiers until SIGTERM/SIGINT, then stop them."""
    from gateway.tiers.registry import TierRegistry

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with aiohttp.ClientSession() as client:
        tiers = TierRegistry(config, client)
        try:
            await tiers.start(max(t.vllm.startup_timeout_s for t in config.model_list if t.vllm))
            await stop.wait()
        finally:
            await tiers.stop()
