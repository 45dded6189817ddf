"""A tier that the gateway serves itself: one vLLM OpenAI server process per tier.

The supervisor starts ``python -m vllm.entrypoints.openai.api_server`` (the ``vllm`` CLI is
not installed by the CPU wheel), waits for its ``/health``, restarts it with back-off when
it dies, and stops it on shutdown. The server runs in its own process group, which is
killed whole once the server is gone: vLLM's engine core is a separate process that
outlives an API server killed with SIGKILL. The server also gets PDEATHSIG, so a gateway
killed with ``kill -9`` does not leave servers holding GBs of RAM behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import signal
import socket
import sys
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path

import aiohttp

from gateway.config import TierConfig
from gateway.tiers.base import TierStatus
from gateway.tiers.openai_http import OpenAIHTTPTier

log = logging.getLogger("gateway.tiers.vllm")


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def _die_with_parent() -> None:  # pragma: no cover - runs in the child
    """Ask Linux to SIGTERM this child when the gateway dies (prctl PR_SET_PDEATHSIG)."""
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)


class CrashWindow:
    """Crashes within the last ``window_s`` seconds: a tier is given up only when it keeps crashing.

    Counting every crash of the gateway's lifetime gave up a tier for good after its fifth
    crash, even if the crashes were weeks apart; crashes older than the window are forgiven.
    """

    def __init__(self, limit: int, window_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self.window_s = window_s
        self.clock = clock
        self._crashes: deque[float] = deque()

    def _forget_old(self) -> None:
        horizon = self.clock() - self.window_s
        while self._crashes and self._crashes[0] <= horizon:
            self._crashes.popleft()

    def crash(self) -> None:
        self._crashes.append(self.clock())

    @property
    def recent(self) -> int:
        self._forget_old()
        return len(self._crashes)

    def exhausted(self) -> bool:
        """True when more than ``limit`` crashes fell within the window: stop restarting."""
        return self.recent > self.limit

    def backoff_s(self) -> float:
        """Seconds to wait before the next restart: doubles with each recent crash, at most 30."""
        return min(30.0, 2.0 ** max(1, self.recent))


def vllm_command(config: TierConfig, port: int) -> list[str]:
    server = config.vllm
    assert server is not None
    cmd = [
        sys.executable, "-m", "vllm.entrypoints.openai.api_server",
        "--model", server.model,
        "--served-model-name", config.model_name,
        "--host", server.host,
        "--port", str(port),
        "--dtype", server.dtype,
        "--max-model-len", str(server.max_model_len),
        "--disable-uvicorn-access-log",
    ]
    if server.enforce_eager:
        cmd.append("--enforce-eager")
    if server.lora_modules:
        # One process, base + adapters: each adapter is a model name of its own on this server.
        cmd += ["--enable-lora", "--max-lora-rank", str(server.max_lora_rank), "--max-loras", str(len(server.lora_modules)),
                "--lora-modules", *(f"{name}={path}" for name, path in server.lora_modules.items())]
    return cmd + config.vllm_capability_args() + list(server.extra_args)


class VLLMProcessTier(OpenAIHTTPTier):
    """An OpenAI HTTP tier whose server is a supervised vLLM child process."""

    def __init__(self, config: TierConfig, client: aiohttp.ClientSession, log_dir: Path) -> None:
        assert config.vllm is not None
        self.server = config.vllm
        self.port = self.server.port or free_port(self.server.host)
        super().__init__(config, client, base_url=f"http://{self.server.host}:{self.port}/v1")
        self.log_path = log_dir / f"vllm-{config.model_name}.log"
        self.process: asyncio.subprocess.Process | None = None
        self.restarts = 0  # in the gateway's lifetime (shown on /health); `crashes` decides giving up
        self.crashes = CrashWindow(self.server.max_restarts, self.server.restart_window_s)
        self._stopping = False
        self._supervisor: asyncio.Task | None = None
        self._ready = asyncio.Event()
        self._gave_up = asyncio.Event()

    def health(self) -> dict:
        pid = self.process.pid if self.process and self.process.returncode is None else None
        return {**super().health(), "pid": pid, "restarts": self.restarts, "log": str(self.log_path)}

    def _missing_dir(self) -> str | None:
        """A model or adapter given as a path must exist (else vLLM fails after a minute of loading);
        a hub id (``org/name``) is vLLM's business."""
        wanted = [(self.server.model, "config.json")]
        wanted += [(path, "adapter_config.json") for path in self.server.lora_modules.values()]
        for where, marker in wanted:
            path = Path(where).expanduser()
            if (path.is_absolute() or where.startswith(".")) and not (path / marker).exists():
                return where
        return None

    async def start(self) -> None:
        missing = self._missing_dir()
        if missing:
            self.status = TierStatus.MISSING
            self.detail = f"model dir {missing} does not exist (run `python -m distill assemble`)"
            log.warning("tier %s not started: %s", self.name, self.detail)
            self._gave_up.set()
            return
        self._supervisor = asyncio.create_task(self._supervise(), name=f"supervise:{self.name}")
        self.watch_health()

    async def probe(self) -> bool:
        """vLLM's own /health (the supervisor, not this probe, owns the tier's status)."""
        try:
            async with self.client.get(f"http://{self.server.host}:{self.port}/health",
                                       timeout=aiohttp.ClientTimeout(total=2.0)) as resp:
                return resp.status == 200
        except (aiohttp.ClientError, TimeoutError):
            return False

    def stream_usage_options(self) -> dict:
        """vLLM can report usage on every chunk: a client that hangs up is billed what it got."""
        return {"include_usage": True, "continuous_usage_stats": True}

    async def wait_ready(self, timeout_s: float) -> bool:
        ready = asyncio.ensure_future(self._ready.wait())
        gave_up = asyncio.ensure_future(self._gave_up.wait())
        await asyncio.wait({ready, gave_up}, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
        ready.cancel()
        gave_up.cancel()
        return self.is_ready

    async def _spawn(self) -> asyncio.subprocess.Process:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, **self.server.env}
        logfile = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child
        try:
            cmd = vllm_command(self.config, self.port)
            log.info("starting tier %s: %s (log: %s)", self.name, " ".join(cmd), self.log_path)
            return await asyncio.create_subprocess_exec(
                *cmd, stdout=logfile, stderr=asyncio.subprocess.STDOUT, env=env, preexec_fn=_die_with_parent,
                start_new_session=True,
            )
        finally:
            logfile.close()

    async def _await_healthy(self, process: asyncio.subprocess.Process) -> bool:
        deadline = time.monotonic() + self.server.startup_timeout_s
        while time.monotonic() < deadline and process.returncode is None:
            if await self.probe():
                return True
            await asyncio.sleep(0.5)
        return False

    async def _supervise(self) -> None:
        """Start, wait healthy, watch, restart with back-off until stopped or out of restarts."""
        while not self._stopping:
            self.status, self.detail = TierStatus.STARTING, "starting vLLM"
            started = time.monotonic()
            self.process = await self._spawn()
            if await self._await_healthy(self.process):
                self.status, self.detail = TierStatus.READY, ""
                self._ready.set()
                log.info("tier %s ready on port %d after %.1f s", self.name, self.port, time.monotonic() - started)
                code = await self.process.wait()
                self._kill_group()
            else:
                code = self.process.returncode
                if code is None:
                    self.detail = "not healthy before the start-up timeout"
                    await self._terminate()
            self._ready.clear()
            if self._stopping:
                break
            self.status = TierStatus.DOWN
            self.detail = f"vLLM exited with code {code}; see {self.log_path}"
            log.error("tier %s went down: %s", self.name, self.detail)
            self.crashes.crash()
            if self.crashes.exhausted():
                log.error("tier %s: giving up after %d crashes within %.0f s", self.name, self.crashes.recent,
                          self.server.restart_window_s)
                self._gave_up.set()
                return
            self.restarts += 1
            await asyncio.sleep(self.crashes.backoff_s())

    def _kill_group(self) -> None:
        """SIGKILL whatever is left of the server's process group (its engine core)."""
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.process.pid, signal.SIGKILL)

    async def _terminate(self, grace_s: float = 15.0) -> None:
        proc = self.process
        if proc is None:
            return
        if proc.returncode is None:
            proc.terminate()  # the API server shuts its engine down on SIGTERM
            try:
                await asyncio.wait_for(proc.wait(), grace_s)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        self._kill_group()

    async def stop(self) -> None:
        self._stopping = True
        await super().stop()
        await self._terminate()
        if self._supervisor:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor
        self.status, self.detail = TierStatus.DOWN, "stopped"


class AdapterTier(OpenAIHTTPTier):
    """A LoRA adapter that another tier's vLLM process serves (``served_by:``).

    Why: the support teacher is the packaged model plus a 9 MB adapter. Serving both from one
    process gives the gateway a general flagship (the base, for what is out of the support
    scope) and the support teacher for the price of one server's RAM. Each keeps its own
    name, role and price; the adapter's health is its host process's health.
    """

    def __init__(self, config: TierConfig, client: aiohttp.ClientSession, host: VLLMProcessTier) -> None:
        self.host = host
        super().__init__(config, client, base_url=host.base_url)

    # The host process owns the state: an adapter is up exactly when its server is.
    @property  # type: ignore[override]
    def status(self) -> TierStatus:
        return self.host.status

    @status.setter
    def status(self, value: TierStatus) -> None:
        """Ignored: the host's supervisor sets the state (base classes assign it on start/probe)."""

    @property  # type: ignore[override]
    def detail(self) -> str:
        return self.host.detail

    @detail.setter
    def detail(self, value: str) -> None:
        """Ignored, like ``status``."""

    @property
    def max_model_len(self) -> int | None:
        return self.host.max_model_len

    def health(self) -> dict:
        return {**super().health(), "served_by": self.host.name}

    async def start(self) -> None:
        self.watch_health()  # closes this tier's own circuit breaker when its host answers again

    async def probe(self) -> bool:
        return await self.host.probe()

    def stream_usage_options(self) -> dict:
        return self.host.stream_usage_options()

    async def wait_ready(self, timeout_s: float) -> bool:
        return await self.host.wait_ready(timeout_s)
