"""Where the gateway's CPU goes per request (issue #17 item 1): cProfile over the request path.

In process: an httpx ``ASGITransport`` client -> ``create_app`` (auth on, the trained MMLU
router, SQLite ledger, metrics) -> the stub upstream over real HTTP. 3000 non-streamed chat
requests at concurrency 32. cProfile inflates Python-heavy code and the client's own work is
included: read it for proportions, not for microseconds (``gateway_overhead.py`` measures those).

    python -m benchmarks.profile_gateway   # -> benchmarks/results/gateway_profile.txt
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import pstats
import tempfile
import time
from pathlib import Path

import httpx

from benchmarks.common import REPO, RESULTS
from gateway.app import create_app
from gateway.auth.keys import KeyStore
from gateway.config import parse_config
from gateway.devtools.processes import start_stub
from gateway.ledger.schema import make_engine

PRICE = {"input_per_million": 1, "output_per_million": 1}
BODY = {"model": "auto", "messages": [{"role": "user", "content": "What is my card's limit?"}], "max_tokens": 16}


async def profile(stub_url: str, tmp: Path, n: int, concurrency: int) -> str:
    db = f"sqlite:///{tmp / 'ledger.db'}"
    engine = make_engine(db)
    _, secret = KeyStore(engine).create("bench")
    engine.dispose()
    config = parse_config({
        "model_list": [{"model_name": name, "role": name, "price": PRICE, "url": {"base_url": stub_url + "/v1"}}
                       for name in ("teacher", "student")],
        "router": {"policy": "trained", "artifact": str(REPO / "artifacts" / "router" / "mmlu_router.skops"),
                   "strong_tier": "teacher", "weak_tier": "student"},
        "ledger": {"url": db}, "auth": {"enabled": True}, "state_dir": str(tmp / "state"),
        "server": {"log_level": "warning"}})
    app = create_app(config, tier_wait_s=10)
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw",
                                     headers={"authorization": f"Bearer {secret}"}) as client:
            for _ in range(50):  # warm: imports, pools, caches
                await client.post("/v1/chat/completions", json=BODY)
            gate = asyncio.Semaphore(concurrency)

            async def one() -> None:
                async with gate:
                    reply = await client.post("/v1/chat/completions", json=BODY)
                    assert reply.status_code == 200, reply.text

            prof = cProfile.Profile()
            started = time.perf_counter()
            prof.enable()
            await asyncio.gather(*(one() for _ in range(n)))
            prof.disable()
            wall = time.perf_counter() - started
    out = io.StringIO()
    pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(30)
    pstats.Stats(prof, stream=out).sort_stats("cumulative").print_stats(45)
    return (f"{n} requests at c={concurrency} in {wall:.2f} s under cProfile ({1e6 * wall / n:.0f} us/request "
            f"wall, in-process client included)\n\n{out.getvalue()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        stub = start_stub(tmp, tokens=16)
        try:
            text = asyncio.run(profile(stub.url, tmp, args.requests, args.concurrency))
        finally:
            stub.stop()
    (RESULTS / "gateway_profile.txt").write_text(text)
    print(text.splitlines()[0])


if __name__ == "__main__":
    main()
