"""On-policy distillation batches (GKD, Agarwal et al. 2024; MiniLLM): the student answers the
batch's prompts itself, and the teacher then scores the student's own tokens.

Training only on the teacher's (or the dataset's) answers leaves a train/inference mismatch:
at inference the student conditions on its *own* earlier tokens, whose mistakes it never saw
corrected. On a share ``on_policy`` (GKD's lambda) of the batches, :func:`student_samples`
replaces each example's answer with one the student samples from its prompt; the trainer then
applies the soft loss (reverse KL or JSD in GKD) against the teacher's distributions on
those tokens, and no hard loss (the student's sample is no label).
"""

from __future__ import annotations

import torch

from distill.losses import IGNORE_INDEX


def prompt_lengths(labels: torch.Tensor, attention_mask: torch.Tensor) -> list[int]:
    """Per example: the tokens before its first answer token (labels are -100 on the prompt)."""
    lengths = []
    for row, att in zip(labels, attention_mask):
        answer = (row != IGNORE_INDEX).nonzero()
        lengths.append(int(answer[0]) if len(answer) else int(att.sum()))
    return lengths


@torch.no_grad()
def student_samples(model: torch.nn.Module, inputs: dict[str, torch.Tensor], *, pad_token_id: int,
                    eos_token_id: int | None, max_new_tokens: int, temperature: float) -> dict[str, torch.Tensor]:
    """The batch with each answer replaced by the student's own sample (right-padded again).

    Prompts are left-padded for generation (right padding would make the model continue from
    pad tokens); each sample is cut after its first end-of-sequence token.
    """
    ids, att = inputs["input_ids"], inputs["attention_mask"]
    lengths = prompt_lengths(inputs["labels"], att)
    prompts = [row[:n] for row, n in zip(ids, lengths)]
    width = max(len(p) for p in prompts)
    left = torch.full((len(prompts), width), pad_token_id, dtype=ids.dtype, device=ids.device)
    left_att = torch.zeros_like(left)
    for i, p in enumerate(prompts):
        left[i, width - len(p):] = p
        left_att[i, width - len(p):] = 1
    was_training = model.training
    model.eval()
    try:
        out = model.generate(input_ids=left, attention_mask=left_att, do_sample=True, temperature=temperature,
                             top_k=0, top_p=1.0, max_new_tokens=max_new_tokens, pad_token_id=pad_token_id,
                             eos_token_id=eos_token_id)
    finally:
        model.train(was_training)
    rows, answers = [], []
    for p, generated in zip(prompts, out[:, width:]):
        answer = generated.tolist()
        if eos_token_id is not None and eos_token_id in answer:
            answer = answer[:answer.index(eos_token_id) + 1]
        answer = [t for t in answer if t != pad_token_id or t == eos_token_id] or [eos_token_id or pad_token_id]
        rows.append(p.tolist() + answer)
        answers.append(len(answer))
    length = max(len(r) for r in rows)
    new_ids = torch.full((len(rows), length), pad_token_id, dtype=ids.dtype, device=ids.device)
    new_att = torch.zeros_like(new_ids)
    labels = torch.full_like(new_ids, IGNORE_INDEX)
    for i, (row, n_answer) in enumerate(zip(rows, answers)):
        new_ids[i, :len(row)] = torch.tensor(row, dtype=ids.dtype)
        new_att[i, :len(row)] = 1
        labels[i, len(row) - n_answer:len(row)] = new_ids[i, len(row) - n_answer:len(row)]
    return {"input_ids": new_ids, "attention_mask": new_att, "labels": labels}
