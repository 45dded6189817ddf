"""Teachers as model dirs: the recipe's teacher and a multi-teacher recipe's extra teachers.

A teacher is the packaged model (``default``, dequantized once into the cache) or an HF model
dir, optionally with a LoRA adapter merged in (built once per adapter digest, so every run and
every rank uses the same merged weights).
"""

from __future__ import annotations

from pathlib import Path

import torch

from distill.assemble import build_merged_teacher, sha256_file
from distill.modeling import load_model
from distill.packaged import is_complete, materialize_teacher
from distill.recipe import LossSpec, Recipe


def teacher_dir(model: str, adapter: Path | None, cache: Path) -> Path:
    """``model`` ('default' or a dir) with ``adapter`` merged in, as a model dir."""
    base = materialize_teacher(Path(cache) / "base-teacher") if model == "default" else Path(model)
    if adapter is None:
        return base
    digest = sha256_file(Path(adapter) / "adapter_model.safetensors")
    out = Path(cache) / f"teacher-{digest[:12]}"
    if not is_complete(out):
        build_merged_teacher(base, Path(adapter), out, digest)
    return out


def resolve_teacher_dir(recipe: Recipe, cache: Path) -> Path:
    """The recipe's teacher as a model dir: packaged base (materialized), a dir, + optional adapter."""
    return teacher_dir(recipe.teacher, recipe.teacher_adapter, cache)


def load_extra_teachers(loss: LossSpec, cache: Path, dtype: torch.dtype) -> list[tuple[torch.nn.Module, float]]:
    """A multi-teacher recipe's extra teachers, loaded (frozen by the signal), with their weights."""
    return [(load_model(teacher_dir(t.model, t.adapter, cache), dtype=dtype), t.weight) for t in loss.extra_teachers]
