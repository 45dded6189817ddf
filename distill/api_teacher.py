"""Sparse KD from a teacher behind an OpenAI-compatible API (vLLM, or hosted via litellm).

An API teacher gives no logits, only its generated tokens and the top-k logprobs at each
of them (``logprobs=True, top_logprobs=k``). That is enough for sequence-level KD (train
on its generations) plus sparse soft targets (:func:`distill.losses.sparse_topk_kl`).

Token alignment: a vLLM teacher is asked for ``return_tokens_as_token_ids`` so tokens
come back as ``token_id:<n>``, exact ids in the shared vocabulary. A hosted model (other
tokenizer) returns strings: a candidate is kept only when the string is a single token of
the student's vocabulary, otherwise dropped (sequence-level KD still applies).
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

from distill.data import RightPadCollator, build_examples, end_of_turn_id, messages_for


def _token_to_id(tokenizer, tok: str) -> int | None:
    if tok.startswith("token_id:"):
        try:
            return int(tok.split(":", 1)[1])
        except ValueError:
            return None
    ids = tokenizer.encode(tok, add_special_tokens=False)
    return ids[0] if len(ids) == 1 else None


def parse_choice(tokenizer, choice: dict, top_k: int) -> tuple[list[int], list[list[int]], list[list[float]]]:
    """Response ids and per-position top-k (ids, logprobs) from one chat completion choice."""
    content = ((choice.get("logprobs") or {}).get("content")) or []
    ids, top_ids, top_lps = [], [], []
    for pos in content:
        tid = _token_to_id(tokenizer, pos["token"])
        if tid is None:
            # untokenisable in our vocabulary: fall back to re-tokenising the text below
            return [], [], []
        ids.append(tid)
        cand = [(_token_to_id(tokenizer, c["token"]), c["logprob"]) for c in pos.get("top_logprobs", [])]
        cand = [(i, lp) for i, lp in cand if i is not None][:top_k]
        cand += [(-1, 0.0)] * (top_k - len(cand))
        top_ids.append([i for i, _ in cand])
        top_lps.append([lp for _, lp in cand])
    return ids, top_ids, top_lps


async def _query_all(spec, texts: list[str]) -> list[dict]:
    """Chat completions for every text, ``spec.concurrency`` at a time (litellm if installed
    and no base_url is given; else the ``openai`` client against ``base_url``)."""
    sem = asyncio.Semaphore(spec.concurrency)
    key = os.environ.get(spec.api_key_env, "EMPTY") if spec.api_key_env else "EMPTY"
    kwargs = dict(model=spec.model, temperature=0.0, max_tokens=spec.max_tokens,
                  logprobs=True, top_logprobs=spec.top_k)
    if spec.base_url:
        from openai import AsyncOpenAI

        client = AsyncOpenAI(base_url=spec.base_url, api_key=key)

        async def call(msgs):
            r = await client.chat.completions.create(
                messages=msgs, extra_body={"return_tokens_as_token_ids": True}, **kwargs)
            return r.model_dump()
    else:
        import litellm

        async def call(msgs):
            r = await litellm.acompletion(messages=msgs, api_key=None if key == "EMPTY" else key, **kwargs)
            return r.model_dump()

    async def one(t):
        async with sem:
            return await call(messages_for(t))

    return await asyncio.gather(*(one(t) for t in texts))


class SparseDataset:
    """Examples with per-token top-k teacher targets; ``collator`` pads them."""

    def __init__(self, examples, topk: list[tuple[list[list[int]], list[list[float]]]], k: int, pad_id: int):
        self.examples, self.topk, self.k, self.pad_id = examples, topk, k, pad_id

    def __len__(self):
        return len(self.examples)

    def __getitem__(self, i):
        e = self.examples[i]
        ids, lps = self.topk[i]
        n_p, n_r = len(e.prompt), len(e.response)
        ids = (ids + [[-1] * self.k] * n_r)[:n_r]
        lps = (lps + [[0.0] * self.k] * n_r)[:n_r]
        return {"input_ids": e.prompt + e.response, "labels": [-100] * n_p + e.response,
                "topk_ids": [[-1] * self.k] * n_p + ids, "topk_logprobs": [[0.0] * self.k] * n_p + lps}

    def collator(self, batch):
        import torch  # lazily, like distill.data's collators: the API client side needs none

        out = RightPadCollator(self.pad_id)(batch)
        n = out["input_ids"].shape[1]
        ti = torch.full((len(batch), n, self.k), -1, dtype=torch.long)
        tl = torch.zeros((len(batch), n, self.k))
        for j, b in enumerate(batch):
            L = len(b["topk_ids"])
            ti[j, :L] = torch.tensor(b["topk_ids"])
            tl[j, :L] = torch.tensor(b["topk_logprobs"])
        out["topk_ids"], out["topk_logprobs"] = ti, tl
        return out


def api_examples(recipe, tokenizer, texts: list[str], cache_file: Path | None = None) -> SparseDataset:
    """Query the API teacher (cached in a JSONL file) and build a sparse-KD dataset.

    Top-k position ``j`` holds the teacher's candidates for response token ``j``; the
    trainer reads them at the positions whose next token is that response token.
    """
    spec = recipe.api_teacher
    cached: dict[str, dict] = {}
    if cache_file and Path(cache_file).is_file():
        for line in Path(cache_file).read_text().splitlines():
            d = json.loads(line)
            cached[d["text"]] = d["choice"]
    todo = [t for t in texts if t not in cached]
    if todo:
        results = asyncio.run(_query_all(spec, todo))
        for t, r in zip(todo, results):
            cached[t] = r["choices"][0]
        if cache_file:
            with open(cache_file, "w") as f:
                for t, c in cached.items():
                    f.write(json.dumps({"text": t, "choice": c}) + "\n")
    responses, topk = [], []
    eot = end_of_turn_id(tokenizer)
    for t in texts:
        ch = cached[t]
        ids, tids, tlps = parse_choice(tokenizer, ch, spec.top_k)
        if not ids:  # strings we cannot map: sequence-level KD on the text only
            ids = tokenizer((ch.get("message") or {}).get("content") or "", add_special_tokens=False)["input_ids"]
            tids, tlps = [], []
        if not ids or ids[-1] != eot:
            ids = ids + [eot]
        responses.append(ids)
        topk.append((tids, tlps))
    # Example.response[j] is predicted at position (len(prompt) + j - 1): the collated
    # top-k tensors are shifted by one in the trainer exactly like the labels.
    ex = build_examples(tokenizer, texts, responses, recipe.train.max_len)
    return SparseDataset(ex, topk, spec.top_k, tokenizer.pad_token_id or eot)
