"""Trimming the vocabulary *before* training (``student.trim_before_training``).

``student.trim_vocab`` alone trims a trained student (:func:`distill.vocab_trim.trim_trained_student`):
the student ships faster, but every training step still pays for the 49k-token embedding and
output head, which on a CPU are most of a layer-dropped student's step. Trimming the freshly
initialised student instead makes every step cheaper, which is what makes a flywheel round on
a CPU affordable.

What is kept: every token of the training and validation examples as tokenized for training
(prompts through the chat template, targets), the special tokens the trainer uses (padding,
end of turn), and the teacher's top-k candidates when the data carries them, so sparse targets
lose nothing. The byte alphabet stays (:func:`distill.vocab_trim.kept_token_ids`), so any other
text still tokenizes. The examples are renumbered into the trimmed vocabulary; a dense teacher
keeps its full vocabulary and is read through :class:`TeacherVocab` (its inputs mapped back, its
logits restricted to the kept tokens, which renormalizes its distribution over them).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from distill.api_teacher import SparseDataset
from distill.data import Example
from distill.vocab_trim import example_token_ids, trim_vocabulary


@dataclass(frozen=True)
class TeacherVocab:
    """The trimmed student's tokens in the teacher's vocabulary: ``kept_ids[new_id] = old_id``."""

    kept_ids: torch.Tensor

    def to_teacher(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Student token ids -> the teacher's ids for the same tokens."""
        return self.kept_ids.to(input_ids.device)[input_ids]

    def restrict(self, teacher_logits: torch.Tensor) -> torch.Tensor:
        """``(..., V_teacher)`` -> ``(..., V_student)``: the teacher's logits of the kept tokens."""
        return teacher_logits.index_select(-1, self.kept_ids.to(teacher_logits.device))


def _examples(data) -> list[Example]:
    return list(data.examples) if isinstance(data, SparseDataset) else list(data or [])


def used_token_ids(examples, eval_examples, special_ids: set[int]) -> set[int]:
    """Every token the training run reads or predicts (see the module docstring)."""
    used = set(special_ids) | example_token_ids(_examples(examples)) | example_token_ids(_examples(eval_examples))
    for data in (examples, eval_examples):
        if isinstance(data, SparseDataset):
            used |= {i for ids, _ in data.topk for row in ids for i in row if i >= 0}
    return used


def renumber(data, new_id: dict[int, int]):
    """The same examples (and top-k candidates) in the trimmed vocabulary."""
    if data is None:
        return None
    ex = [Example([new_id[t] for t in e.prompt], [new_id[t] for t in e.response], e.text) for e in _examples(data)]
    if not isinstance(data, SparseDataset):
        return ex
    topk = [([[new_id[i] if i >= 0 else -1 for i in row] for row in ids], lps) for ids, lps in data.topk]
    return SparseDataset(ex, topk, data.k, new_id[data.pad_id])


def trim_before_training(init_dir: Path, out_dir: Path, examples, eval_examples, tokenizer):
    """Write ``out_dir`` (the trimmed init) and return ``(summary, examples, eval_examples, vocab)``.

    ``tokenizer``: the teacher's (what the examples were tokenized with); its padding and end
    of turn tokens are kept.
    """
    from distill.data import end_of_turn_id

    special = {t for t in (tokenizer.pad_token_id, tokenizer.eos_token_id, tokenizer.bos_token_id,
                           end_of_turn_id(tokenizer)) if isinstance(t, int) and t >= 0}
    written = Path(out_dir) / "vocab_trim.json"
    if written.is_file():  # another rank (DDP) or an earlier, resumed run trimmed it from the same data
        summary = json.loads(written.read_text())
    else:
        trim_vocabulary(init_dir, out_dir, (), used_token_ids(examples, eval_examples, special))
        summary = json.loads(written.read_text())
    kept = summary.pop("kept_ids")
    new_id = {old: new for new, old in enumerate(kept)}
    summary["when"] = "before training"
    return (summary, renumber(examples, new_id), renumber(eval_examples, new_id),
            TeacherVocab(torch.tensor(kept, dtype=torch.long)))
