"""``python -m distill competence``: an existing student gets its competence index, listed in its
card and (for a shipped tier dir) in the manifest, so ``assemble``'s hash check covers it."""

from __future__ import annotations

import csv
import hashlib
import json
import random

import pytest
from typer.testing import CliRunner

from distill.assemble import HashMismatch, verify_files
from distill.cli import app
from distill.data import SYSTEM_PROMPT
from router.competence import load_competence
from support.shared_data import shared_data


def sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def shipped(tmp_path):
    """A shipped artifacts dir: manifest + student/ with a card (weights are not needed here)."""
    student = tmp_path / "tiers" / "student"
    student.mkdir(parents=True)
    (student / "distill_card.json").write_text(json.dumps({"name": "tiny"}))
    manifest = {"format": 1, "tiers": {"student": {"kind": "student-layers", "files": {
        "student/distill_card.json": sha256(student / "distill_card.json")}}}}
    (tmp_path / "tiers" / "manifest.json").write_text(json.dumps(manifest))
    return tmp_path / "tiers"


def banking77_prompts(n: int) -> list[str]:
    with open(shared_data("banking77", "train.csv"), newline="", encoding="utf-8") as f:
        return random.Random(0).sample([r["text"] for r in csv.DictReader(f)], n)


def test_competence_command_writes_lists_and_hashes_the_index(shipped, tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    rows = [{"text": t} for t in banking77_prompts(300)]
    rows[0] = {"messages": [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": "my card is lost"}]}
    prompts.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    result = CliRunner().invoke(app, ["competence", "--student", str(shipped / "student"), "--prompts", str(prompts),
                                      "--k", "3"])
    assert result.exit_code == 0, result.output

    index_file = shipped / "student" / "competence.skops"
    card = json.loads((shipped / "student" / "distill_card.json").read_text())["competence"]
    assert card["sha256"] == sha256(index_file) and card["n_prompts"] == 300 and card["params"]["k"] == 3
    files = json.loads((shipped / "manifest.json").read_text())["tiers"]["student"]["files"]
    assert files["student/competence.skops"] == card["sha256"]
    verify_files(shipped, files)  # the card's hash was refreshed too

    loaded = load_competence(index_file)
    assert loaded.index.threshold_ == pytest.approx(card["threshold"])
    assert loaded.index.known_prompts == (SYSTEM_PROMPT,)
    # 300 prompts make a loose index (its threshold is wide); the order is already right
    assert loaded.index.distance_one("What's the weather in Paris tomorrow?") \
        > loaded.index.distance_one("I still haven't received my new card")

    index_file.write_bytes(index_file.read_bytes()[:-1] + b"!")  # a corrupted copy is refused at assembly
    with pytest.raises(HashMismatch):
        verify_files(shipped, files)


def test_bad_prompt_files_exit_2_with_a_message(shipped, tmp_path):
    runner = CliRunner()
    no_column = tmp_path / "prompts.csv"
    no_column.write_text("prompt\nhello\n")
    result = runner.invoke(app, ["competence", "--student", str(shipped / "student"), "--prompts", str(no_column)])
    assert result.exit_code == 2 and "no 'text' column" in result.output
    result = runner.invoke(app, ["competence", "--student", str(shipped / "student"), "--prompts",
                                 str(tmp_path / "missing.csv")])
    assert result.exit_code == 2 and "not found" in result.output
    too_few = tmp_path / "few.csv"
    too_few.write_text("text\n" + "\n".join(banking77_prompts(12)) + "\n")
    result = runner.invoke(app, ["competence", "--student", str(shipped / "student"), "--prompts", str(too_few)])
    assert result.exit_code == 2 and "too few" in result.output
    assert not (shipped / "student" / "competence.skops").exists()


def test_distill_run_fits_the_index_on_the_recipes_own_training_prompts(tmp_path):
    """What ``python -m distill run`` calls after training (``for_recipe``), without the training."""
    from distill.competence import for_recipe
    from distill.recipe import Recipe

    train = tmp_path / "train.csv"
    train.write_text("text\n" + "\n".join(banking77_prompts(400)) + "\n")
    recipe = Recipe.model_validate({"name": "t", "teacher": "default", "data": {"train_file": str(train),
                                    "max_train": 200}, "student": {"layers": 2}})
    model = tmp_path / "model"
    model.mkdir()
    (model / "distill_card.json").write_text("{}")
    entry = for_recipe(recipe, model)
    assert entry["n_prompts"] == 200 and entry["fitted_on"] == str(train)  # the subsample it trained on
    assert json.loads((model / "distill_card.json").read_text())["competence"] == entry
    assert load_competence(model / "competence.skops").index.known_prompts == (SYSTEM_PROMPT,)

    tiny = Recipe.model_validate({"name": "t", "teacher": "default", "data": {"train_file": str(train), "max_train": 8},
                                  "student": {"layers": 2}})
    small = tmp_path / "small"
    small.mkdir()
    assert "too few" in for_recipe(tiny, small)["skipped"]  # a smoke-test run still finishes
    assert not (small / "competence.skops").exists()
