"""The packaged teacher, layer dropping and tier assembly."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest

from distill import assemble as asm
from distill.packaged import MARKER, is_complete, materialize_teacher, teacher_gguf_path
from distill.student_init import evenly_spaced_layers, layer_drop, load_state


def test_gguf_found():
    p = teacher_gguf_path()
    assert p.name.endswith(".gguf") and p.stat().st_size > 50_000_000


def test_gguf_env_override_errors(monkeypatch, tmp_path):
    from distill.packaged import TeacherNotInstalled

    monkeypatch.setenv("TIERWISE_TEACHER_GGUF", str(tmp_path / "nope.gguf"))
    with pytest.raises(TeacherNotInstalled, match="not a file"):
        teacher_gguf_path()


def test_materialized_teacher_is_servable(teacher_dir):
    cfg = json.loads((teacher_dir / "config.json").read_text())
    assert "quantization_config" not in cfg
    assert cfg["num_hidden_layers"] == 30 and cfg["hidden_size"] == 576
    assert (teacher_dir / MARKER).is_file()
    tok_cfg = (teacher_dir / "tokenizer_config.json").read_text()
    assert "chat_template" in tok_cfg or (teacher_dir / "chat_template.jinja").is_file()
    t0 = time.perf_counter()
    assert materialize_teacher(teacher_dir) == teacher_dir  # idempotent, fast
    assert time.perf_counter() - t0 < 2


def test_evenly_spaced_layers():
    assert evenly_spaced_layers(30, 6) == [0, 6, 12, 17, 23, 29]
    assert evenly_spaced_layers(30, 30) == list(range(30))
    assert evenly_spaced_layers(30, 2) == [0, 29]
    with pytest.raises(ValueError, match="more layers"):
        evenly_spaced_layers(30, 31)


def test_layer_drop_copies_weights_exactly(teacher_dir, tmp_path):
    import torch

    out = layer_drop(teacher_dir, tmp_path / "s6", 6)
    keep = json.loads((out / "student_init.json").read_text())["kept_layers"]
    assert keep == [0, 6, 12, 17, 23, 29]
    t, s = load_state(teacher_dir), load_state(out)
    assert json.loads((out / "config.json").read_text())["num_hidden_layers"] == 6
    for new, old in enumerate(keep):
        for name in ("self_attn.q_proj.weight", "mlp.down_proj.weight", "input_layernorm.weight"):
            assert torch.equal(s[f"model.layers.{new}.{name}"], t[f"model.layers.{old}.{name}"])
    assert torch.equal(s["model.embed_tokens.weight"], t["model.embed_tokens.weight"])
    assert torch.equal(s["model.norm.weight"], t["model.norm.weight"])
    assert not any(k.startswith("model.layers.6.") for k in s)


def test_layer_drop_rejects_too_many_layers(teacher_dir, tmp_path):
    with pytest.raises(ValueError, match="more layers"):
        layer_drop(teacher_dir, tmp_path / "bad", 31)
    assert not (tmp_path / "bad").exists()


def test_student_loads_in_transformers(student2_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(student2_dir)
    model = AutoModelForCausalLM.from_pretrained(student2_dir)
    assert model.config.num_hidden_layers == 2
    ids = tok("hello", return_tensors="pt")
    assert model(**ids).logits.shape[-1] == 49152


def _fake_artifacts(tmp_path: Path, teacher_dir: Path) -> tuple:
    """A tiny shipped set: a rank-2 LoRA on one projection + a 2-layer student."""
    import torch
    from safetensors.torch import save_file

    art = tmp_path / "art"
    (art / "teacher").mkdir(parents=True)
    (art / "student").mkdir()
    a = torch.randn(2, 576) * 0.01
    b = torch.randn(576, 2) * 0.01
    save_file({"base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight": a,
               "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight": b},
              str(art / "teacher" / "adapter_model.safetensors"))
    (art / "teacher" / "adapter_config.json").write_text(json.dumps({"r": 2, "lora_alpha": 4}))
    t = load_state(teacher_dir)
    own = {k.replace("layers.29.", "layers.1."): v.half() for k, v in t.items() if k.startswith("model.layers.29.")}
    own.update({k: v.half() for k, v in t.items() if k.startswith("model.layers.0.")})
    own["model.norm.weight"] = t["model.norm.weight"].half()
    save_file(own, str(art / "student" / "student-00001-of-00001.safetensors"))
    files_t = {f"teacher/{n}": asm.sha256_file(art / "teacher" / n)
               for n in ("adapter_model.safetensors", "adapter_config.json")}
    files_s = {"student/student-00001-of-00001.safetensors":
               asm.sha256_file(art / "student" / "student-00001-of-00001.safetensors")}
    manifest = {"format": 1, "tiers": {
        "teacher": {"kind": "lora", "adapter_dir": "teacher", "files": files_t},
        "student": {"kind": "student-layers", "num_layers": 2, "kept_layers": [0, 29],
                    "files": files_s}}}
    (art / "manifest.json").write_text(json.dumps(manifest))
    return (art, a, b)


def test_assemble_merges_and_checks_hashes(teacher_dir, tmp_path):
    import torch

    art, a, b = _fake_artifacts(tmp_path, teacher_dir)
    cache = tmp_path / "cache"
    cache.mkdir()
    # reuse the session's base teacher (hard links) so the test does not re-dequantize
    shutil.copytree(teacher_dir, cache / "base-teacher", copy_function=asm._link_or_copy)
    rep = asm.assemble(cache, art)
    assert rep.built["teacher"].startswith("built") and rep.built["student"].startswith("built")
    assert rep.built["teacher-adapter"].startswith("built")  # the LoRA dir the flagship process serves
    base, merged = load_state(teacher_dir), load_state(cache / "teacher")
    k = "model.layers.0.self_attn.q_proj.weight"
    assert torch.allclose(merged[k], base[k] + 2.0 * (b @ a), atol=1e-6)
    assert torch.equal(merged["model.layers.1.mlp.up_proj.weight"], base["model.layers.1.mlp.up_proj.weight"])
    st = load_state(cache / "student")
    assert torch.equal(st["model.layers.1.mlp.up_proj.weight"], base["model.layers.29.mlp.up_proj.weight"].half().float())
    assert is_complete(cache / "student")
    rep2 = asm.assemble(cache, art)
    assert rep2.built == {"base-teacher": "up to date", "teacher": "up to date", "teacher-adapter": "up to date",
                          "student": "up to date"}
    # a tampered shipped file is refused
    with open(art / "student" / "student-00001-of-00001.safetensors", "ab") as f:
        f.write(b"x")
    with pytest.raises(asm.HashMismatch, match="sha256 mismatch"):
        asm.assemble(cache, art)


def test_a_vocabulary_trimmed_student_ships_and_assembles(teacher_dir, tmp_path):
    """A trimmed student ships its layers and the token ids it kept; assemble rebuilds the same
    model dir: the trimmed tokenizer, the base's embedding rows for those ids, its layers."""
    import torch

    from distill.ship import export_tiers
    from distill.student_init import layer_drop
    from distill.vocab_trim import trim_vocabulary

    student = layer_drop(teacher_dir, tmp_path / "student", 2)
    trimmed = tmp_path / "trimmed"
    trim_vocabulary(student, trimmed, ["<|im_start|>user\nMy card was declined<|im_end|>\n",
                                       "Intent: declined_card_payment"])
    art = tmp_path / "art"
    manifest = export_tiers(art, student_dir=trimmed)
    entry = manifest["tiers"]["student"]
    assert entry["vocab_trim"] == "student/vocab_trim.json" and "student/vocab_trim.json" in entry["files"]
    cache = tmp_path / "cache"
    cache.mkdir()
    shutil.copytree(teacher_dir, cache / "base-teacher", copy_function=asm._link_or_copy)
    rep = asm.assemble(cache, art)
    built = rep.dirs["student"]
    assert rep.built["student"].startswith("built") and is_complete(built)
    assert not (cache / "student.untrimmed").exists()
    assert json.loads((built / "tokenizer.json").read_text()) == json.loads((trimmed / "tokenizer.json").read_text())
    cfg = json.loads((built / "config.json").read_text())
    assert cfg["vocab_size"] == json.loads((trimmed / "config.json").read_text())["vocab_size"] < 1000
    a, b = load_state(built), load_state(trimmed)
    assert torch.equal(a["model.embed_tokens.weight"], b["model.embed_tokens.weight"])
    k = "model.layers.1.self_attn.o_proj.weight"
    assert torch.equal(a[k], b[k].half().float())
    assert asm.assemble(cache, art).built["student"] == "up to date"
