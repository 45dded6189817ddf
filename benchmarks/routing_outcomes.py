"""Each tier's answer to each sampled message, generated once, for ``routing_competence``.

Every routing policy only *chooses* a tier; what the chosen tier answers does not depend on
the policy. So each tier answers each sampled message once here, against real vLLM servers,
and ``benchmarks/routing_competence.py`` evaluates every policy's choices offline against
these answers. The student is asked with ``logprobs`` (the cascade's confidence is a
function of them) and streamed, so its time to first token and to the end of its first
line (the cascade's decision point) are measured too; the teacher/flagship likewise.

Rows go to a JSONL file as they complete; a re-run skips what is there (runs are long on 2
shared cores and may be interrupted).

Sets (seeded samples; sizes chosen in routing_competence.py from the Wilson interval):

* ``b77_val``: carved from Banking77 *train* (the last part of a seeded permutation, never
  test): the only data a threshold may be chosen on;
* ``b77_test``: Banking77 test (in scope), with the intent label;
* ``hwu64``: HWU64 test (out of scope; evaluation only, nothing is fitted on it);
* ``mmlu``: RouteLLM MMLU questions under 1,200 characters, contaminated ones left out.
"""

from __future__ import annotations

import asyncio
import csv
import json
import random
import time
from pathlib import Path

import aiohttp

from benchmarks.common import log, require_data
from distill.data import messages_for
from router.data import load_contaminated

MAX_TOKENS = 20  # the intent line ("Intent: <label>" + newline) and a little reply: what is evaluated; 2 shared cores
TOP_LOGPROBS = 5
MMLU_MAX_CHARS = 1200


def _csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def sample_sets(sizes: dict[str, int], seed: int = 0) -> dict[str, list[dict]]:
    """``{set: [{id, text, label, messages}]}``, each a seeded sample of its source."""
    rng = random.Random(seed)
    b77 = require_data("banking77")
    train = _csv(b77 / "train.csv")
    order = list(range(len(train)))
    random.Random(seed).shuffle(order)
    carved = [train[i] for i in order[-max(sizes.get("b77_val", 0), 1):]]  # the tail of a permutation of train
    test = _csv(b77 / "test.csv")
    hwu = _csv(require_data("hwu64") / "test.csv")
    routellm = require_data("routellm")
    excluded = load_contaminated(routellm / "mmlu_contaminated.jsonl")
    mmlu_prompts = sorted({r["prompt"] for p in sorted((routellm / "mmlu").glob("*.csv")) for r in _csv(p)
                           if r["prompt"] not in excluded and len(r["prompt"]) < MMLU_MAX_CHARS})

    def pick(rows: list, n: int) -> list:
        return rng.sample(rows, min(n, len(rows)))

    sets = {
        "b77_val": [{"text": r["text"], "label": r["category"]} for r in carved[: sizes.get("b77_val", 0)]],
        "b77_test": [{"text": r["text"], "label": r["category"]} for r in pick(test, sizes.get("b77_test", 0))],
        "hwu64": [{"text": r["text"], "label": None} for r in pick(hwu, sizes.get("hwu64", 0))],
        "mmlu": [{"text": p, "label": None} for p in pick(mmlu_prompts, sizes.get("mmlu", 0))],
    }
    for name, rows in sets.items():
        for i, row in enumerate(rows):
            row["id"] = f"{name}:{i}"
            # The support bot's clients send its system prompt; exam questions come bare.
            row["messages"] = ([{"role": "user", "content": row["text"]}] if name == "mmlu"
                               else messages_for(row["text"]))
    return sets


async def ask(session: aiohttp.ClientSession, base_url: str, model: str, messages: list[dict],
              logprobs: bool, user: str | None = None) -> dict:
    """One streamed chat completion: text, usage, first-line token logprobs, TTFT, time to line end
    (and, through a gateway, the ledger row's ``request_id``)."""
    body: dict = {"model": model, "messages": messages, "max_tokens": MAX_TOKENS, "temperature": 0.0,
                  "stream": True, "stream_options": {"include_usage": True}, **({"user": user} if user else {})}
    if logprobs:
        body |= {"logprobs": True, "top_logprobs": TOP_LOGPROBS}
    started = time.perf_counter()
    ttft = first_line_s = None
    text, tokens, usage = "", [], {}
    async with session.post(f"{base_url}/chat/completions", json=body) as resp:
        request_id = resp.headers.get("x-request-id")
        if resp.status != 200:
            return {"error": f"{resp.status}: {(await resp.text())[:200]}"}
        async for raw in resp.content:
            line = raw.decode().strip()
            if not line.startswith("data:") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[5:])
            usage = chunk.get("usage") or usage
            for choice in chunk.get("choices", []):
                delta = (choice.get("delta") or {}).get("content") or ""
                if delta and ttft is None:
                    ttft = time.perf_counter() - started
                text += delta
                if first_line_s is None and "\n" in text.lstrip("\n"):
                    first_line_s = time.perf_counter() - started
                for lp in ((choice.get("logprobs") or {}).get("content") or []):
                    # The shape router.confidence.logprob_features reads (OpenAI's, trimmed).
                    tokens.append({"token": lp["token"], "logprob": lp["logprob"],
                                   "top_logprobs": [{"token": t["token"], "logprob": t["logprob"]}
                                                    for t in lp.get("top_logprobs") or []]})
    total = time.perf_counter() - started
    return {"text": text, "prompt_tokens": usage.get("prompt_tokens", 0),
            "completion_tokens": usage.get("completion_tokens", 0), "ttft_s": ttft,
            "first_line_s": first_line_s or total, "total_s": total, "request_id": request_id,
            **({"logprobs": tokens} if logprobs else {})}


async def generate(jobs: list[tuple[str, str, str, dict]], out: Path, concurrency: int) -> None:
    """Run ``(tier, model, base_url, row)`` jobs not yet in ``out``; append each result as it lands."""
    done = set()
    if out.exists():
        for line in out.read_text().splitlines():
            rec = json.loads(line)
            if "error" not in rec:
                done.add((rec["tier"], rec["id"]))
    todo = [j for j in jobs if (j[0], j[3]["id"]) not in done]
    log(f"{len(todo)} generations to run ({len(jobs) - len(todo)} already in {out.name})")
    queue: asyncio.Queue = asyncio.Queue()
    for job in todo:
        queue.put_nowait(job)
    finished = 0
    timeout = aiohttp.ClientTimeout(total=600)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        with open(out, "a") as sink:
            async def worker() -> None:
                nonlocal finished
                while not queue.empty():
                    tier, model, base_url, row = queue.get_nowait()
                    try:
                        result = await ask(session, base_url, model, row["messages"],
                                             logprobs=tier in ("student", "teacher_lp"))
                    except (aiohttp.ClientError, TimeoutError) as exc:
                        result = {"error": repr(exc)}
                    sink.write(json.dumps({"tier": tier, "id": row["id"], **result}) + "\n")
                    sink.flush()
                    finished += 1
                    if finished % 100 == 0:
                        log(f"{finished}/{len(todo)} generations")
            await asyncio.gather(*(worker() for _ in range(concurrency)))


def load_outcomes(folder: Path) -> dict[tuple[str, str], dict]:
    """``{(tier, row id): answer}`` from every generation file in ``folder`` (failed rows left out)."""
    out = {}
    lines = [line for path in sorted(folder.glob("outcomes.*.jsonl")) for line in path.read_text().splitlines()]
    for line in lines:
        rec = json.loads(line)
        if "error" not in rec:
            out[(rec["tier"], rec["id"])] = rec
    return out


async def throughput(url: str, models: list[str], streams: int = 8, requests: int = 16, rounds: int = 2) -> dict:
    """Generated tokens/s of each model name on one server, rounds interleaved (a shared machine's load
    drifts): the price of serving the teacher as an adapter next to the base rather than merged."""
    body = {"messages": [{"role": "user", "content": "Write a short paragraph about saving money."}],
            "max_tokens": 64, "temperature": 0.0, "ignore_eos": True}
    totals = {m: [0, 0.0] for m in models}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=900)) as session:
        async def one(model: str) -> int:
            async with session.post(f"{url}/chat/completions", json={**body, "model": model}) as resp:
                return (await resp.json())["usage"]["completion_tokens"]

        for _ in range(rounds):
            for model in models:
                sem = asyncio.Semaphore(streams)

                async def bounded() -> int:
                    async with sem:
                        return await one(model)
                started = time.perf_counter()
                tokens = sum(await asyncio.gather(*(bounded() for _ in range(requests))))
                totals[model][0] += tokens
                totals[model][1] += time.perf_counter() - started
    return {m: {"tokens_per_s": round(t / s, 2), "tokens": t, "streams": streams} for m, (t, s) in totals.items()}
