"""The distillation card: what a run produced and how (``distill_card.json``, shipped with the model).

It records the teacher, the student's size, the loss and training settings, every stage's
first and last losses and the hardware, so a shipped student can be traced to its recipe.
"""

from __future__ import annotations

from pathlib import Path

import torch

from distill import dist
from distill.modeling import on_gpu
from distill.recipe import Recipe
from distill.student_init import load_state, read_config


def count_params(model_dir: Path) -> dict:
    """All parameters and those outside the (frozen, not shipped) embeddings and head."""
    state = load_state(model_dir)
    total = sum(v.numel() for v in state.values())
    emb = sum(v.numel() for k, v in state.items() if "embed_tokens" in k or k == "lm_head.weight")
    return {"parameters": total, "non_embedding_parameters": total - emb}


def make_card(recipe: Recipe, teacher_dir: Path, model_dir: Path, stages: list[dict], n_train: int) -> dict:
    """The card of a finished run (``evaluation`` is filled in later by the benchmark)."""
    cfg = read_config(model_dir)
    size = sum(f.stat().st_size for f in Path(model_dir).glob("*.safetensors"))
    return {
        "name": recipe.name,
        "teacher": {"dir": str(teacher_dir), "spec": recipe.teacher,
                    "adapter": str(recipe.teacher_adapter) if recipe.teacher_adapter else None,
                    "api": recipe.api_teacher.model_dump() if recipe.api_teacher else None,
                    "layers": read_config(teacher_dir)["num_hidden_layers"]},
        "student": {"init": recipe.student.init, "layers": cfg["num_hidden_layers"],
                    "hidden_size": cfg["hidden_size"], "intermediate_size": cfg.get("intermediate_size"),
                    "vocab_size": cfg.get("vocab_size"), "bytes": size, **count_params(model_dir),
                    "freeze_embeddings": recipe.student.freeze_embeddings},
        "loss": recipe.loss.model_dump(),
        "train": recipe.train.model_dump(),
        "data": {"train": str(recipe.data.train_path()), "examples": n_train,
                 "labels_used": recipe.loss.targets == "gold"},
        "stages": stages,
        "device": torch.cuda.get_device_name(0) if on_gpu() else "cpu",
        "processes": dist.world_size(),
        "ddp_backend": dist.backend(),
        "evaluation": None,
        "recipe": recipe.model_dump(mode="json"),
    }
