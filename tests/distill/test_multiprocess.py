"""Distillation with several processes: ``torchrun --nproc_per_node 2`` on the CPU (gloo DDP).

The multi-GPU path (``torchrun --nproc_per_node N`` on CUDA, NCCL) is the same code; this
test runs it on the CPU so it is not untested. One run of two processes, tiny on purpose
(32 messages, 2-layer student, 4 steps, max length 64, one thread per process), from an
empty cache, so the racy steps (materializing the teacher, writing the layer-dropped init,
generating the teacher's targets, checkpoints, the final dir and card) all happen with two
ranks. Then a single-process run of the same recipe, for comparison of the artifacts.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from support.shared_data import packaged_teacher_gguf
from tiny_data import write_tiny_banking_csv

REPO = Path(__file__).resolve().parents[2]
N = 32  # messages
ARGS = ["--recipe", str(REPO / "distill" / "recipes" / "cpu_quick.yaml"),
        "--set", "train.max_steps=4", "--set", "train.batch_size=4", "--set", "train.max_len=64",
        "--set", "train.logging_steps=1", "--set", "train.save_steps=2", "--set", "train.threads=1",
        "--set", "loss.hidden_weight=0.5"]  # + the hidden-state loss, as in the GPU recipe


@pytest.fixture(scope="module")
def tiny_csv(tmp_path_factory) -> Path:
    return write_tiny_banking_csv(tmp_path_factory.mktemp("data"), stride=300, n=N)


def _env() -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in {"WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"}}
    env.update(OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", CUDA_VISIBLE_DEVICES="",
               PYTHONPATH=os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep))
    return env


@pytest.fixture(scope="module")
def teacher_gguf() -> Path:
    """The packaged teacher; fails (like the other distill tests) where it is not installed."""
    return packaged_teacher_gguf()


@pytest.fixture(scope="module")
def ddp_run(teacher_gguf, tiny_csv, tmp_path_factory):
    """``torchrun --standalone --nproc_per_node 2 -m distill run ...`` from an empty cache."""
    base = tmp_path_factory.mktemp("ddp")
    out, cache = base / "out", base / "cache"  # fresh cache: rank 0 materializes the teacher
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "distill", "run", *ARGS, "--data", str(tiny_csv), "--out", str(out),
           "--cache", str(cache)]
    t0 = time.perf_counter()
    p = subprocess.run(cmd, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=600)
    secs = time.perf_counter() - t0
    log = p.stdout + p.stderr
    (base / "torchrun.log").write_text(log)
    assert p.returncode == 0, log[-4000:]
    print(f"torchrun 2 processes: {secs:.1f} s")
    return out, cache, log, json.loads((out / "distill_card.json").read_text())


@pytest.fixture(scope="module")
def single_run(ddp_run, tiny_csv, tmp_path_factory):
    """The same recipe in one process (teacher targets copied from the DDP run: same key)."""
    d_out, cache, _, _ = ddp_run
    out = tmp_path_factory.mktemp("single") / "out"
    (out / "run").mkdir(parents=True)
    (out / "run" / "teacher_targets.json").write_bytes((d_out / "run" / "teacher_targets.json").read_bytes())
    cmd = [sys.executable, "-m", "distill", "run", *ARGS, "--data", str(tiny_csv), "--out", str(out),
           "--cache", str(cache)]
    p = subprocess.run(cmd, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, (p.stdout + p.stderr)[-4000:]
    return out, json.loads((out / "distill_card.json").read_text())


@pytest.mark.slow
def test_two_processes_train_one_student(ddp_run):
    out, _, log, card = ddp_run
    # both ranks report a world of 2 on gloo
    assert "rank 0/2 (gloo): world size 2" in log and "rank 1/2 (gloo): world size 2" in log
    assert card["processes"] == 2 and card["ddp_backend"] == "gloo"
    par = card["stages"][0]["parallel"]
    assert par["world_size"] == 2 and par["backend"] == "gloo"
    # DDP kept the replicas in step: both ranks end with the same weights
    assert par["replicas_identical"] is True
    # the KD loss went down (logged losses are averaged over both ranks)
    first, final = card["stages"][0]["first_losses"], card["stages"][0]["final_losses"]
    assert first["step"] == 1 and final["step"] == 4 == card["stages"][0]["steps"]
    assert final["loss"] < first["loss"] and final["loss_soft"] < first["loss_soft"]


@pytest.mark.slow
def test_ranks_split_the_data(ddp_run):
    _, _, log, card = ddp_run
    par = card["stages"][0]["parallel"]
    assert par["per_device_batch"] == 4 and par["global_batch"] == 8 == 2 * par["per_device_batch"]
    # 4 steps x 8 = 32 = one epoch: each rank read its own 16 messages, none read by both
    assert par["read_per_rank"] == [16, 16] and par["distinct_per_rank"] == [16, 16]
    assert par["read_by_every_rank"] == 0 and par["distinct_union"] == N == par["examples"]
    assert "global batch 8 (= 4 x 1 x 2 processes)" in log


@pytest.mark.slow
def test_only_rank_0_writes(ddp_run):
    out, cache, log, _ = ddp_run
    # teacher targets generated once (rank 0), read from its cache by rank 1
    assert f"rank 0/2 (gloo): {N} teacher targets generated" in log
    assert f"rank 1/2 (gloo): {N} teacher targets read from cache" in log
    # one final dir, one card; checkpoints removed; no temporary dirs left by a race
    assert sorted(p.name for p in out.iterdir()) == ["distill_card.json", "model", "run"]
    assert sorted(p.name for p in (out / "run").iterdir()) == ["init", "model", "teacher_targets.json"]
    assert sorted(p.name for p in cache.iterdir()) == ["base-teacher"]
    assert log.count("done: ") == 1  # only rank 0 finishes with the summary line


@pytest.mark.slow
def test_model_loads_with_transformers(ddp_run):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out, _, _, _ = ddp_run
    tok = AutoTokenizer.from_pretrained(out / "model")
    model = AutoModelForCausalLM.from_pretrained(out / "model")
    assert model.config.num_hidden_layers == 2
    ids = tok.apply_chat_template([{"role": "user", "content": "my card has not arrived"}],
                                  add_generation_prompt=True, return_tensors="pt", return_dict=True)
    gen = model.generate(**ids, max_new_tokens=3, do_sample=False)
    assert gen.shape[1] > ids["input_ids"].shape[1]


@pytest.mark.slow
def test_same_artifact_as_a_single_process_run(ddp_run, single_run):
    d_out, _, _, d_card = ddp_run
    s_out, s_card = single_run
    files = lambda d: sorted(p.name for p in d.iterdir() if p.name != ".tierwise_complete.json")  # noqa: E731
    assert files(d_out / "model") == files(s_out / "model")
    assert files(d_out) == files(s_out)
    assert json.loads((d_out / "model" / "config.json").read_text()) == \
        json.loads((s_out / "model" / "config.json").read_text())
    assert d_card.keys() == s_card.keys()
    assert d_card["stages"][0].keys() == s_card["stages"][0].keys()
    assert d_card["student"] == s_card["student"]  # same architecture, size, parameter count
    assert s_card["processes"] == 1 and s_card["ddp_backend"] is None
    sp, dp = s_card["stages"][0]["parallel"], d_card["stages"][0]["parallel"]
    assert sp["global_batch"] == 4 and dp["global_batch"] == 8  # same steps, twice the data
    # one process reads 4 x 4 (+ the batch its loader fetches ahead); two read 4 x 8, an epoch
    assert 16 <= sum(sp["read_per_rank"]) <= 20 and sum(dp["read_per_rank"]) == 32


# ---------------------------------------------------------------- fast: no processes started
def test_single_process_is_a_no_op(monkeypatch):
    from distill import dist

    for k in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(k, raising=False)
    assert not dist.enabled() and dist.is_main() and dist.backend() is None and dist.tag() == ""
    dist.init()
    dist.barrier()
    with dist.main_first():
        pass
    assert dist.gather_object(3) == [3]


def test_cpu_world_picks_gloo(monkeypatch):
    import torch

    from distill import dist

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    assert dist.enabled() and not dist.is_main() and dist.backend() == "gloo"
    assert dist.tag() == "rank 1/2 (gloo)"


def test_teacher_finetune_refuses_several_processes(monkeypatch, tmp_path):
    from typer.testing import CliRunner

    from distill.cli import app

    monkeypatch.setenv("WORLD_SIZE", "2")
    res = CliRunner().invoke(app, ["teacher-finetune", "--out", str(tmp_path / "t")])
    assert res.exit_code == 2 and "runs in one process" in " ".join(res.output.split())
    assert not (tmp_path / "t").exists()
