"""Evaluation of tiers: intent accuracy, agreement with the teacher, token KL, cost.

Quality metrics work on generated replies (any backend: transformers here, or replies
fetched from vLLM); cost metrics (throughput, time to first token) come from a real vLLM
server started as a subprocess, because that is how tiers are served.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Sequence

from distill.data import ExampleDataset, RightPadCollator, messages_for, parse_intent
from tierwise_common.text_metrics import rouge_l_f1


# ------------------------------------------------------------------------------ quality
def intent_correct(replies: Sequence[str], labels: Sequence[str]) -> list[bool]:
    """Exact label after ``Intent:`` in each reply."""
    return [parse_intent(r) == l for r, l in zip(replies, labels)]


def accuracy(flags: Sequence[bool]) -> float:
    return sum(flags) / max(1, len(flags))


def agreement(replies: Sequence[str], teacher_replies: Sequence[str]) -> dict:
    """Same intent as the teacher (exact label) and mean ROUGE-L F1 to the teacher's reply."""
    same = [parse_intent(a) is not None and parse_intent(a) == parse_intent(b)
            for a, b in zip(replies, teacher_replies)]
    rl = [rouge_l_f1(a, b) for a, b in zip(replies, teacher_replies)]
    return {"label_agreement": accuracy(same), "rouge_l": sum(rl) / max(1, len(rl))}


def token_kl(student, teacher, examples, batch_size: int = 32, temperature: float = 1.0) -> float:
    """Mean per-token ``KL(teacher || student)`` on the response tokens of held-out examples."""
    # torch (and distill.losses, which imports it) only here: the metric, reply and vLLM
    # helpers of this module need none, so importing it stays cheap
    import torch

    from distill.losses import forward_kl

    ds = ExampleDataset(list(examples))
    col = RightPadCollator(0)
    dev = next(student.parameters()).device
    tot, n = 0.0, 0
    student.eval()
    teacher.eval()
    with torch.no_grad():
        for s in range(0, len(ds), batch_size):
            b = col([ds[i] for i in range(s, min(len(ds), s + batch_size))])
            b = {k: v.to(dev) for k, v in b.items()}
            mask = b["labels"][:, 1:] != -100
            ls = student(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits[:, :-1][mask]
            lt = teacher(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits[:, :-1][mask]
            k = int(mask.sum())
            tot += float(forward_kl(ls, lt, temperature)) * k
            n += k
    return tot / max(1, n)


# --------------------------------------------------------------------------------- vLLM
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class VLLMServer:
    """A vLLM OpenAI-compatible server for one model dir, as a subprocess (context manager).

    CPU settings verified here: float32, eager mode, 1 GiB KV cache, 1024 max length.
    """

    def __init__(self, model_dir: Path, name: str = "tier", port: int | None = None,
                 dtype: str = "float32", kv_gib: int = 1, log_file: Path | None = None,
                 startup_timeout: float = 300, extra_args: Sequence[str] = ()):
        self.model_dir, self.name, self.port = Path(model_dir), name, port or free_port()
        self.dtype, self.kv_gib, self.timeout = dtype, kv_gib, startup_timeout
        self.log_file = log_file
        self.extra_args = list(extra_args)
        self.proc: subprocess.Popen | None = None
        self.startup_seconds: float | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def __enter__(self) -> "VLLMServer":
        import httpx

        env = dict(os.environ, VLLM_CPU_KVCACHE_SPACE=str(self.kv_gib))
        cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(self.model_dir),
               "--served-model-name", self.name, "--port", str(self.port), "--host", "127.0.0.1",
               "--dtype", self.dtype, "--max-model-len", "1024", "--enforce-eager", *self.extra_args]
        log = open(self.log_file, "w") if self.log_file else subprocess.DEVNULL
        self.proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < self.timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"vLLM exited with {self.proc.returncode} (log: {self.log_file})")
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/health", timeout=2).status_code == 200:
                    self.startup_seconds = time.perf_counter() - t0
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(1)
        self.__exit__(None, None, None)
        raise TimeoutError(f"vLLM not healthy after {self.timeout} s")

    def __exit__(self, *exc) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)  # our own process group only
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


def chat_replies(base_url: str, model: str, texts: Sequence[str], max_tokens: int = 48,
                 concurrency: int = 8) -> list[str]:
    """Greedy chat replies for each text from an OpenAI-compatible server."""
    import asyncio

    import httpx

    async def run():
        sem = asyncio.Semaphore(concurrency)
        async with httpx.AsyncClient(timeout=600) as c:
            async def one(t):
                async with sem:
                    r = await c.post(f"{base_url}/chat/completions", json={
                        "model": model, "messages": messages_for(t), "max_tokens": max_tokens,
                        "temperature": 0.0})
                    r.raise_for_status()
                    return r.json()["choices"][0]["message"]["content"] or ""
            return await asyncio.gather(*(one(t) for t in texts))

    return asyncio.run(run())


def measure_throughput(base_url: str, model: str, streams: int = 1, requests_per_stream: int = 2,
                       max_tokens: int = 128, prompt: str = "Write a short story about a bank card.") -> dict:
    """Decode throughput (generated tokens / wall s) and time to first token, via streaming.

    Every request generates exactly ``max_tokens`` (``ignore_eos``) so tiers are compared on
    the same work.
    """
    import asyncio

    import httpx

    async def one(c):
        t0 = time.perf_counter()
        ttft, n = None, 0
        async with c.stream("POST", f"{base_url}/chat/completions", json={
            "model": model, "messages": [{"role": "user", "content": prompt}],
            "max_tokens": max_tokens, "temperature": 0.0, "ignore_eos": True, "stream": True,
            "stream_options": {"include_usage": True}}) as r:
            async for line in r.aiter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                d = json.loads(line[6:])
                if d.get("choices") and d["choices"][0].get("delta", {}).get("content") and ttft is None:
                    ttft = time.perf_counter() - t0
                if d.get("usage"):
                    n = d["usage"]["completion_tokens"]
        return ttft, n, time.perf_counter() - t0

    async def run():
        async with httpx.AsyncClient(timeout=600) as c:
            await one(c)  # warm-up
            t0 = time.perf_counter()
            res = []
            for _ in range(requests_per_stream):
                res += await asyncio.gather(*(one(c) for _ in range(streams)))
            return res, time.perf_counter() - t0

    res, wall = asyncio.run(run())
    toks = sum(n for _, n, _ in res)
    ttfts = [t for t, _, _ in res if t is not None]
    return {"streams": streams, "requests": len(res), "tokens": toks, "wall_seconds": round(wall, 2),
            "tokens_per_second": round(toks / wall, 2),
            "ttft_ms_median": round(1000 * statistics.median(ttfts), 1) if ttfts else None}
