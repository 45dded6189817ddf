"""Assemble servable tier model dirs from the packaged base + the small shipped weights.

The repository ships only deltas (``artifacts/tiers/``):

* ``teacher/``: a LoRA adapter (PEFT format) over the packaged base: the Banking77-adapted
  flagship. Merged here into float32 weights (``W += scale * B @ A``), no PEFT needed.
* ``student/``: the distilled student's own decoder layers + final norm (fp16
  safetensors shards); embeddings and the tied head are the packaged base's, frozen
  during training, so they never need shipping.

``manifest.json`` lists every shipped file with its sha256 and the recipe that produced
it; assembly refuses files whose hash does not match. Each built dir carries a marker
with the hash of its manifest entry, so a second run with nothing changed returns at once.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from distill.atomic import atomic_dir
from distill.packaged import (
    MARKER as MARKER_NAME,
    copy_tokenizer_files,
    is_complete,
    materialize_teacher,
    read_marker,
    save_state_dict_dir,
    write_marker,
)
from distill.student_init import load_state, read_config

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_ARTIFACTS = REPO_ROOT / "artifacts" / "tiers"
MANIFEST = "manifest.json"


class HashMismatch(RuntimeError):
    """A shipped weight file does not match the sha256 recorded in the manifest."""


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def load_manifest(artifacts: Path = DEFAULT_ARTIFACTS) -> dict | None:
    p = Path(artifacts) / MANIFEST
    if not p.is_file():
        return None
    return json.loads(p.read_text())


def verify_files(artifacts: Path, files: dict[str, str]) -> None:
    """Check each ``relative path -> sha256`` of a manifest entry; raise on any mismatch."""
    for rel, want in files.items():
        p = Path(artifacts) / rel
        if not p.is_file():
            raise HashMismatch(f"shipped file missing: {p}")
        got = sha256_file(p)
        if got != want:
            raise HashMismatch(f"sha256 mismatch for {p}: manifest {want[:12]}…, file {got[:12]}…")


def entry_digest(entry: dict) -> str:
    return hashlib.sha256(json.dumps(entry, sort_keys=True).encode()).hexdigest()


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _up_to_date(out_dir: Path, digest: str) -> bool:
    return is_complete(out_dir) and read_marker(out_dir).get("entry_sha256") == digest


# --------------------------------------------------------------------------- LoRA merge
def merge_lora_state(base_state: dict, adapter_dir: Path) -> dict:
    """Merge a PEFT LoRA adapter into a state dict: ``W += (alpha / r) * B @ A``.

    Done by hand (a few lines) so assembly needs neither PEFT nor a model instance.
    Supports plain LoRA (no DoRA, no rsLoRA); the adapter config is checked for that.
    """
    import torch
    from safetensors.torch import load_file

    cfg = json.loads((Path(adapter_dir) / "adapter_config.json").read_text())
    if cfg.get("use_dora") or cfg.get("use_rslora"):
        raise ValueError("only plain LoRA adapters can be merged here (no DoRA / rsLoRA)")
    r, alpha = int(cfg["r"]), float(cfg["lora_alpha"])
    rank_pattern, alpha_pattern = cfg.get("rank_pattern") or {}, cfg.get("alpha_pattern") or {}
    if rank_pattern or alpha_pattern:
        raise ValueError("rank_pattern / alpha_pattern adapters are not supported")
    scale = alpha / r
    ad = load_file(str(Path(adapter_dir) / "adapter_model.safetensors"))
    state = dict(base_state)
    merged = 0
    for k, a in ad.items():
        if ".lora_A." not in k:
            continue
        b = ad[k.replace(".lora_A.", ".lora_B.")]
        # base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight -> model.layers.0...
        target = k.split(".lora_A.")[0].removeprefix("base_model.model.") + ".weight"
        if target not in state:
            raise KeyError(f"adapter targets {target}, absent from the base model")
        w = state[target]
        state[target] = (w.float() + scale * (b.float() @ a.float())).to(w.dtype)
        merged += 1
    if merged == 0:
        raise ValueError(f"no LoRA weights found in {adapter_dir}")
    return state


# ------------------------------------------------------------------------ tier builders
def build_merged_teacher(base_dir: Path, adapter_dir: Path, out_dir: Path, digest: str) -> Path:
    """Base weights + the LoRA adapter merged in float32, written atomically to ``out_dir``."""
    state = merge_lora_state(load_state(base_dir), adapter_dir)
    with atomic_dir(out_dir) as tmp:
        save_state_dict_dir(state, read_config(base_dir), tmp)
        copy_tokenizer_files(base_dir, tmp)
        write_marker(tmp, kind="teacher", adapter=str(adapter_dir), entry_sha256=digest)
    return out_dir


def build_student(base_dir: Path, artifacts: Path, entry: dict, out_dir: Path, digest: str) -> Path:
    """Student = packaged embeddings/head + shipped layers and norm, as float32."""
    import torch
    from safetensors.torch import load_file, save_file

    base_state = load_state(base_dir)
    cfg = dict(read_config(base_dir))
    cfg.update(entry.get("config_overrides", {}))
    cfg["num_hidden_layers"] = int(entry["num_layers"])
    own: dict = {}
    for rel in entry["files"]:
        if rel.endswith(".safetensors"):
            own.update(load_file(str(Path(artifacts) / rel)))
    expected_layers = {f"model.layers.{i}." for i in range(cfg["num_hidden_layers"])}
    if {k.split(".")[2] for k in own if k.startswith("model.layers.")} != {
        str(i) for i in range(cfg["num_hidden_layers"])
    }:
        raise ValueError(f"shipped student layers do not cover {sorted(expected_layers)}")
    state = {k: v for k, v in base_state.items() if not k.startswith("model.layers.")}
    for k, v in own.items():
        state[k] = v.to(torch.float32)
    trim = entry.get("vocab_trim")  # a vocabulary-trimmed student: built whole, then trimmed
    target = Path(out_dir) if trim is None else Path(out_dir).parent / (Path(out_dir).name + ".untrimmed")
    with atomic_dir(target) as tmp:
        tensors = {k: v.contiguous() for k, v in state.items()
                   if not (cfg.get("tie_word_embeddings") and k == "lm_head.weight")}
        save_file(tensors, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        (tmp / "config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True))
        copy_tokenizer_files(base_dir, tmp)
        for rel in entry["files"]:  # ship the card and the competence index with the model
            if Path(rel).name in ("distill_card.json", "competence.skops"):
                shutil.copy2(Path(artifacts) / rel, tmp / Path(rel).name)
        info = {k: entry[k] for k in ("kept_layers", "recipe", "teacher") if k in entry}
        (tmp / "student_init.json").write_text(json.dumps(info, indent=2))
        write_marker(tmp, kind="student", entry_sha256=digest, **info)
    if trim is not None:
        _trim_built_student(target, Path(artifacts), trim, entry, Path(out_dir), digest, info)
    return out_dir


def _trim_built_student(full: Path, artifacts: Path, trim: str, entry: dict, out_dir: Path, digest: str,
                        info: dict) -> None:
    """Trim the whole student to the shipped token ids (``vocab_trim.json``, hash-checked with the
    rest): the same deterministic trim ``distill run`` made, so the tokenizer, embedding rows and
    config come out as trained. The marker is written last: a crash leaves a dir that rebuilds."""
    from distill.vocab_trim import trim_vocabulary

    kept = json.loads((artifacts / trim).read_text())["kept_ids"]
    summary = trim_vocabulary(full, out_dir, (), used_ids=kept)
    if summary["vocab_after"] != len(kept):
        raise ValueError(f"{trim}: {len(kept)} ids shipped, the trim kept {summary['vocab_after']} (not a closed set)")
    for rel in entry["files"]:
        if Path(rel).name in ("distill_card.json", "competence.skops"):
            shutil.copy2(Path(artifacts) / rel, out_dir / Path(rel).name)
    shutil.rmtree(full, ignore_errors=True)
    write_marker(out_dir, kind="student", entry_sha256=digest, vocab_size=len(kept), **info)


@dataclass
class AssembleReport:
    built: dict[str, str] = field(default_factory=dict)  # name -> "built" | "up to date"
    dirs: dict[str, Path] = field(default_factory=dict)


def assemble(cache: Path, artifacts: Path = DEFAULT_ARTIFACTS, verify: bool = True) -> AssembleReport:
    """Build ``cache/base-teacher``, ``cache/teacher`` (+ ``cache/teacher-adapter``) and (if shipped) ``cache/student``.

    Without shipped weights, ``teacher`` is the plain packaged base. With them, ``teacher``
    is the base + merged LoRA adapter and ``student`` the distilled student.
    """
    cache = Path(cache)
    cache.mkdir(parents=True, exist_ok=True)
    rep = AssembleReport()
    base = cache / "base-teacher"
    rep.built["base-teacher"] = "up to date" if is_complete(base) else "built"
    materialize_teacher(base)
    rep.dirs["base-teacher"] = base

    manifest = load_manifest(artifacts)
    tiers = (manifest or {}).get("tiers", {})
    teacher = cache / "teacher"
    t_entry = tiers.get("teacher")
    if t_entry is None:
        # No adapted teacher shipped: the default teacher tier is the packaged base.
        digest = "base"
        if _up_to_date(teacher, digest):
            rep.built["teacher"] = "up to date"
        else:
            with atomic_dir(teacher) as tmp:
                # Hard links: the plain teacher is byte-identical to the base, so no 0.5 GB copy.
                shutil.copytree(base, tmp, copy_function=_link_or_copy, dirs_exist_ok=True,
                                ignore=shutil.ignore_patterns(MARKER_NAME))
                write_marker(tmp, kind="teacher", source="base-teacher", entry_sha256=digest)
            rep.built["teacher"] = "built (plain base: no adapter shipped)"
    else:
        digest = entry_digest(t_entry)
        if verify:
            verify_files(artifacts, t_entry["files"])
        if _up_to_date(teacher, digest):
            rep.built["teacher"] = "up to date"
        else:
            adapter = Path(artifacts) / t_entry["adapter_dir"]
            build_merged_teacher(base, adapter, teacher, digest)
            rep.built["teacher"] = "built (base + LoRA adapter)"
        # The adapter itself, for a vLLM process serving base + adapter (gateway/defaults.yaml:
        # `flagship` with `lora_modules: {teacher: .../teacher-adapter}`).
        adapter_out = cache / "teacher-adapter"
        if _up_to_date(adapter_out, digest):
            rep.built["teacher-adapter"] = "up to date"
        else:
            with atomic_dir(adapter_out) as tmp:
                for name in ("adapter_config.json", "adapter_model.safetensors"):
                    shutil.copy2(Path(artifacts) / t_entry["adapter_dir"] / name, tmp / name)
                write_marker(tmp, kind="teacher-adapter", entry_sha256=digest)
            rep.built["teacher-adapter"] = "built (LoRA adapter, hash-checked)"
        rep.dirs["teacher-adapter"] = adapter_out
    rep.dirs["teacher"] = teacher

    s_entry = tiers.get("student")
    if s_entry is not None:
        student = cache / "student"
        digest = entry_digest(s_entry)
        if verify:
            verify_files(artifacts, s_entry["files"])
        if _up_to_date(student, digest):
            rep.built["student"] = "up to date"
        else:
            build_student(base, artifacts, s_entry, student, digest)
            rep.built["student"] = f"built ({s_entry['num_layers']} layers)"
        rep.dirs["student"] = student
    return rep
