"""Bring deploy/compose.yaml up with podman-compose on this machine and check it end to end
(issue #16 item 5), then take it down. Needs the images (``scripts/build_images.sh all``) and
the stand-ins for the official Postgres, Redis and Prometheus images
(``scripts/build_images.sh standins``; deploy/compose.standins.yaml says why)::

    .venv/bin/python scripts/compose_smoke.py [--keep]

Checks: every service that should run is running (``models`` exited 0); the gateway reports
its tiers ready; 401 without a key; a client key made with the bootstrap admin key; ``auto``
answers a banking question (student or support teacher, as the routing chain decides) and sends
a general one to the flagship; both answers are rows in the stand-in Postgres ledger;
Prometheus scrapes the gateway and both vLLM tiers. Prints the timings
and writes them to benchmarks/results/compose_smoke.json.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import subprocess
import sys
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
PROJECT = "tierwise-smoke"
FILES = ["-f", "deploy/compose.yaml", "-f", "deploy/compose.standins.yaml"]
EXPECTED = {"models", "teacher", "student", "ledger-db", "redis", "gateway", "prometheus"}


def compose(*args: str, env: dict[str, str], check: bool = True, timeout: float = 900) -> subprocess.CompletedProcess:
    proc = subprocess.run(["podman-compose", "-p", PROJECT, *FILES, *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise RuntimeError(f"podman-compose {' '.join(args)} -> {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def podman(*args: str, env: dict[str, str]) -> str:
    return subprocess.run(["podman", *args], env=env, capture_output=True, text=True, timeout=120).stdout


def wait(what: str, check, timeout_s: float) -> float:
    start = time.monotonic()
    last: object = None
    while time.monotonic() - start < timeout_s:
        try:
            last = check()
            if last is True:
                return time.monotonic() - start
        except (httpx.HTTPError, ValueError, KeyError) as exc:
            last = exc
        time.sleep(2)
    raise TimeoutError(f"{what}: not after {timeout_s} s (last: {last!r})")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keep", action="store_true", help="leave the stack up (take it down with podman-compose down -v)")
    parser.add_argument("--port", type=int, default=18000)
    parser.add_argument("--prometheus-port", type=int, default=19090)
    args = parser.parse_args()
    admin = "tw-admin-" + secrets.token_hex(16)
    env = {**os.environ, "CONTAINERS_CONF": os.environ.get("CONTAINERS_CONF", str(REPO / "deploy/podman/containers.conf")),
           "TIERWISE_DB_PASSWORD": secrets.token_hex(12), "TIERWISE_ADMIN_KEY": admin,
           "TIERWISE_PORT": str(args.port), "PROMETHEUS_PORT": str(args.prometheus_port)}
    gateway, prometheus = f"http://127.0.0.1:{args.port}", f"http://127.0.0.1:{args.prometheus_port}"
    result: dict = {"compose_files": FILES[1::2], "podman_compose": compose("version", env=env).stdout.strip().splitlines()}
    t0 = time.monotonic()
    # The services by name: profiles (grafana here, ledger-backup) are ignored by podman-compose
    # 1.0.3, Debian bookworm's, which would start them all.
    compose("up", "-d", *sorted(EXPECTED), env=env)
    result["up_s"] = round(time.monotonic() - t0, 1)
    try:
        def tiers_ready() -> bool | dict:
            tiers = httpx.get(gateway + "/health", timeout=5).json()["tiers"]
            return all(t["status"] == "ready" for t in tiers.values()) or {k: t["status"] for k, t in tiers.items()}
        result["tiers_ready_s"] = round(wait("both vLLM tiers ready behind the gateway", tiers_ready, 900)
                                        + result["up_s"], 1)
        running = {line.split("\t")[1] for line in podman(
            "ps", "--filter", f"label=io.podman.compose.project={PROJECT}", "--format",
            '{{.Names}}\t{{index .Labels "com.docker.compose.service"}}', env=env).splitlines() if "\t" in line}
        exited = podman("ps", "-a", "--filter", f"label=io.podman.compose.project={PROJECT}", "--filter", "status=exited",
                        "--format", '{{index .Labels "com.docker.compose.service"}} {{.ExitCode}}', env=env).split("\n")
        result["running"], result["exited"] = sorted(running), [e for e in exited if e]
        missing = EXPECTED - running - {"models"}
        assert not missing, f"not running: {missing}"
        assert "models 0" in result["exited"], result["exited"]

        assert httpx.post(gateway + "/v1/chat/completions", json={"model": "auto", "messages": []}).status_code == 401
        made = httpx.post(gateway + "/v1/keys", json={"name": "smoke"}, headers={"authorization": f"Bearer {admin}"},
                          timeout=10)
        assert made.status_code in (200, 201), made.text
        key = made.json()["key"]
        routed = {}
        for label, text in (("banking", "My card payment was declined at the shop, why?"),
                            ("general", "What will the weather be like in Paris tomorrow?")):
            resp = httpx.post(gateway + "/v1/chat/completions", headers={"authorization": f"Bearer {key}"}, timeout=300,
                              json={"model": "auto", "max_tokens": 24,
                                    "messages": [{"role": "user", "content": text}]})
            assert resp.status_code == 200, resp.text
            routed[label] = resp.headers["x-tierwise-tier"]
        result["routed"] = routed
        # The gateway books in batches: poll the stand-in Postgres for the two answered rows.
        def booked() -> bool | list:
            rows = podman("exec", f"{PROJECT}_ledger-db_1", "psql", "-U", "tierwise", "-d", "tierwise", "-tAc",
                          "SELECT tier || ' ' || http_status FROM ledger_requests ORDER BY id", env=env).split()
            result["ledger_rows"] = [" ".join(rows[i:i + 2]) for i in range(0, len(rows), 2)]
            return sorted(r for r in result["ledger_rows"] if r.endswith(" 200")) == sorted(f"{t} 200" for t in
                                                                                         routed.values()) or rows
        wait("both answers booked in the Postgres ledger", booked, 30)
        # The competence gate: a general question is out of the support student's scope.
        assert routed["general"] == "flagship", routed

        def scraped() -> bool | list:
            targets = httpx.get(prometheus + "/api/v1/targets", timeout=5).json()["data"]["activeTargets"]
            health = sorted((t["labels"]["job"], t["labels"].get("instance"), t["health"]) for t in targets)
            return all(h == "up" for *_, h in health) and len(health) == 3 or health
        result["prometheus_up_s"] = round(wait("Prometheus scraping the gateway and both tiers", scraped, 120), 1)
        result["ok"] = True
    finally:
        (REPO / "benchmarks" / "results").mkdir(parents=True, exist_ok=True)
        (REPO / "benchmarks" / "results" / "compose_smoke.json").write_text(json.dumps(result, indent=2))
        print(json.dumps(result, indent=2))
        if not args.keep:
            compose("down", "-v", env=env, check=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
