"""The container images, measured (issue #16): size, build time and start to ready.

Run from the repository root on a machine with podman (``scripts/build_images.sh`` installs
it)::

    .venv/bin/python -m benchmarks.deploy_images [--starts 5]

1. **Build** ``tierwise/gateway`` three ways, with the Debian bases and the wheelhouse warm:
   with the layer cache (nothing changed), after a code change (a new module in ``gateway/``,
   removed afterwards: the project's layers are rebuilt, the venv's are reused), and
   ``--no-cache`` (every layer again, the wheelhouse still warm: what a lock change costs).
   Then ``tierwise/gateway-litellm`` on top of it.
2. **Size** of each image (podman's uncompressed size) and the gateway image's layers.
3. **Start to ready**: ``podman run --read-only`` of the gateway image until ``/health``
   reports both tiers ready (two url: tiers on a stub upstream on this machine, the trained
   router of the image, SQLite ledger in a tmpfs), ``--starts`` times; median, min and max.

Targets: gateway image <= 400 MB; rebuild from a warm wheelhouse <= 2 min; container start to
ready <= 5 s. Writes ``benchmarks/results/deploy_images.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import httpx
import yaml

from benchmarks.common import REPO, RESULTS, log
from gateway.devtools.processes import free_port, start_stub

GATEWAY = "localhost/tierwise/gateway:0.1.0"
LITELLM = "localhost/tierwise/gateway-litellm:0.1.0"
CPU = "localhost/tierwise/vllm-cpu:0.1.0"
ENV = {**os.environ, "CONTAINERS_CONF": os.environ.get("CONTAINERS_CONF", str(REPO / "deploy/podman/containers.conf"))}


def podman(*args: str, check: bool = True) -> str:
    proc = subprocess.run(["podman", *args], env=ENV, capture_output=True, text=True, timeout=600)
    if check and proc.returncode != 0:
        raise RuntimeError(f"podman {' '.join(args)}: {proc.stderr[-2000:]}")
    return proc.stdout


def build(what: str, **env: str) -> float:
    start = time.monotonic()
    proc = subprocess.run(["bash", "scripts/build_images.sh", what], cwd=REPO, env={**ENV, **env},
                          capture_output=True, text=True, timeout=3600)
    if proc.returncode != 0:
        raise RuntimeError(f"build_images.sh {what}: {proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return round(time.monotonic() - start, 1)


def size_mb(image: str) -> float | None:
    out = podman("image", "inspect", "--format", "{{.Size}}", image, check=False).strip()
    return round(int(out) / 1e6, 1) if out else None


def layers(image: str) -> list[dict]:
    rows = podman("history", "--format", "{{.Size}}\t{{.CreatedBy}}", image).splitlines()
    return [{"size": size, "created_by": by[:120]} for size, by in (r.split("\t", 1) for r in rows)
            if not size.startswith("0 B")]


def start_to_ready(stub_url: str, tmp: Path) -> float:
    config = {
        "model_list": [
            {"model_name": "teacher", "role": "teacher", "url": {"base_url": stub_url + "/v1"},
             "price": {"input_per_million": 1.0, "output_per_million": 2.0}},
            {"model_name": "student", "role": "student", "url": {"base_url": stub_url + "/v1"},
             "price": {"input_per_million": 0.1, "output_per_million": 0.2}},
        ],
        "router": {"policy": "trained", "artifact": "{project_root}/artifacts/router/mmlu_router.skops",
                   "threshold": 0.5, "strong_tier": "teacher", "weak_tier": "student"},
        "ledger": {"url": "sqlite:////var/lib/tierwise/ledger.db"}, "state_dir": "/var/lib/tierwise",
    }
    cfg = tmp / "gateway.yaml"
    cfg.write_text(yaml.safe_dump(config))
    cfg.chmod(0o644)
    port = free_port()
    name = f"tw-bench-{port}"
    url = f"http://127.0.0.1:{port}/health"
    start = time.monotonic()
    podman("run", "-d", "--name", name, "--network", "host", "--read-only", "--tmpfs",
           "/var/lib/tierwise:rw,mode=1777", "-v", f"{cfg}:/etc/tierwise/gateway.yaml:ro", GATEWAY,
           "python", "-m", "gateway", "serve", "--config", "/etc/tierwise/gateway.yaml", "--host", "127.0.0.1",
           "--port", str(port))
    try:
        while time.monotonic() - start < 120:
            try:
                tiers = httpx.get(url, timeout=1).json()["tiers"]
                if all(t["status"] == "ready" for t in tiers.values()):
                    return round(time.monotonic() - start, 2)
            except (httpx.HTTPError, ValueError, KeyError):
                pass
            time.sleep(0.05)
        raise TimeoutError(podman("logs", name, check=False))
    finally:
        podman("rm", "-f", "-t", "0", name, check=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--starts", type=int, default=5)
    args = parser.parse_args()
    result: dict = {"targets": {"gateway_image_mb": 400, "rebuild_warm_wheelhouse_s": 120, "start_to_ready_s": 5},
                    "machine": {"cpus": os.cpu_count(), "loadavg_before": os.getloadavg()}}
    builds = result["build_s"] = {}
    log("gateway image: cached build, then after a code change, then --no-cache")
    builds["gateway_cached"] = build("gateway")
    probe = REPO / "gateway" / "_rebuild_probe.py"
    probe.write_text(f'"""benchmarks/deploy_images.py: a code change ({time.time()})."""\n')
    try:
        builds["gateway_code_change"] = build("gateway")
    finally:
        probe.unlink()
    builds["gateway_no_cache_warm_wheelhouse"] = build("gateway", BUILD_FLAGS="--no-cache")
    builds["gateway_litellm_after_gateway"] = build("litellm")
    result["size_mb"] = {"gateway": size_mb(GATEWAY), "gateway_litellm": size_mb(LITELLM), "vllm_cpu": size_mb(CPU)}
    result["gateway_layers"] = layers(GATEWAY)
    log(f"sizes {result['size_mb']}; builds {builds}")
    with tempfile.TemporaryDirectory() as tmp:
        stub = start_stub(Path(tmp), tokens=8)
        try:
            starts = [start_to_ready(stub.url, Path(tmp)) for _ in range(args.starts)]
        finally:
            stub.stop()
    result["start_to_ready_s"] = {"runs": starts, "median": statistics.median(starts), "min": min(starts),
                                  "max": max(starts)}
    result["machine"]["loadavg_after"] = os.getloadavg()
    log(f"start to ready: {result['start_to_ready_s']}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "deploy_images.json").write_text(json.dumps(result, indent=2))
    log(f"wrote {RESULTS / 'deploy_images.json'}")


if __name__ == "__main__":
    main()
