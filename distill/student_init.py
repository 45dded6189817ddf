"""Student initialisation: from the teacher by dropping layers, or from scratch.

Layer dropping (DistilBERT style) gives the student a head start: the embeddings, the
final norm and the (tied) output head are the teacher's, so the student already speaks
the teacher's token space, and each kept decoder layer is a teacher layer copied exactly.
Which layers: evenly spaced over the teacher's depth, the first and the last always kept
(index ``round(i * (L - 1) / (n - 1))`` for ``i = 0..n-1``; for 6 of 30 layers that is
0, 6, 12, 17, 23, 29). The first layer turns token embeddings into the residual stream
the others expect and the last one shapes it for the output head, so both matter most.

A narrower student (``intermediate_size``): each kept layer's MLP keeps only its most
important hidden units (structured pruning). A unit ``j`` of SwiGLU's
``down(silu(gate x) * up x)`` contributes through row ``j`` of gate and up and column ``j``
of down, so its importance is the product of those three norms (data-free, the same rule in
every layer). The MLP is ~75 % of a SmolLM2 layer's multiply-adds, so 1536 -> 1024 units cuts
a layer by about a quarter; distillation then recovers what the cut units carried.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Sequence

from distill.atomic import atomic_dir
from distill.packaged import copy_tokenizer_files, write_marker

_LAYER_RE = re.compile(r"^model\.layers\.(\d+)\.(.+)$")


def evenly_spaced_layers(num_teacher_layers: int, num_layers: int) -> list[int]:
    """Indices of teacher layers to keep: evenly spaced, first and last always kept."""
    if num_layers < 1:
        raise ValueError(f"a student needs at least 1 layer, got {num_layers}")
    if num_layers > num_teacher_layers:
        raise ValueError(
            f"the student cannot have more layers ({num_layers}) than the teacher "
            f"({num_teacher_layers})"
        )
    if num_layers == 1:
        return [num_teacher_layers - 1]
    step = (num_teacher_layers - 1) / (num_layers - 1)
    return [int(round(i * step)) for i in range(num_layers)]


def read_config(model_dir: Path) -> dict:
    return json.loads((Path(model_dir) / "config.json").read_text())


def load_state(model_dir: Path) -> dict:
    """All tensors of a model dir (single or sharded safetensors)."""
    from safetensors.torch import load_file

    files = sorted(Path(model_dir).glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"no *.safetensors in {model_dir}")
    state: dict = {}
    for f in files:
        state.update(load_file(str(f)))
    return state


def drop_layers_state(state: dict, keep: Sequence[int]) -> dict:
    """Rename ``model.layers.<old>.*`` to ``model.layers.<new>.*`` for kept layers only."""
    new_index = {old: new for new, old in enumerate(keep)}
    out = {}
    for k, v in state.items():
        m = _LAYER_RE.match(k)
        if m is None:
            out[k] = v  # embeddings, final norm, (untied) head
        elif int(m.group(1)) in new_index:
            out[f"model.layers.{new_index[int(m.group(1))]}.{m.group(2)}"] = v
    return out


def mlp_unit_importance(gate, up, down):
    """Per hidden unit of a SwiGLU MLP: ||gate row|| * ||up row|| * ||down column||."""
    return gate.float().norm(dim=1) * up.float().norm(dim=1) * down.float().norm(dim=0)


def narrow_mlps(state: dict, num_layers: int, intermediate_size: int) -> tuple[dict, list[list[int]]]:
    """Keep the ``intermediate_size`` most important MLP units of every layer (order kept).

    Returns the new state and, per layer, the kept unit indices (recorded in the init info).
    """
    import torch

    out = dict(state)
    kept_units: list[list[int]] = []
    for i in range(num_layers):
        pre = f"model.layers.{i}.mlp."
        gate, up, down = (state[pre + n + ".weight"] for n in ("gate_proj", "up_proj", "down_proj"))
        if intermediate_size > gate.shape[0]:
            raise ValueError(f"intermediate_size {intermediate_size} > the teacher's {gate.shape[0]}")
        score = mlp_unit_importance(gate, up, down)
        keep = torch.topk(score, intermediate_size).indices.sort().values
        out[pre + "gate_proj.weight"] = gate.index_select(0, keep).contiguous()
        out[pre + "up_proj.weight"] = up.index_select(0, keep).contiguous()
        out[pre + "down_proj.weight"] = down.index_select(1, keep).contiguous()
        kept_units.append(keep.tolist())
    return out, kept_units


def layer_drop(
    teacher_dir: Path,
    out_dir: Path,
    num_layers: int,
    layers: Sequence[int] | None = None,
    intermediate_size: int | None = None,
) -> Path:
    """Write a student HF dir keeping ``num_layers`` evenly spaced teacher decoder layers.

    Embeddings, final norm and head are kept, weights copied exactly (same dtype), the
    config's ``num_hidden_layers`` updated, tokenizer and generation config copied, and a
    ``student_init.json`` records the kept teacher layers. Written atomically; returns
    ``out_dir``. ``layers`` overrides the evenly spaced choice. ``intermediate_size`` (below
    the teacher's) also narrows every kept layer's MLP to its most important units.
    """
    from safetensors.torch import save_file

    teacher_dir, out_dir = Path(teacher_dir), Path(out_dir)
    cfg = read_config(teacher_dir)
    total = int(cfg["num_hidden_layers"])
    keep = list(layers) if layers is not None else evenly_spaced_layers(total, num_layers)
    if layers is not None:
        if len(keep) != num_layers:
            raise ValueError(f"{len(keep)} layers listed but num_layers={num_layers}")
        if sorted(set(keep)) != keep or keep[0] < 0 or keep[-1] >= total:
            raise ValueError(f"layers must be increasing indices in [0, {total}), got {keep}")
    state = drop_layers_state(load_state(teacher_dir), keep)
    cfg = dict(cfg)
    cfg["num_hidden_layers"] = len(keep)
    narrowed = None
    if intermediate_size is not None and intermediate_size != int(cfg["intermediate_size"]):
        state, narrowed = narrow_mlps(state, len(keep), intermediate_size)
        cfg["intermediate_size"] = intermediate_size
    if isinstance(cfg.get("layer_types"), list):
        cfg["layer_types"] = [cfg["layer_types"][i] for i in keep]
    with atomic_dir(out_dir) as tmp:
        tensors = {
            k: v.contiguous()
            for k, v in state.items()
            if not (cfg.get("tie_word_embeddings") and k == "lm_head.weight")
        }
        save_file(tensors, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        (tmp / "config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True))
        copy_tokenizer_files(teacher_dir, tmp)
        info = {"init": "layer_drop", "teacher": str(teacher_dir), "teacher_layers": total,
                "kept_layers": keep}
        if narrowed is not None:
            info.update(intermediate_size=intermediate_size, kept_mlp_units=narrowed)
        (tmp / "student_init.json").write_text(json.dumps(info, indent=2))
        write_marker(tmp, kind="layer-drop", **info)
    return out_dir


def from_scratch(
    teacher_dir: Path,
    out_dir: Path,
    num_layers: int,
    hidden_size: int | None = None,
    intermediate_size: int | None = None,
    seed: int = 0,
) -> Path:
    """A randomly initialised student with the teacher's tokenizer and architecture family.

    For comparison with layer dropping: same vocabulary (so KD over token distributions
    works), chosen depth and optionally width.
    """
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    teacher_dir, out_dir = Path(teacher_dir), Path(out_dir)
    cfg = AutoConfig.from_pretrained(str(teacher_dir))
    cfg.num_hidden_layers = num_layers
    if hidden_size:
        heads = cfg.num_attention_heads
        if hidden_size % heads:
            raise ValueError(f"hidden_size {hidden_size} not divisible by {heads} heads")
        cfg.hidden_size = hidden_size
        cfg.head_dim = hidden_size // heads
    if intermediate_size:
        cfg.intermediate_size = intermediate_size
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
    with atomic_dir(out_dir) as tmp:
        model.save_pretrained(str(tmp))
        copy_tokenizer_files(teacher_dir, tmp)
        info = {"init": "scratch", "teacher": str(teacher_dir), "num_layers": num_layers,
                "hidden_size": cfg.hidden_size, "seed": seed}
        (tmp / "student_init.json").write_text(json.dumps(info, indent=2))
        write_marker(tmp, kind="scratch", **info)
    return out_dir
