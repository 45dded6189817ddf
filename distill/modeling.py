"""Loading tier models and generating with them: shared by training, evaluation and the CLI."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from distill import dist
from distill.data import end_of_turn_id, left_pad, prompt_ids


def on_gpu() -> bool:
    """A CUDA GPU is visible (then bf16 and the GPU are used)."""
    return torch.cuda.is_available()


def default_device() -> torch.device:
    """``cuda:LOCAL_RANK`` on a GPU (each DDP rank its own GPU), else the CPU."""
    return torch.device("cuda", dist.local_rank()) if on_gpu() else torch.device("cpu")


def load_model(model_dir: Path, dtype: torch.dtype = torch.float32,
               device: torch.device | str | None = None) -> torch.nn.Module:
    """A causal LM from an HF model dir, on ``device`` (default: this rank's device)."""
    from transformers import AutoModelForCausalLM

    m = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=dtype)
    return m.to(device or default_device())


def load_tokenizer(model_dir: Path) -> Any:
    """The model dir's tokenizer, with a pad token (the end-of-sequence one when it has none)."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(model_dir))
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok


# ------------------------------------------------------------------------------ generation
@torch.no_grad()
def generate_ids(
    model,
    tokenizer,
    texts: Sequence[str],
    max_new_tokens: int = 48,
    batch_size: int = 64,
    progress: Callable[[int], None] | None = None,
    prompts: Sequence[list[int]] | None = None,
) -> list[list[int]]:
    """Greedy responses as token ids (end-of-turn included when produced), left padding.

    ``prompts``: ready prompt ids (chat data); by default each text with the Banking77 prompt.
    """
    model.eval()
    eot = end_of_turn_id(tokenizer)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eot
    dev = next(model.parameters()).device
    prompts = [list(p) for p in prompts] if prompts is not None else [prompt_ids(tokenizer, t) for t in texts]
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))  # less padding
    out: list[list[int] | None] = [None] * len(prompts)
    for s in range(0, len(order), batch_size):
        idx = order[s : s + batch_size]
        ids, att = left_pad([prompts[i] for i in idx], pad)
        gen = model.generate(
            input_ids=ids.to(dev),
            attention_mask=att.to(dev),
            max_new_tokens=max_new_tokens,
            do_sample=False,
            eos_token_id=eot,
            pad_token_id=pad,
        )[:, ids.shape[1]:].tolist()
        for i, g in zip(idx, gen):
            if eot in g:
                g = g[: g.index(eot) + 1]
            out[i] = g
        if progress:
            progress(len(idx))
    return [o or [] for o in out]


def decode_responses(tokenizer, ids: list[list[int]]) -> list[str]:
    return [tokenizer.decode(x, skip_special_tokens=True).strip() for x in ids]
