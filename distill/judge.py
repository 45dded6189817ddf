"""The teacher as judge, through the gateway (issue #13 item 4, optional).

Exact match (first lines, JSON fields) only fits answers with a structure; ROUGE-L undercounts a
correct answer phrased differently. For free-text workloads the teacher itself can grade the
student: for each test record it sees the request, its own (captured) answer as the reference
and the student's answer as the candidate, and says ``yes`` or ``no``. The calls go through the
gateway like any client's (OpenAI chat completions, ``x-tierwise-workload: judge``), so they are
authenticated, budgeted and booked in the ledger, and an API teacher works as well as a local one.

A verdict that is neither yes nor no counts as no (and is reported as unparsed): a judge that
cannot answer must not let a student through. Nothing here is a choice on the test split: the
judge grades, the promotion gate compares the share of yes with ``min_fraction``.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence

import httpx

JUDGE_WORKLOAD = "judge"
JUDGE_SYSTEM = ("You grade answers. Given a request, a REFERENCE answer and a CANDIDATE answer, reply with one word: "
                "yes if the candidate says the same as the reference (same meaning and facts, wording may differ), "
                "otherwise no.")
_VERDICT = re.compile(r"\b(yes|no)\b", re.IGNORECASE)


def judge_messages(prompt: Sequence[dict], candidate: str, reference: str) -> list[dict]:
    # the workload's system prompt too: it says what a good answer is (format, task)
    request = "\n".join(f"{m['role']}: {m['content']}" for m in prompt)
    return [{"role": "system", "content": JUDGE_SYSTEM},
            {"role": "user", "content": f"REQUEST:\n{request}\n\nREFERENCE:\n{reference}\n\nCANDIDATE:\n{candidate}\n\n"
                                        "Same answer? yes or no:"}]


def parse_verdict(text: str) -> bool | None:
    """True for yes, False for no, None when the judge said neither (first word that is one wins)."""
    match = _VERDICT.search(text or "")
    return None if match is None else match.group(1).lower() == "yes"


async def _judge_all(prompts: Sequence[Sequence[dict]], answers: Sequence[str], references: Sequence[str],
                     base_url: str, model: str, api_key: str | None, concurrency: int,
                     timeout_s: float) -> list[tuple[bool | None, str | None]]:
    headers = {"x-tierwise-workload": JUDGE_WORKLOAD, **({"Authorization": f"Bearer {api_key}"} if api_key else {})}
    limit = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(base_url=base_url.rstrip("/"), headers=headers, timeout=timeout_s) as client:
        async def one(prompt: Sequence[dict], answer: str, reference: str) -> tuple[bool | None, str | None]:
            async with limit:
                resp = await client.post("/chat/completions", json={
                    "model": model, "messages": judge_messages(prompt, answer, reference), "max_tokens": 4,
                    "temperature": 0})
            if resp.status_code != 200:
                raise RuntimeError(f"the judge ({model} at {base_url}) answered {resp.status_code}: {resp.text[:300]}")
            text = resp.json()["choices"][0]["message"]["content"]
            return parse_verdict(text), resp.headers.get("x-request-id")

        return await asyncio.gather(*(one(p, a, r) for p, a, r in zip(prompts, answers, references)))


def judge_answers(prompts: Sequence[Sequence[dict]], answers: Sequence[str], references: Sequence[str], *,
                  base_url: str, model: str, api_key: str | None = None, concurrency: int = 4,
                  timeout_s: float = 120.0) -> dict:
    """Per-answer verdicts and the share judged the same as the reference (the workload's quality)."""
    if not (len(prompts) == len(answers) == len(references)):
        raise ValueError("prompts, answers and references must have the same length")
    verdicts = asyncio.run(_judge_all(prompts, answers, references, base_url, model, api_key, concurrency, timeout_s))
    scores = [float(v is True) for v, _ in verdicts]
    n = len(scores)
    return {"metric": "judge", "judge": model, "n": n, "quality": sum(scores) / n if n else 0.0, "scores": scores,
            "unparsed": sum(v is None for v, _ in verdicts), "request_ids": [rid for _, rid in verdicts]}
