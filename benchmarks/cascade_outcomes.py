"""Student and teacher outcomes on a validation split carved from Banking77 *train*, for the cascade.

The cascade (``gateway/routing/cascade.py``) accepts the student's answer when a calibrated
function of its first-line token logprobs clears a threshold. That function
(``router.confidence.CascadeConfidence``) needs labelled examples: the student's answer with
its logprobs, and whether it agrees with the teacher's. This script produces them by asking
real vLLM tiers (the assembled student and teacher in the model cache), exactly as the gateway
would: the support system prompt + the customer message, greedy, the student with
``logprobs: true, top_logprobs: 5``.

Data discipline: the prompts are a seeded sample of Banking77 **train**; Banking77 test and
HWU64 are never read here, so thresholds chosen on this file are not chosen on a test split.
Caveat (also in the artifact card): the shipped student and teacher were trained on all of
Banking77 train (sequence-level KD on the teacher's generations), so agreement measured here is
optimistic compared with unseen traffic.

    python -m benchmarks.cascade_outcomes --n 800    # 31 min on 2 cores at load 12-20 (11 of them vLLM start-up)
    -> benchmarks/results/cascade_outcomes_validation.jsonl   (one JSON object per prompt)

``--teacher-only --teacher-url URL``: the teacher alone, *with* logprobs, on the same carve
(``teacher_outcomes_validation.jsonl``): what the competence gate's band check is calibrated on
(is the workload teacher's first line trustworthy? label: its intent is the gold one).

Rows are appended as they finish, so an interrupted run keeps what it measured (``--resume``).

``--reuse-teacher OLD.jsonl --out NEW.jsonl``: a new student against the same teacher tier: only
the student is asked; the teacher's answers to the same prompts are read from the earlier file.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import tempfile
import time
from pathlib import Path

import httpx

from benchmarks.common import RESULTS, data_root, log, require_data
from distill.data import messages_for, parse_intent, read_csv
from gateway.devtools.processes import free_port, model_cache, spawn, wait_until

OUT = RESULTS / "cascade_outcomes_validation.jsonl"
TEACHER_OUT = RESULTS / "teacher_outcomes_validation.jsonl"
# Student tokens generated: the decision reads the first line or the first N tokens; the
# intent line of a Banking77 answer is 4-14 tokens, so 16 covers it (and the cost is bounded).
STUDENT_MAX_TOKENS = 16
TEACHER_MAX_TOKENS = 24


def validation_prompts(n: int, seed: int = 0) -> list[dict]:
    """A seeded sample of ``n`` Banking77 train rows (text, category): the carved validation set."""
    rows = read_csv(require_data("banking77/train.csv"))
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    return [{"index": i, **rows[i]} for i in order[:n]]


def start_vllm(model_dir: Path, name: str, tmp: Path):
    """One vLLM OpenAI server (float32, eager: the CPU settings in /work/shared/NOTES.md)."""
    port = free_port()
    log_path = tmp / f"vllm-{name}.log"
    proc = spawn(["vllm.entrypoints.openai.api_server", "--model", str(model_dir), "--served-model-name", name,
                  "--port", str(port), "--dtype", "float32", "--max-model-len", "1024", "--enforce-eager",
                  "--max-num-seqs", "16", "--disable-uvicorn-access-log"], log_path,
                 env={"VLLM_CPU_KVCACHE_SPACE": "1"})
    url = f"http://127.0.0.1:{port}"
    return proc, url, log_path


async def ask(client: httpx.AsyncClient, url: str, model: str, text: str, max_tokens: int,
              logprobs: bool) -> dict:
    body = {"model": model, "messages": messages_for(text), "temperature": 0, "max_tokens": max_tokens}
    if logprobs:
        body |= {"logprobs": True, "top_logprobs": 5}
    started = time.perf_counter()
    r = await client.post(url + "/v1/chat/completions", json=body)
    r.raise_for_status()
    data = r.json()
    choice = data["choices"][0]
    usage = data.get("usage") or {}
    out = {"text": choice["message"]["content"] or "", "latency_ms": round((time.perf_counter() - started) * 1000, 1),
           "usage": {k: usage[k] for k in ("prompt_tokens", "completion_tokens", "total_tokens") if k in usage}}
    if logprobs:  # kept small: 4 decimals, the top-2 alternatives (all the margin feature reads)
        out["logprobs"] = [{"token": t["token"], "logprob": round(t["logprob"], 4),
                            "top_logprobs": [{"token": a["token"], "logprob": round(a["logprob"], 4)}
                                             for a in (t.get("top_logprobs") or [])[:2]]}
                           for t in (choice.get("logprobs") or {}).get("content") or []]
    return out


async def run(rows: list[dict], urls: dict[str, str], out: Path, concurrency: int,
              teacher_answers: dict[int, dict] | None = None) -> None:
    """Both tiers per prompt; with ``teacher_answers`` (by prompt index) only the student is asked."""
    queue: asyncio.Queue = asyncio.Queue()
    for row in rows:
        queue.put_nowait(row)
    done = 0
    async with httpx.AsyncClient(timeout=600) as client:
        async def worker() -> None:
            nonlocal done
            while not queue.empty():
                row = queue.get_nowait()
                if teacher_answers is not None:
                    student = await ask(client, urls["student"], "student", row["text"], STUDENT_MAX_TOKENS, True)
                    teacher = teacher_answers[row["index"]]
                else:
                    student, teacher = await asyncio.gather(
                        ask(client, urls["student"], "student", row["text"], STUDENT_MAX_TOKENS, True),
                        ask(client, urls["teacher"], "teacher", row["text"], TEACHER_MAX_TOKENS, False))
                s_intent, t_intent = parse_intent(student["text"]), parse_intent(teacher["text"])
                record = {"index": row["index"], "text": row["text"], "label": row["category"],
                          "student": student, "teacher": teacher,
                          "student_intent": s_intent, "teacher_intent": t_intent,
                          "agree": s_intent is not None and s_intent == t_intent,
                          "student_correct": s_intent == row["category"],
                          "teacher_correct": t_intent == row["category"]}
                with open(out, "a", encoding="utf-8") as f:
                    f.write(json.dumps(record, separators=(",", ":")) + "\n")
                done += 1
                if done % 50 == 0:
                    log(f"{done}/{len(rows)} prompts")
        await asyncio.gather(*(worker() for _ in range(concurrency)))


async def run_teacher(rows: list[dict], url: str, out: Path, concurrency: int) -> None:
    """The teacher alone with logprobs: ``{index, text, label, teacher, teacher_intent, teacher_correct}`` rows."""
    sem = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(timeout=600) as client:
        async def one(row: dict) -> None:
            async with sem:
                teacher = await ask(client, url, "teacher", row["text"], STUDENT_MAX_TOKENS, True)
            intent = parse_intent(teacher["text"])
            with open(out, "a", encoding="utf-8") as f:
                f.write(json.dumps({"index": row["index"], "text": row["text"], "label": row["category"],
                                    "teacher": teacher, "teacher_intent": intent,
                                    "teacher_correct": intent == row["category"]}, separators=(",", ":")) + "\n")
        await asyncio.gather(*(one(r) for r in rows))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=800, help="validation prompts (Banking77 train sample)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--resume", action="store_true", help="skip prompts already in --out")
    parser.add_argument("--teacher-only", action="store_true", help="the teacher alone, with logprobs "
                        f"(default --out {TEACHER_OUT.name})")
    parser.add_argument("--teacher-url", help="a running server's base URL serving `teacher` (--teacher-only)")
    parser.add_argument("--reuse-teacher", type=Path, default=None,
                        help="a new student only: the teacher's answers (same tier, same prompts) are read from this "
                             "earlier outputs file instead of asked again")
    args = parser.parse_args()
    data_root()
    rows = validation_prompts(args.n, args.seed)
    teacher_answers = None
    if args.reuse_teacher:
        teacher_answers = {r["index"]: r["teacher"] for r in map(json.loads, args.reuse_teacher.read_text().splitlines())
                           if r.get("teacher")}
        missing = [r["index"] for r in rows if r["index"] not in teacher_answers]
        if missing:
            raise SystemExit(f"{args.reuse_teacher} lacks the teacher's answer for {len(missing)} prompts "
                             f"(other --n/--seed?): e.g. index {missing[0]}")
    if args.teacher_only:
        out = TEACHER_OUT if args.out == OUT else args.out
        out.unlink(missing_ok=True)
        asyncio.run(run_teacher(rows, args.teacher_url.rstrip("/").removesuffix("/v1"), out, args.concurrency))
        log(f"{len(rows)} teacher outcomes in {out}")
        return
    if args.resume and args.out.exists():
        seen = {json.loads(line)["index"] for line in args.out.read_text().splitlines() if line.strip()}
        rows = [r for r in rows if r["index"] not in seen]
    elif args.out.exists():
        args.out.unlink()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    cache = model_cache()
    tmp = Path(tempfile.mkdtemp(prefix="cascade-outcomes-"))
    tiers = ("student",) if teacher_answers is not None else ("student", "teacher")
    procs = {name: start_vllm(cache / name, name, tmp) for name in tiers}
    try:
        for name, (proc, url, log_path) in procs.items():
            wait_until(lambda u=url: httpx.get(u + "/health").status_code == 200, 900, f"vLLM {name}", proc, log_path)
            log(f"vLLM {name} ready at {url}")
        asyncio.run(run(rows, {n: p[1] for n, p in procs.items()}, args.out, args.concurrency, teacher_answers))
    finally:
        for proc, _url, _log in procs.values():
            proc.terminate()
        for proc, _url, _log in procs.values():
            try:
                proc.wait(60)
            except Exception:  # noqa: BLE001 - make sure no server outlives the run
                proc.kill()
    lines = [json.loads(x) for x in args.out.read_text().splitlines() if x.strip()]
    agree = sum(r["agree"] for r in lines) / max(1, len(lines))
    log(f"{len(lines)} outcomes in {args.out}; student-teacher agreement {agree:.3f}; pid {os.getpid()}")


if __name__ == "__main__":
    main()
