"""Issue #15's worst cases replayed against a live gateway: what one bad actor or one flaky dependency
does to everyone else, and whether any served answer goes unbooked.

The rig: a real gateway process (uvicorn) with auth on, the trained support router on ``auto``, two
URL tiers on the stub upstream, the ledger on the real Postgres and rate limits on the real Redis, both
reached through a :class:`~gateway.devtools.faults.TcpProxy` so they can be cut or made to hang.
Well-behaved clients (their own key, with limits, so Redis is consulted) send small ``auto`` requests
at a fixed rate (open loop); each case measures them for ``--seconds`` without a fault (the baseline)
and then while the fault runs. Abusive clients run in a child process (see fault_clients.py):

* ``big_prompts``: clients sending ~1 MB prompts to ``auto`` (router scoring on the event loop);
* ``wrong_key_flood``: many clients with random wrong keys (key-cache reloads hit the database);
* ``redis_hang``: Redis accepts connections but never answers;
* ``db_blip``: Postgres cut for ``--blip-s`` seconds during load;
* ``hangup_storm``: clients sending a POST's headers and closing (last: before the fix it can take the
  replica down for minutes).

Per case: the well-behaved clients' p50/p99 (baseline, during, after), 200s whose request id never
reaches the ledger (``rows_missing``, target 0), well-behaved or legitimate requests refused
(``refused``, target 0), abusive requests that must be booked but are not (``unbooked``, target 0),
and the gateway's CPU use per phase. Everything shares this machine's cores: the 1-minute load
average is recorded with each case, and latencies under load mix the gateway's cost with CPU
contention (the CPU figures do not). ``--quick`` is a smoke run of a few minutes.

    python -m benchmarks.faults [--quick] [--seconds 8] [--blip-s 8] [--hangups 200] [--cases a,b]

Writes benchmarks/results/faults.json and prints one line per case.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import secrets
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg
import yaml

from benchmarks.common import REPO
from benchmarks.common import RESULTS as RESULTS_DIR
from benchmarks.fault_clients import Probe, abuse_hangups, abuse_requests, paced
from gateway.devtools.faults import TcpProxy
from gateway.devtools.processes import ServerProcess, free_port, start_stub, wait_until

RESULTS = RESULTS_DIR / "faults.json"
PG_HOST, PG_PORT, REDIS_HOST, REDIS_PORT = "127.0.0.1", 5432, "127.0.0.1", 6379
ADMIN_SECRET = "tw-faults-benchmark-admin-" + secrets.token_hex(16)
PRICE = {"input_per_million": 1.0, "output_per_million": 2.0}
SMALL = {"model": "auto", "max_tokens": 16, "messages": [{"role": "user", "content": "How do I reset my card PIN?"}]}


def spawn_gateway(config_path: Path, log: Path, cwd: Path) -> ServerProcess:
    """``python -m gateway serve`` run from ``cwd``, so ``--gateway-src`` can serve an older checkout's code."""
    with open(log, "ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "gateway", "serve", "-c", str(config_path)], cwd=cwd,
                                stdout=out, stderr=subprocess.STDOUT,
                                env={**os.environ, "TIERWISE_ADMIN_KEY": ADMIN_SECRET})
    port = yaml.safe_load(config_path.read_text())["server"]["port"]
    gateway = ServerProcess(proc, f"http://127.0.0.1:{port}", log)
    admin = {"authorization": f"Bearer {ADMIN_SECRET}"}
    wait_until(lambda: httpx.get(gateway.url + "/v1/models", headers=admin, timeout=2).status_code == 200, 300,
               "gateway", proc, log)
    return gateway


@dataclass
class Rig:
    """Everything a case needs: the gateway's URL, the proxies to break, keys, and the ledger's schema."""

    url: str
    stub_url: str  # the control: the same requests sent straight to the stub measure the machine's contention
    log: Path
    pid: int
    pg: TcpProxy
    redis: TcpProxy
    schema: str
    abusers: ProcessPoolExecutor  # one child process for the abusive clients (see benchmarks/fault_clients.py)
    keys: dict[str, tuple[str, str]] = field(default_factory=dict)  # role -> (key id, secret)

    async def in_child(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self.abusers, fn, *args)

    def direct_pg(self) -> psycopg.Connection:
        """A connection around the proxy, so the checks work while the gateway's path is cut."""
        return psycopg.connect(host=PG_HOST, port=PG_PORT, user="postgres", dbname="test", autocommit=True,
                               options=f"-csearch_path={self.schema}")

    def auth(self, role: str) -> dict[str, str]:
        return {"authorization": f"Bearer {self.keys[role][1]}"}


def gateway_config(stub_url: str, pg_port: int, redis_port: int, schema: str, port: int, tmp: Path) -> dict:
    tier = {"base_url": f"{stub_url}/v1", "upstream_model": "tier"}
    return {
        "model_list": [{"model_name": "teacher", "role": "teacher", "price": PRICE, "url": dict(tier)},
                       {"model_name": "student", "role": "student", "price": PRICE, "fallbacks": ["teacher"],
                        "url": dict(tier)}],
        "router": {"policy": "trained", "artifact": str(REPO / "artifacts" / "router" / "mmlu_router.skops"),
                   "strong_tier": "teacher", "weak_tier": "student"},
        "ledger": {"url": f"postgresql+psycopg://postgres@127.0.0.1:{pg_port}/test"
                          f"?options=-csearch_path%3D{schema}"},
        "auth": {"enabled": True},
        "limits": {"redis_url": f"redis://127.0.0.1:{redis_port}/0"},
        "server": {"port": port, "log_level": "warning"},
        "state_dir": str(tmp / "state"),
    }


def start_rig(tmp: Path, stack: list[Callable[[], None]], gateway_src: Path) -> Rig:
    """Start stub, proxies and gateway (each pushed on ``stack`` for clean-up), then create the keys."""
    stub = start_stub(tmp, tokens=16)
    stack.append(stub.stop)
    schema = "tw_faults_" + uuid.uuid4().hex[:8]
    with psycopg.connect(host=PG_HOST, port=PG_PORT, user="postgres", dbname="test", autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")

    def drop_schema() -> None:
        with psycopg.connect(host=PG_HOST, port=PG_PORT, user="postgres", dbname="test", autocommit=True) as c:
            c.execute(f"DROP SCHEMA {schema} CASCADE")

    stack.append(drop_schema)
    pg, redis = TcpProxy(PG_HOST, PG_PORT).start(), TcpProxy(REDIS_HOST, REDIS_PORT).start()
    stack.extend([pg.stop, redis.stop])
    port = free_port()
    (tmp / "gateway.yaml").write_text(yaml.safe_dump(gateway_config(stub.url, pg.port, redis.port, schema, port, tmp)))
    gw = spawn_gateway(tmp / "gateway.yaml", tmp / "gateway.log", gateway_src)
    stack.append(gw.stop)
    url, log = gw.url, gw.log
    abusers = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))
    stack.append(abusers.shutdown)
    abusers.submit(abuse_hangups, port, "", 0).result()  # start the child now, not inside a measured phase
    rig = Rig(url, stub.url, log, gw.proc.pid, pg, redis, schema, abusers)
    limits = {"rpm": 1_000_000, "tpm": 2_000_000_000}  # high, but set: every request goes through Redis
    for role, spec in {"good": limits, "big": {}, "storm": {}}.items():
        resp = httpx.post(url + "/v1/keys", json={"name": f"faults-{role}", **spec}, timeout=30,
                          headers={"authorization": f"Bearer {ADMIN_SECRET}"})
        resp.raise_for_status()
        rig.keys[role] = (resp.json()["id"], resp.json()["key"])
    return rig


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (Linux /proc): the gateway's cost of a phase, whatever else runs."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# ---- ledger checks ----------------------------------------------------------------------------------
def missing_rows(rig: Rig, ids: list[str], wait_s: float) -> list[str]:
    """Request ids with no ledger row after waiting up to ``wait_s`` for queued rows to be written."""
    deadline = time.monotonic() + wait_s
    missing = list(ids)
    while True:
        with rig.direct_pg() as conn:
            found = {r[0] for r in conn.execute("SELECT request_id FROM ledger_requests WHERE request_id = ANY(%s)",
                                                (missing,))}
        missing = [rid for rid in missing if rid not in found]
        if not missing or time.monotonic() > deadline:
            return missing
        time.sleep(0.5)


def rows_of_key(rig: Rig, role: str) -> int:
    with rig.direct_pg() as conn:
        return conn.execute("SELECT count(*) FROM ledger_requests WHERE api_key_id = %s",
                            (rig.keys[role][0],)).fetchone()[0]


def route_policies(rig: Rig) -> dict[str, int]:
    """Rows per router policy: proof that ``auto`` went through the trained router, not a fallback."""
    with rig.direct_pg() as conn:
        return dict(conn.execute("SELECT coalesce(route_policy, '-'), count(*) FROM ledger_requests GROUP BY 1"))


def key_table_reads(rig: Rig) -> int:
    """Scans of this run's api_keys table (Postgres statistics, flushed about once a second)."""
    with rig.direct_pg() as conn:
        row = conn.execute("SELECT coalesce(seq_scan, 0) + coalesce(idx_scan, 0) FROM pg_stat_user_tables "
                           "WHERE schemaname = %s AND relname = 'api_keys'", (rig.schema,)).fetchone()
    return int(row[0]) if row else 0


# ---- cases ------------------------------------------------------------------------------------------
async def fault_big_prompts(rig: Rig, args: argparse.Namespace, until: float, detail: dict) -> list[str]:
    """~1 MB prompts to ``auto``: routing them must not hold the event loop (issue: 0.56 s each)."""
    words = ("card limit transfer refund " * (args.prompt_kb * 1024 // 27 + 1))[: args.prompt_kb * 1024]
    body = {"model": "auto", "max_tokens": 16, "messages": [{"role": "user", "content": words}]}
    probe = Probe(await rig.in_child(abuse_requests, rig.url, body, rig.auth("big"), args.big_clients, until, 60))
    statuses = [s[2] for s in probe.samples]
    detail.update(big_requests=len(statuses), big_served=statuses.count(200), prompt_kb=args.prompt_kb,
                  refused=sum(s != 200 for s in statuses), big_statuses=sorted({str(s) for s in statuses}))
    return probe.served_ids()


async def fault_wrong_key_flood(rig: Rig, args: argparse.Namespace, until: float, detail: dict) -> list[str]:
    """Unknown keys must not turn into database reads (README: at most ~10 key reloads/s)."""
    reads, started = key_table_reads(rig), time.monotonic()
    probe = Probe(await rig.in_child(abuse_requests, rig.url, SMALL, None, args.flood_clients, until, 30, True))
    elapsed = time.monotonic() - started
    await asyncio.sleep(1.5)  # Postgres flushes table statistics about once a second
    statuses = [s[2] for s in probe.samples]
    detail.update(bad_requests=len(statuses), bad_rps=round(len(statuses) / elapsed, 1),
                  bad_statuses=sorted({str(s) for s in statuses}),
                  key_table_reads_per_s=round((await asyncio.to_thread(key_table_reads, rig) - reads) / elapsed, 1))
    return []


async def hold(fault: Callable[[], None], restore: Callable[[], None], until: float) -> list[str]:
    fault()
    try:
        await asyncio.sleep(max(0.0, until - time.monotonic()))
    finally:
        restore()
    return []


async def fault_redis_hang(rig: Rig, args: argparse.Namespace, until: float, detail: dict) -> list[str]:
    """Limited requests must not wait on a silent Redis for long (tight timeouts, breaker, local limits)."""
    return await hold(rig.redis.hang, rig.redis.restore, until)


async def fault_db_blip(rig: Rig, args: argparse.Namespace, until: float, detail: dict) -> list[str]:
    """Answers served while Postgres is cut must all be booked once it is back."""
    return await hold(rig.pg.cut, rig.pg.restore, until)


async def fault_hangup_storm(rig: Rig, args: argparse.Namespace, until: float, detail: dict) -> list[str]:
    """Each hang-up is a client error that must cost the loop next to nothing and still leave a row."""
    port, before = int(rig.url.rsplit(":", 1)[1]), rows_of_key(rig, "storm")
    sent = await rig.in_child(abuse_hangups, port, rig.keys["storm"][1], args.hangups)
    await asyncio.sleep(max(0.0, until - time.monotonic()))
    detail.update(hangups_sent=sent, _storm_rows_before=before)
    return []


CASES = {"big_prompts": fault_big_prompts, "wrong_key_flood": fault_wrong_key_flood,
         "redis_hang": fault_redis_hang, "db_blip": fault_db_blip, "hangup_storm": fault_hangup_storm}


async def run_case(rig: Rig, name: str, args: argparse.Namespace) -> dict:
    """Baseline, then the fault with the same well-behaved load, then the ledger and recovery checks."""
    good, control, log_before = Probe(), Probe(), rig.log.stat().st_size
    t0, cpu0 = time.monotonic(), cpu_seconds(rig.pid)

    def well_behaved(until: float) -> Awaitable[Any]:
        return asyncio.gather(paced(rig.url, SMALL, rig.auth("good"), args.good_rps, until, good),
                              paced(rig.stub_url, SMALL, {}, args.good_rps, until, control))

    await well_behaved(t0 + args.seconds)
    fault_s = args.blip_s if name == "db_blip" else args.seconds
    start, cpu1 = time.monotonic(), cpu_seconds(rig.pid)
    detail: dict = {}
    load = asyncio.ensure_future(well_behaved(start + fault_s + args.after_s))
    abusive_ids = await CASES[name](rig, args, start + fault_s, detail)
    end = start + fault_s
    cpu = {"baseline": round(100 * (cpu1 - cpu0) / (start - t0)),
           "during": round(100 * (cpu_seconds(rig.pid) - cpu1) / (time.monotonic() - start))}
    await load
    recovery_s = await asyncio.to_thread(wait_recovered, rig, args.recovery_s)
    good_served = good.served_ids()
    missing = await asyncio.to_thread(missing_rows, rig, good_served + abusive_ids, args.drain_s)
    refused_good = sum(status != 200 for t, _, status, _ in good.samples if t >= start)
    unbooked = 0
    if name == "hangup_storm":
        booked = rows_of_key(rig, "storm") - detail.pop("_storm_rows_before")
        detail["hangups_booked"] = booked
        unbooked = detail["hangups_sent"] - booked
    baseline, during = good.summary(t0, start), good.summary(start, end)
    ratio = round(during["p99_ms"] / baseline["p99_ms"], 1) if during["p99_ms"] and baseline["p99_ms"] else None
    return {"baseline": baseline, "during": during, "after": good.summary(end), "p99_during_over_baseline": ratio,
            "served_200": len(good_served) + len(abusive_ids), "rows_missing": len(missing),
            "refused": refused_good + detail.pop("refused", 0), "unbooked": unbooked,
            "recovery_s": recovery_s, "gateway_log_bytes": rig.log.stat().st_size - log_before,
            "control_stub_direct": {"baseline": control.summary(t0, start), "during": control.summary(start, end)},
            "gateway_cpu_pct": cpu, "load_average_1m": round(os.getloadavg()[0], 1), **detail}


def wait_recovered(rig: Rig, limit_s: float) -> float | None:
    """Seconds until ``/health`` answers within 1 s again (None: not within ``limit_s``)."""
    started = time.monotonic()
    while time.monotonic() - started < limit_s:
        try:
            if httpx.get(rig.url + "/health", timeout=1).status_code == 200:
                return round(time.monotonic() - started, 2)
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: short phases, small storms")
    parser.add_argument("--cases", default=",".join(CASES), help="comma-separated subset, in this order")
    parser.add_argument("--seconds", type=float, default=8, help="baseline and fault phase length")
    parser.add_argument("--blip-s", type=float, default=8, help="how long Postgres is cut")
    parser.add_argument("--after-s", type=float, default=3, help="load kept on after the fault ends")
    parser.add_argument("--good-rps", type=float, default=40, help="well-behaved requests per second (open loop)")
    parser.add_argument("--big-clients", type=int, default=2)
    parser.add_argument("--prompt-kb", type=int, default=960, help="big prompt size (server.max_body_bytes is 1 MB)")
    parser.add_argument("--flood-clients", type=int, default=32)
    parser.add_argument("--hangups", type=int, default=200)
    parser.add_argument("--drain-s", type=float, default=30, help="wait for queued ledger rows")
    parser.add_argument("--recovery-s", type=float, default=300, help="wait for /health after a case")
    parser.add_argument("--workdir", type=Path, help="keep configs and the gateway log here (default: a temp dir)")
    parser.add_argument("--gateway-src", type=Path, default=REPO,
                        help="checkout whose gateway package is served (e.g. an older commit, for before/after)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    if args.quick:
        args.seconds, args.blip_s, args.after_s, args.good_rps = 3, 8, 2, 20
        args.flood_clients, args.hangups, args.drain_s, args.recovery_s = 16, 50, 20, 60
    result = {"benchmark": "faults", "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "quick": args.quick,
              "gateway_src": "this checkout" if args.gateway_src == REPO else str(args.gateway_src),
              "settings": {k: v for k, v in vars(args).items() if k not in ("cases", "workdir", "gateway_src", "out")},
              "cases": {}}
    stack: list[Callable[[], None]] = []
    with tempfile.TemporaryDirectory() as tmp:
        workdir = args.workdir or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        try:
            rig = start_rig(workdir, stack, args.gateway_src)
            for name in args.cases.split(","):
                case = asyncio.run(run_case(rig, name, args))
                result["cases"][name] = case
                print(f"{name}: p50/p99 {case['baseline']['p50_ms']}/{case['baseline']['p99_ms']} ms -> "
                      f"{case['during']['p50_ms']}/{case['during']['p99_ms']} ms during (stub direct: "
                      f"{case['control_stub_direct']['during']['p50_ms']} ms); served {case['served_200']}, "
                      f"rows missing {case['rows_missing']}, refused {case['refused']}, unbooked {case['unbooked']}, "
                      f"recovery {case['recovery_s']} s", flush=True)
                if case["recovery_s"] is None:
                    result["aborted"] = f"gateway unresponsive after {name}"
                    break
            result["ledger_rows_by_route_policy"] = route_policies(rig)
        finally:
            for undo in reversed(stack):
                undo()
    result["targets"] = {f"{name}.{what}==0": case[what] == 0 for name, case in result["cases"].items()
                         for what in ("rows_missing", "refused", "unbooked")}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
