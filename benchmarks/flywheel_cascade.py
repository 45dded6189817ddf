"""What a cascade would keep of a flywheel student (issue #13): its own first-line confidence
against its agreement with the teacher, on the captured validation and test splits.

The flywheel's offline gate asks a student to match the teacher's first line on >= 97 % of the
test split. A student that does not can still take most of the traffic behind a cascade (the
gateway's ``router.cascade``: keep the student's answer when it is confident, else ask the
teacher). Per record: the student's greedy answer, the confidence of its first line (the lowest
probability among the first line's tokens) and whether that line equals the teacher's. The
threshold is chosen on **validation** (the lowest confidence whose kept records agree with the
teacher on >= ``--target``); **test** reports the share kept, the kept records' agreement and the
routed agreement (escalated records are the teacher's own answer), with Wilson 95 % intervals.

    python -m benchmarks.flywheel_cascade --data DATASET_DIR --model NAME=MODEL_DIR [...] --out FILE

Torch runs here (the GPU stage or this CPU), never in the gateway.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from benchmarks.common import wilson
from distill.chat_data import read_chat_jsonl
from distill.chat_eval import first_line
from distill.modeling import default_device, load_model, load_tokenizer


class Student:
    """A student model dir loaded once for every split: model, left-padding tokenizer, and the
    ids of its tokens that hold a line break (where a first line ends)."""

    def __init__(self, model_dir: Path) -> None:
        self.tok = load_tokenizer(model_dir)
        self.tok.padding_side = "left"
        self.device = default_device()
        self.model = load_model(model_dir).to(self.device).eval()
        self.newline = {i for i in range(len(self.tok)) if "\n" in self.tok.decode([i])}


def answers_with_confidence(student: Student, records: list[dict], batch: int = 64,
                            max_new_tokens: int = 24) -> list[tuple[str, float]]:
    """(greedy answer, lowest token probability of its first line) per record."""
    tok, device, model, newline = student.tok, student.device, student.model, student.newline
    out: list[tuple[str, float]] = []
    for start in range(0, len(records), batch):
        chunk = records[start:start + batch]
        prompts = [tok.apply_chat_template(r["messages"][:-1], add_generation_prompt=True, tokenize=False)
                   for r in chunk]
        enc = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(device)
        with torch.no_grad():
            gen = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, output_scores=True,
                                 return_dict_in_generate=True, pad_token_id=tok.pad_token_id)
        new = gen.sequences[:, enc["input_ids"].shape[1]:]
        probs = torch.stack([torch.softmax(s.float(), -1) for s in gen.scores], 1)  # (B, T, V)
        chosen = probs.gather(-1, new.unsqueeze(-1)).squeeze(-1)
        for i in range(len(chunk)):
            ids = new[i].tolist()
            end = next((t for t, tid in enumerate(ids) if tid in newline or tid == tok.eos_token_id), len(ids))
            conf = float(chosen[i, :max(end, 1)].min())
            out.append((tok.decode(ids, skip_special_tokens=True), conf))
    return out


def choose_threshold(conf: list[float], agree: list[bool], target: float) -> float:
    """The lowest confidence whose kept records (conf >= it) agree with the teacher on >= target."""
    best = float("inf")
    order = sorted(range(len(conf)), key=lambda i: -conf[i])
    hits = 0
    for n, i in enumerate(order, 1):
        hits += agree[i]
        if hits / n >= target:
            best = conf[i]
    return best


def evaluate(model_dir: Path, data: Path, target: float) -> dict:
    splits = {s: read_chat_jsonl(data / f"{s}.jsonl") for s in ("validation", "test")}
    res: dict = {"model": str(model_dir)}
    seen = {}
    student = Student(model_dir)
    for split, records in splits.items():
        t0 = time.perf_counter()
        pairs = answers_with_confidence(student, records)
        agree = [first_line(a) == first_line(r["messages"][-1]["content"]) for (a, _), r in zip(pairs, records)]
        seen[split] = ([c for _, c in pairs], agree)
        res[f"{split}_agreement"] = {"value": sum(agree) / len(agree), "n": len(agree),
                                     "wilson_95": wilson(sum(agree), len(agree))}
        res[f"{split}_seconds"] = round(time.perf_counter() - t0, 1)
    threshold = choose_threshold(*seen["validation"], target)
    conf, agree = seen["test"]
    kept = [i for i, c in enumerate(conf) if c >= threshold]
    n, k = len(conf), len(kept)
    kept_agree = sum(agree[i] for i in kept)
    res.update({"threshold_chosen_on": "validation", "target_kept_agreement": target,
                "threshold": threshold if threshold != float("inf") else None,
                "test_share_kept": {"value": k / n, "n": n, "wilson_95": wilson(k, n)},
                "test_kept_agreement": {"value": kept_agree / k if k else None, "n": k,
                                        "wilson_95": wilson(kept_agree, k) if k else None},
                "test_routed_agreement": {"value": (kept_agree + n - k) / n, "n": n,
                                          "wilson_95": wilson(kept_agree + n - k, n)}})
    return res


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, required=True, help="the flywheel dataset dir (train/validation/test.jsonl)")
    p.add_argument("--model", action="append", required=True, help="NAME=MODEL_DIR (repeatable)")
    p.add_argument("--target", type=float, default=0.97)
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    doc = {"benchmark": "flywheel_cascade", "issue": 13, "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
           "device": str(default_device()), "students": {}}
    for spec in args.model:
        name, _, path = spec.partition("=")
        doc["students"][name] = evaluate(Path(path), args.data, args.target)
        print(name, json.dumps({k: v for k, v in doc["students"][name].items() if k.startswith("test")}), flush=True)
    args.out.write_text(json.dumps(doc, indent=2))


if __name__ == "__main__":
    main()
