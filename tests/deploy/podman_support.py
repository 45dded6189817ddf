"""podman for the `containers` tests: build the images with scripts/build_images.sh, run
containers on the host network, and give each test a fresh PostgreSQL database.

Why the host network: the stub upstream, PostgreSQL and Redis all listen on 127.0.0.1 of this
machine, and load tests here may only target loopback addresses. Containers get free ports.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
import yaml

from deploy_render import REPO

CONTAINERS_CONF = REPO / "deploy" / "podman" / "containers.conf"
GATEWAY_IMAGE = "localhost/tierwise/gateway:0.1.0"
LITELLM_IMAGE = "localhost/tierwise/gateway-litellm:0.1.0"
CPU_IMAGE = "localhost/tierwise/vllm-cpu:0.1.0"
PG_BASE = os.environ.get("TIERWISE_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
GRACEFUL_EXIT = 143  # uvicorn re-raises SIGTERM once it has shut down cleanly
REDIS_URL = os.environ.get("TIERWISE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def podman_env() -> dict[str, str]:
    return {**os.environ, "CONTAINERS_CONF": os.environ.get("CONTAINERS_CONF", str(CONTAINERS_CONF))}


def require_podman() -> None:
    """Skip (with the reason) where podman cannot run containers: no binary, or no runtime."""
    if shutil.which("podman") is None:
        pytest.skip("podman is not installed (scripts/build_images.sh installs it with apt-get)")
    probe = subprocess.run(["podman", "info", "--format", "{{.Host.OCIRuntime.Name}}"], env=podman_env(),
                           capture_output=True, text=True, timeout=60)
    if probe.returncode != 0:
        pytest.skip(f"podman cannot run here: {probe.stderr.strip()[-300:]}")


def podman(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
    proc = subprocess.run(["podman", *args], env=podman_env(), capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise RuntimeError(f"podman {' '.join(args)} -> {proc.returncode}\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
    return proc


def build(what: str, timeout_s: float) -> float:
    """Run scripts/build_images.sh WHAT (cached base and wheelhouse are reused); seconds taken."""
    start = time.monotonic()
    proc = subprocess.run(["bash", str(REPO / "scripts" / "build_images.sh"), what], cwd=REPO, env=podman_env(),
                          capture_output=True, text=True, timeout=timeout_s)
    if proc.returncode != 0:
        raise RuntimeError(f"build_images.sh {what} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return time.monotonic() - start


def image_size_bytes(image: str) -> int:
    return int(podman("image", "inspect", "--format", "{{.Size}}", image).stdout.strip())


@dataclass
class Container:
    name: str
    url: str  # base URL without /v1

    def logs(self) -> str:
        proc = podman("logs", self.name, check=False)
        return proc.stdout + proc.stderr

    def exec(self, *cmd: str) -> subprocess.CompletedProcess:
        return podman("exec", self.name, *cmd, check=False)

    def terminate(self, timeout_s: int = 45) -> int:
        """SIGTERM (what Kubernetes and `podman stop` send), wait for the exit, return its code:
        143 (128 + SIGTERM) after a graceful shutdown, because uvicorn re-raises the signal."""
        podman("kill", "--signal", "TERM", self.name, check=False)
        code = podman("wait", self.name, timeout=timeout_s + 15).stdout.strip()
        return int(code.splitlines()[-1])

    def remove(self) -> None:
        podman("rm", "-f", "-t", "0", self.name, check=False, timeout=60)


def run_gateway(config: dict, tmp: Path, port: int, env: dict[str, str], image: str = GATEWAY_IMAGE) -> Container:
    """Start the gateway image read-only on the host network with ``config`` mounted as its config."""
    cfg = tmp / f"gateway-{port}.yaml"
    cfg.write_text(yaml.safe_dump(config))
    cfg.chmod(0o644)
    name = f"tw-test-{port}-{uuid.uuid4().hex[:6]}"
    args = ["run", "-d", "--name", name, "--network", "host", "--read-only",
            "--tmpfs", "/var/lib/tierwise:rw,mode=1777", "-v", f"{cfg}:/etc/tierwise/gateway.yaml:ro"]
    for key, value in env.items():
        args += ["-e", f"{key}={value}"]
    args += [image, "python", "-m", "gateway", "serve", "--config", "/etc/tierwise/gateway.yaml",
             "--host", "127.0.0.1", "--port", str(port)]
    podman(*args)
    return Container(name, f"http://127.0.0.1:{port}")


def wait_ready(container: Container, tiers: int, timeout_s: float) -> float:
    """Seconds until /health reports ``tiers`` tiers ready; raises with the container's log."""
    start = time.monotonic()
    while time.monotonic() - start < timeout_s:
        try:
            body = httpx.get(container.url + "/health", timeout=2).json()
            if sum(t["status"] == "ready" for t in body.get("tiers", {}).values()) >= tiers:
                return time.monotonic() - start
        except (httpx.HTTPError, ValueError):
            pass
        state = podman("inspect", "--format", "{{.State.Status}}", container.name, check=False).stdout.strip()
        if state in ("exited", "stopped"):
            break
        time.sleep(0.1)
    raise TimeoutError(f"{container.name} not ready after {timeout_s} s:\n{container.logs()[-4000:]}")


@contextmanager
def fresh_database() -> Iterator[str]:
    """A new PostgreSQL database on the machine's server, dropped afterwards: its URL."""
    name = "tw_c_" + uuid.uuid4().hex[:10]
    admin = sa.create_engine(PG_BASE, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f"CREATE DATABASE {name}"))
    try:
        yield PG_BASE.rsplit("/", 1)[0] + "/" + name
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        admin.dispose()


def ledger_rows(db_url: str) -> list[dict]:
    from gateway.ledger.schema import requests_table as t

    engine = sa.create_engine(db_url)
    try:
        with engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(sa.select(t.c.request_id, t.c.tier, t.c.http_status))]
    finally:
        engine.dispose()
