"""Sparse KD from an API teacher: parsing top-k logprobs and aligning them with labels."""

from __future__ import annotations

import math

import torch

from distill.api_teacher import SparseDataset, parse_choice
from distill.data import Example


class _Tok:
    """Enough of a tokenizer for parse_choice: single-character tokens."""

    vocab = {"a": 5, "b": 6, "c": 7}

    def encode(self, s, add_special_tokens=False):
        return [self.vocab[ch] for ch in s if ch in self.vocab] if s in self.vocab else [1, 2]


def test_parse_vllm_token_ids():
    choice = {"logprobs": {"content": [
        {"token": "token_id:5", "logprob": -0.1,
         "top_logprobs": [{"token": "token_id:5", "logprob": -0.1}, {"token": "token_id:9", "logprob": -2.3}]},
        {"token": "token_id:2", "logprob": -0.01, "top_logprobs": [{"token": "token_id:2", "logprob": -0.01}]},
    ]}}
    ids, top_ids, top_lps = parse_choice(_Tok(), choice, top_k=2)
    assert ids == [5, 2]
    assert top_ids == [[5, 9], [2, -1]]  # padded with -1
    assert top_lps[0] == [-0.1, -2.3]


def test_parse_hosted_strings_drops_unmappable_candidates():
    choice = {"logprobs": {"content": [
        {"token": "a", "logprob": -0.2, "top_logprobs": [{"token": "a", "logprob": -0.2}, {"token": "xyz", "logprob": -1.0}]},
    ]}}
    ids, top_ids, _ = parse_choice(_Tok(), choice, top_k=2)
    assert ids == [5] and top_ids == [[5, -1]]


def test_sparse_targets_line_up_with_labels():
    ex = [Example(prompt=[1, 1, 1], response=[5, 2])]
    ds = SparseDataset(ex, [([[5, 9], [2, -1]], [[math.log(0.9), math.log(0.1)], [0.0, 0.0]])], k=2, pad_id=0)
    b = ds.collator([ds[0]])
    labels, tids = b["labels"][:, 1:], b["topk_ids"][:, 1:]
    mask = labels != -100
    # the position predicting response token j carries the teacher's candidates for token j
    assert labels[mask].tolist() == [5, 2]
    assert tids[mask].tolist() == [[5, 9], [2, -1]]
    assert torch.allclose(b["topk_logprobs"][:, 1:][mask][0], torch.tensor([math.log(0.9), math.log(0.1)]))
