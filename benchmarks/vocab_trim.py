"""A faster student by vocabulary trimming (issue #18 item 5), measured side by side in one run.

1. The shipped 6-layer student answers 1,500 Banking77 *training* messages (vLLM, greedy): what
   it writes. The corpus is those answers plus every training message with its gold target,
   rendered through the chat template with the support system prompt.
2. ``distill.vocab_trim.trim_vocabulary`` keeps the tokens that corpus uses (+ the byte
   alphabet, specials and merge parts). Checked: every corpus text tokenizes to the same token
   strings as before.
3. Banking77 *test* sample (n = 600, seeded): intent accuracy of the student and the trimmed
   student (vLLM, greedy), and how often their answers are identical.
4. vLLM decode throughput on this CPU, float32, 1 and 8 streams of 128 tokens, for the teacher,
   the student and the trimmed student, one server at a time in the same run (ratios).

    python -m benchmarks.vocab_trim   # -> benchmarks/results/vocab_trim.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import time
from pathlib import Path

from benchmarks.common import RESULTS, require_data, wilson
from distill.data import SYSTEM_PROMPT, messages_for, parse_intent, read_csv, target_for
from distill.evaluate import VLLMServer, measure_throughput
from distill.vocab_trim import chat_corpus, trim_vocabulary
from gateway.devtools.processes import model_cache


def replies(base_url: str, model: str, texts: list[str], max_tokens: int, concurrency: int = 8) -> list[str]:
    """Greedy answers with the support system prompt (as the student was trained)."""
    import httpx

    async def run() -> list[str]:
        gate = asyncio.Semaphore(concurrency)
        async with httpx.AsyncClient(timeout=600) as client:
            async def one(text: str) -> str:
                async with gate:
                    r = await client.post(f"{base_url}/chat/completions", json={
                        "model": model, "messages": messages_for(text), "max_tokens": max_tokens, "temperature": 0})
                    r.raise_for_status()
                    return r.json()["choices"][0]["message"]["content"] or ""
            return await asyncio.gather(*(one(t) for t in texts))

    return asyncio.run(run())


def throughput(server: VLLMServer) -> dict:
    return {f"{s}_streams": measure_throughput(server.base_url, server.name, streams=s, requests_per_stream=2,
                                               max_tokens=128) for s in (1, 8)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--corpus-answers", type=int, default=1500)
    p.add_argument("--test-n", type=int, default=600)
    args = p.parse_args()
    from transformers import AutoTokenizer

    data = require_data("banking77")
    cache = model_cache()
    student, teacher, trimmed = cache / "student", cache / "teacher", cache / "student-vocab-trimmed"
    train = read_csv(data / "train.csv")
    test = random.Random(0).sample(read_csv(data / "test.csv"), args.test_n)
    rng = random.Random(1)
    sampled = rng.sample(train, args.corpus_answers)
    tok = AutoTokenizer.from_pretrained(str(student))
    out: dict = {"benchmark": "vocab_trim", "when": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    logs = Path("/tmp/vocab_trim_logs")
    logs.mkdir(exist_ok=True)
    with VLLMServer(student, "student", log_file=logs / "student.log") as server:
        own = replies(server.base_url, "student", [r["text"] for r in sampled], 48)
        student_test = replies(server.base_url, "student", [r["text"] for r in test], 24)
        out["throughput_student"] = throughput(server)
    corpus = chat_corpus(tok, [(r["text"], target_for(r["category"])) for r in train], SYSTEM_PROMPT)
    corpus += chat_corpus(tok, [(r["text"], a) for r, a in zip(sampled, own)], SYSTEM_PROMPT)
    t0 = time.perf_counter()
    out["trim"] = trim_vocabulary(student, trimmed, corpus)
    out["trim"]["seconds"] = round(time.perf_counter() - t0, 1)
    new_tok = AutoTokenizer.from_pretrained(str(trimmed))
    same = sum(tok.convert_ids_to_tokens(tok(t, add_special_tokens=False)["input_ids"])
               == new_tok.convert_ids_to_tokens(new_tok(t, add_special_tokens=False)["input_ids"]) for t in corpus)
    out["trim"]["corpus_texts_tokenized_identically"] = f"{same}/{len(corpus)}"
    with VLLMServer(trimmed, "trimmed", log_file=logs / "trimmed.log") as server:
        trimmed_test = replies(server.base_url, "trimmed", [r["text"] for r in test], 24)
        out["throughput_trimmed"] = throughput(server)
    with VLLMServer(teacher, "teacher", log_file=logs / "teacher.log") as server:
        out["throughput_teacher"] = throughput(server)
    labels = [r["category"] for r in test]
    for name, answers in (("student", student_test), ("trimmed", trimmed_test)):
        correct = sum(parse_intent(a) == label for a, label in zip(answers, labels))
        out[f"test_accuracy_{name}"] = {"value": round(correct / len(labels), 4), "n": len(labels),
                                        "wilson_95": wilson(correct, len(labels))}
    out["trimmed_answers_identical_to_student"] = round(
        sum(a == b for a, b in zip(student_test, trimmed_test)) / len(test), 4)
    tps = {k: out[f"throughput_{k}"] for k in ("teacher", "student", "trimmed")}
    out["speedup_vs_teacher"] = {
        name: {s: round(tps[name][s]["tokens_per_second"] / tps["teacher"][s]["tokens_per_second"], 2)
               for s in ("1_streams", "8_streams")} for name in ("student", "trimmed")}
    out["notes"] = ("corpus = Banking77 train (gold targets) + the student's own answers on 1,500 train messages; "
                    "test sample seeded from Banking77 test, used only for the figures; vLLM float32 on the 2-core "
                    "CPU, one server at a time; teacher = base + support adapter merged")
    (RESULTS / "vocab_trim.json").write_text(json.dumps(out, indent=2))
    print(json.dumps({k: out[k] for k in ("speedup_vs_teacher", "test_accuracy_student", "test_accuracy_trimmed",
                                          "trimmed_answers_identical_to_student")}, indent=1))
    print(json.dumps(out["trim"], indent=1))


if __name__ == "__main__":
    main()
