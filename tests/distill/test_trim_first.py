"""Trimming before training (``student.trim_before_training``): what is kept, how the examples
are renumbered, and what a recipe may combine it with (no model: milliseconds)."""

from __future__ import annotations

import pytest

from distill.api_teacher import SparseDataset
from distill.data import Example
from distill.recipe import Recipe
from distill.trim_first import renumber, used_token_ids


def _sparse() -> SparseDataset:
    ex = [Example([5, 6, 7], [8, 9], "a"), Example([5, 10], [11], "b")]
    topk = [([[8, 40], [9, 41]], [[-0.1, -2.5], [-0.2, -1.9]]), ([[11, -1]], [[-0.3, 0.0]])]
    return SparseDataset(ex, topk, k=2, pad_id=0)


def test_kept_tokens_are_the_examples_the_validation_split_and_the_teachers_candidates() -> None:
    used = used_token_ids(_sparse(), [Example([5], [99], "v")], special_ids={0, 2})
    assert used == {0, 2, 5, 6, 7, 8, 9, 10, 11, 40, 41, 99}  # -1 (no candidate) is not a token


def test_renumbering_keeps_every_target_and_candidate() -> None:
    data = _sparse()
    kept = sorted(used_token_ids(data, None, {0}))
    new_id = {old: new for new, old in enumerate(kept)}
    out = renumber(data, new_id)
    assert isinstance(out, SparseDataset) and out.pad_id == new_id[0] and out.k == 2
    for before, after in zip(data.examples, out.examples):
        assert [kept[i] for i in after.prompt + after.response] == before.prompt + before.response
    assert [[kept[i] for i in row] for row in out.topk[0][0]] == data.topk[0][0]
    assert out.topk[1][0] == [[new_id[11], -1]] and out.topk[0][1] == data.topk[0][1]  # logprobs unchanged
    plain = renumber([Example([5, 6], [7], "x")], new_id)
    assert plain == [Example([new_id[5], new_id[6]], [new_id[7]], "x")]
    assert renumber(None, new_id) is None


@pytest.mark.parametrize("student,extra,message", [
    ({"trim_before_training": True}, {}, "needs student.trim_vocab"),
    ({"trim_vocab": True, "trim_before_training": True}, {"stages": [10, 6]}, "single-stage"),
])
def test_recipes_that_cannot_trim_first_are_refused(student, extra, message) -> None:
    with pytest.raises(ValueError, match=message):
        Recipe.model_validate({"name": "x", "student": {"layers": 6, **student}, **extra})
