"""A student's cascade, fitted offline: when to keep its answer and when to ask the teacher (issue #13).

A small student that does not match the teacher on the whole workload can still take most of
it behind the gateway's cascade (``gateway/routing/cascade.py``): it answers, and its answer is
kept when a calibrated confidence model says the teacher would have said the same; otherwise
the teacher answers. This module fits that model for a freshly distilled student, from the
same data the flywheel captured, so the loop can promote "student + cascade" when the student
alone fails the gate:

* per record of the **validation** and **test** splits: the student's greedy answer and, for
  each generated token, its logprob and the top-``TOP_LOGPROBS`` alternatives, in the shape
  vLLM's OpenAI server streams them (``token``, ``logprob``, ``top_logprobs``), so the
  features (``router.confidence.logprob_features``) are the ones the gateway computes at
  serving time;
* label: the student's answer agrees with the teacher's under the workload's own comparison
  (``distill.chat_eval``: first line or JSON fields; a free-text workload has no yes/no
  agreement, so it gets no cascade);
* ``CascadeConfidence`` is fitted on validation; its threshold is the lowest whose routed
  quality (share of final answers that agree with the teacher, escalations counting as
  agreeing) reaches ``quality + margin`` on validation's out-of-fold predictions. The margin
  (default one point) is there because a threshold that meets the target exactly on
  validation misses it on new data about half the time (measured on the shipped support
  student: 97.0 % on validation, 96.25 % on test);
* **test** only measures: the share kept on the student, the kept answers' agreement, the
  routed quality (Wilson intervals), and the gate: routed quality >= ``quality`` and share >=
  ``min_share`` (a cascade that keeps almost nothing only adds latency).

Torch runs here (a process of its own); the artifact is torch-free and the gateway loads it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from distill.chat_data import answer_text, chat_prompt_ids, prompt_messages, read_chat_jsonl
from distill.chat_eval import answer_kind, score_answers
from distill.data import end_of_turn_id, left_pad
from distill.modeling import load_model, load_tokenizer
from tierwise_common.intervals import wilson

if TYPE_CHECKING:
    from router.confidence import CascadeConfidence

#: Alternatives per token, as the gateway asks vLLM for them (``cascade.STUDENT_TOP_LOGPROBS``).
TOP_LOGPROBS = 5
#: Tokens kept per answer: the cascade's longest decision window (``router.confidence.DECISION_TOKENS``,
#: a test checks they are equal; not imported here so that answering needs no scikit-learn, as on
#: a GPU machine that only trains).
WINDOW_TOKENS = 16
ARTIFACT = "cascade.skops"


@dataclass
class StudentAnswer:
    text: str
    tokens: list[dict]  # logprob entries of the first WINDOW_TOKENS generated tokens


@torch.no_grad()
def answers_with_logprobs(model, tokenizer, records: list[dict], max_new_tokens: int = 32,
                          batch_size: int = 32) -> list[StudentAnswer]:
    """Greedy answers with the logprob entries the cascade's decision reads (the model's raw
    distribution: vLLM's default ``raw_logprobs``, before temperature or sampling)."""
    model.eval()
    eot = end_of_turn_id(tokenizer)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eot
    device = next(model.parameters()).device
    prompts = [chat_prompt_ids(tokenizer, prompt_messages(r)) for r in records]
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))  # less padding
    texts = {}  # id -> decoded token text, memoised (vLLM reports each token's own text)
    out: list[StudentAnswer | None] = [None] * len(records)
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        ids, att = left_pad([prompts[i] for i in idx], pad)
        gen = model.generate(input_ids=ids.to(device), attention_mask=att.to(device), max_new_tokens=max_new_tokens,
                             do_sample=False, eos_token_id=eot, pad_token_id=pad, output_scores=True,
                             return_dict_in_generate=True)
        new = gen.sequences[:, ids.shape[1]:]
        steps = min(len(gen.scores), WINDOW_TOKENS)
        logp = torch.stack([torch.log_softmax(s.float(), -1) for s in gen.scores[:steps]], 1)  # (B, T, V)
        top_val, top_id = logp.topk(TOP_LOGPROBS, -1)
        chosen = logp.gather(-1, new[:, :steps].unsqueeze(-1)).squeeze(-1)
        for row, i in enumerate(idx):
            seq = new[row].tolist()
            end = seq.index(eot) if eot in seq else len(seq)
            tokens = []
            for t in range(min(end, steps)):
                tokens.append({"token": _text(tokenizer, seq[t], texts), "logprob": float(chosen[row, t]),
                               "top_logprobs": [{"token": _text(tokenizer, int(a), texts), "logprob": float(v)}
                                                for a, v in zip(top_id[row, t].tolist(), top_val[row, t].tolist())]})
            out[i] = StudentAnswer(tokenizer.decode(seq[:end], skip_special_tokens=True).strip(), tokens)
    return [a for a in out if a is not None]


def _text(tokenizer, token_id: int, memo: dict[int, str]) -> str:
    if token_id not in memo:
        memo[token_id] = tokenizer.decode([token_id])
    return memo[token_id]


@dataclass
class CascadeFit:
    metric: str
    quality_target: float
    min_share: float
    margin: float
    threshold: float | None
    validation: dict
    test: dict
    passes: bool
    artifact: str | None = None
    why: str = ""

    def public(self) -> dict:
        return asdict(self)


def agreement_rows(answers: list[StudentAnswer], records: list[dict], kind: str) -> tuple[np.ndarray, np.ndarray]:
    """Feature rows (``logprob_features``) and agree / disagree labels of one split's answers."""
    from router.confidence import logprob_features

    scores = score_answers([a.text for a in answers], [answer_text(r) for r in records], kind)["scores"]
    X = np.array([logprob_features(a.tokens) for a in answers]).reshape(len(answers), -1)
    return X, np.array([int(s >= 1.0) for s in scores])


def _measure(agree: np.ndarray, kept: np.ndarray) -> dict:
    n, k = len(agree), int(kept.sum())
    hits = int(agree[kept].sum())
    routed = hits + (n - k)  # an escalated request gets the teacher's own answer
    return {"n": n, "student_agreement": float(agree.mean()) if n else None,
            "share_kept": k / n if n else 0.0, "share_kept_wilson_95": wilson(k, n),
            "kept_agreement": hits / k if k else None, "kept_agreement_wilson_95": wilson(hits, k) if k else None,
            "routed_quality": routed / n if n else 0.0, "routed_quality_wilson_95": wilson(routed, n)}


def fit_from_answers(kind: str, validation: tuple[list[StudentAnswer], list[dict]],
                     test: tuple[list[StudentAnswer], list[dict]], quality: float = 0.97, min_share: float = 0.2,
                     margin: float = 0.01) -> tuple[CascadeFit, CascadeConfidence | None]:
    """The fit and the gate from the student's answers (torch-free: answers may come from a GPU
    machine). Returns the report and the fitted model (None when none could be fitted)."""
    from router.confidence import CascadeConfidence

    Xv, yv = agreement_rows(*validation, kind)
    Xt, yt = agreement_rows(*test, kind)
    try:
        confidence = CascadeConfidence().fit(Xv, yv)
    except ValueError as e:  # e.g. the student agrees everywhere, or nowhere, on validation
        return CascadeFit(kind, quality, min_share, margin, None, _measure(yv, np.zeros(len(yv), bool)),
                          _measure(yt, np.zeros(len(yt), bool)), False, why=f"no confidence model: {e}"), None
    threshold = confidence.threshold_for(quality=min(1.0, quality + margin))
    measured = confidence.operating_point(threshold) | {"n": len(yv), "student_agreement": float(yv.mean())}
    on_test = _measure(yt, confidence.predict_proba(Xt)[:, 1] >= threshold)
    passes = on_test["routed_quality"] >= quality and on_test["share_kept"] >= min_share
    why = "" if passes else ("routed quality below the target on test" if on_test["routed_quality"] < quality
                             else f"keeps {on_test['share_kept']:.1%} of test traffic (< {min_share:.0%})")
    return CascadeFit(kind, quality, min_share, margin, threshold, measured, on_test, passes, why=why), confidence


def fit_cascade(model_dir: Path, data_dir: Path, quality: float = 0.97, min_share: float = 0.2,
                max_records: int | None = None, margin: float = 0.01, force: bool = False) -> CascadeFit:
    """Fit on validation, measure on test, and write ``model_dir/cascade.skops`` when the gate passes
    (or, with ``force``, whenever a model could be fitted: an operator's decision, recorded in its card)."""
    splits = {s: read_chat_jsonl(data_dir / f"{s}.jsonl")[:max_records] for s in ("validation", "test")}
    kind = answer_kind([answer_text(r) for r in splits["validation"]])
    if kind == "free_text":
        return CascadeFit(kind, quality, min_share, margin, None, {}, {}, False,
                          why="free-text answers have no yes/no agreement with the teacher to calibrate on")
    tokenizer = load_tokenizer(model_dir)
    model = load_model(model_dir)
    answered = {s: (answers_with_logprobs(model, tokenizer, records), records) for s, records in splits.items()}
    fit, confidence = fit_from_answers(kind, answered["validation"], answered["test"], quality, min_share, margin)
    if (fit.passes or force) and confidence is not None:
        from router.confidence import save_confidence

        card = {"fitted_on": f"{data_dir}/validation.jsonl", "threshold_chosen_on": "validation (out-of-fold)",
                "gated_on": f"{data_dir}/test.jsonl", "written_despite_the_gate": not fit.passes,
                **{k: v for k, v in fit.public().items() if k != "artifact"}}
        fit.artifact = str(save_confidence(confidence, model_dir / ARTIFACT, fit.threshold, card))
    return fit


def write_report(fit: CascadeFit, path: Path) -> None:
    path.write_text(json.dumps(fit.public(), indent=2))
