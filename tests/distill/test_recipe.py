"""Bad recipes fail fast, with clear messages, before any model is loaded."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from distill.cli import app
from distill.recipe import Recipe, RecipeError, load_recipe, preflight

REPO = Path(__file__).resolve().parents[2]


def test_shipped_recipes_validate():
    for p in (REPO / "distill" / "recipes").glob("*.yaml"):
        load_recipe(p)


def test_too_many_layers():
    r = Recipe.model_validate({"student": {"layers": 31}})
    with pytest.raises(RecipeError, match="only 30 decoder layers"):
        preflight(r)


def test_alpha_out_of_range():
    with pytest.raises(ValidationError, match=r"alpha must be in \[0, 1\]"):
        Recipe.model_validate({"loss": {"alpha": 1.5}})
    with pytest.raises(ValidationError, match=r"alpha must be in \[0, 1\]"):
        Recipe.model_validate({"loss": {"alpha": -0.1}})


def test_missing_data_file(tmp_path):
    r = Recipe.model_validate({"data": {"train_file": str(tmp_path / "nope.csv")}})
    with pytest.raises(RecipeError, match="training data file not found"):
        preflight(r)


def test_progressive_stages_must_shrink():
    with pytest.raises(ValidationError, match="must shrink"):
        Recipe.model_validate({"stages": [6, 10]})


def test_unknown_keys_rejected():
    with pytest.raises(ValidationError):
        Recipe.model_validate({"loss": {"temprature": 2.0}})


@pytest.mark.parametrize("args, message", [
    (["--layers", "31"], "only 30 decoder layers"),
    (["--set", "loss.alpha=2"], "alpha must be in [0, 1]"),
    (["--data", "/nonexistent/train.csv"], "training data file not found"),
])
def test_cli_rejects_bad_recipes_before_training(tmp_path, args, message):
    t0 = time.perf_counter()
    res = CliRunner().invoke(app, ["run", "--out", str(tmp_path / "o"), *args])
    assert res.exit_code == 2, res.output
    assert message in " ".join(res.output.split())
    assert time.perf_counter() - t0 < 10  # no model was loaded
    assert not (tmp_path / "o").exists()


def test_a_layer_dropped_student_can_only_narrow_the_mlp():
    r = Recipe.model_validate({"student": {"layers": 6, "intermediate_size": 2048}})
    with pytest.raises(RecipeError, match="can only narrow"):
        preflight(r)
    preflight(Recipe.model_validate({"student": {"layers": 6, "intermediate_size": 1024}}))
