"""Distillation recipes: a validated pydantic model, loadable from YAML.

Everything that can be wrong with a recipe is checked by :func:`preflight` *before* any
model is loaded or trained: an impossible student depth, alpha outside [0, 1], a missing
data file. A bad recipe should cost a second, not a training run.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from distill.data import data_root

DEFAULT_TEACHER_LAYERS = 30  # the packaged SmolLM2-135M
DEFAULT_TEACHER_INTERMEDIATE = 1536


class RecipeError(ValueError):
    """A recipe that cannot run; the message says what to change."""


class DataSpec(BaseModel):
    """Where the training data is: a Banking77-style ``text,category`` CSV (``format: csv``),
    or a chat-JSONL dataset dir (``format: chat_jsonl``, ``dir:`` holding train/validation/
    test.jsonl, e.g. ``python -m flywheel dataset`` or ``python -m distill dataset banking77``):
    then the system prompt and the answer format come from the data, not from the code."""

    model_config = ConfigDict(extra="forbid")
    format: Literal["csv", "chat_jsonl"] = "csv"
    dir: Optional[Path] = Field(None, description="chat_jsonl: the dataset dir")
    root: Optional[Path] = Field(None, description="data root; default <repo>/../shared/data")
    dataset: str = "banking77"
    train_file: str = "train.csv"
    eval_file: str = "test.csv"
    max_train: Optional[int] = Field(None, ge=1)
    max_eval: Optional[int] = Field(None, ge=1)
    top_k: int = Field(5, ge=1, le=20, description="chat_jsonl: captured teacher logprobs used per token")

    @model_validator(mode="after")
    def _chat_needs_dir(self) -> "DataSpec":
        if self.format == "chat_jsonl" and self.dir is None:
            raise ValueError("data.format chat_jsonl needs data.dir (the folder with train.jsonl)")
        return self

    def dataset_dir(self) -> Path:
        return Path(self.dir) if self.format == "chat_jsonl" else data_root(self.root) / self.dataset

    def split_path(self, split: str) -> Path:
        """chat_jsonl: ``dir/<split>.jsonl`` (train, validation, test)."""
        return self.dataset_dir() / f"{split}.jsonl"

    def train_path(self) -> Path:
        if self.format == "chat_jsonl":
            return self.split_path("train")
        p = Path(self.train_file)
        return p if p.is_absolute() else self.dataset_dir() / p

    def eval_path(self) -> Path:
        if self.format == "chat_jsonl":
            return self.split_path("test")
        p = Path(self.eval_file)
        return p if p.is_absolute() else self.dataset_dir() / p


class StudentSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    init: Literal["layer_drop", "scratch"] = "layer_drop"
    layers: int = Field(6, ge=1)
    hidden_size: Optional[int] = Field(None, ge=8, description="scratch only")
    intermediate_size: Optional[int] = Field(
        None, ge=8, description="MLP width: scratch, or layer_drop narrowing each kept layer's MLP to its "
        "most important units (a narrower, faster student)")
    freeze_embeddings: bool = Field(
        True, description="keep the packaged embeddings/tied head frozen so only layers ship"
    )
    trim_vocab: bool = Field(
        False, description="after training, trim the vocabulary (embedding and head) to the tokens the training "
        "data uses through the chat template, plus the student's own answers (trim_own_answers): a faster student "
        "that writes the same answers; the untrimmed model stays in model-untrimmed/")
    trim_own_answers: int = Field(
        0, ge=0, description="trim_vocab: also keep the tokens of the student's own greedy answers on this many "
        "training prompts (tokens it uses that the targets do not)")
    trim_before_training: bool = Field(
        False, description="trim_vocab: trim the freshly initialised student instead of the trained one, so every "
        "training step pays for the small head (the CPU's biggest saving); kept: the training and validation "
        "examples' tokens and the teacher's top-k candidates; a local teacher's soft targets are renormalised over "
        "the kept tokens. Single-stage recipes only")


class LossSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    soft: Literal["forward_kl", "reverse_kl", "jsd"] = "forward_kl"
    temperature: float = Field(2.0, gt=0)
    alpha: float = Field(0.9, description="alpha * soft + (1 - alpha) * hard")
    beta: float = Field(0.5, ge=0, le=1, description="JSD mixture weight")
    targets: Literal["teacher", "gold"] = Field(
        "teacher",
        description="teacher: sequence-level KD, the hard term is the teacher's own greedy "
        "generation (no dataset labels used); gold: dataset labels (comparison student)",
    )
    hidden_weight: float = Field(0.0, ge=0, description="weight of the hidden-state cosine loss")
    relation_weight: float = Field(0.0, ge=0, description="weight of the relation loss (relation-based KD)")
    relation: Literal["batch", "minilm"] = Field(
        "batch", description="batch: similarity between the batch's examples (similarity-preserving KD); "
        "minilm: self-attention relations between the tokens of the last layer (MiniLM v2)")
    relation_heads: int = Field(9, ge=1, description="minilm: relation heads (must divide both widths)")
    attention_weight: float = Field(0.0, ge=0, description="weight of attention transfer: each student layer's "
                                    "attention maps vs those of the teacher layer it was copied from")
    extra_teachers: list["ExtraTeacher"] = Field(
        default_factory=list, description="multi-teacher KD: the soft target is the weighted mixture of the "
        "teacher's distribution (weight teacher_weight) and these teachers' (same tokenizer)")
    teacher_weight: float = Field(1.0, ge=0, description="the recipe teacher's weight in a multi-teacher mixture")
    on_policy: float = Field(0.0, ge=0, le=1, description="on-policy KD (GKD's lambda): the share of batches whose "
                             "answers the student samples itself and the teacher then scores (soft loss only)")
    on_policy_max_new_tokens: int = Field(32, ge=1)
    on_policy_temperature: float = Field(1.0, gt=0, description="the student's sampling temperature")

    @field_validator("alpha")
    @classmethod
    def _alpha(cls, v: float) -> float:
        if not 0.0 <= v <= 1.0:
            raise ValueError(f"alpha must be in [0, 1] (alpha * soft + (1 - alpha) * hard), got {v}")
        return v


class ExtraTeacher(BaseModel):
    """One more teacher of a multi-teacher recipe: the packaged model or a dir, an optional
    LoRA adapter merged in, and its weight in the mixture."""

    model_config = ConfigDict(extra="forbid")
    model: str = Field("default", description="'default' (packaged) or an HF model dir")
    adapter: Optional[Path] = None
    weight: float = Field(1.0, ge=0)


class TrainSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    epochs: float = Field(3.0, gt=0)
    max_steps: int = Field(-1, description="overrides epochs when > 0")
    batch_size: int = Field(32, ge=1)
    grad_accum: int = Field(1, ge=1)
    lr: float = Field(5e-4, gt=0)
    warmup_ratio: float = Field(0.05, ge=0, lt=1)
    weight_decay: float = Field(0.0, ge=0)
    max_len: int = Field(160, ge=16)
    seed: int = 0
    save_steps: int = Field(0, ge=0, description="checkpoint every N steps (0: at the end only)")
    early_stopping_patience: Optional[int] = Field(
        None, ge=1, description="chat_jsonl with a validation split: evaluate every epoch, keep the epoch with "
        "the lowest validation loss, stop after this many epochs without improvement")
    logging_steps: int = Field(20, ge=1)
    bf16: Optional[bool] = Field(None, description="default: True on a CUDA GPU, False on CPU")
    threads: Optional[int] = Field(None, ge=1, description="torch CPU threads")
    ddp_timeout: int = Field(
        7200, ge=60, description="seconds any rank may wait for the others (torchrun/accelerate "
        "runs): must cover rank 0 generating the teacher's targets while the others wait")


class ApiTeacherSpec(BaseModel):
    """A teacher reachable only over an OpenAI-compatible API (vLLM, or hosted via litellm)."""

    model_config = ConfigDict(extra="forbid")
    model: str
    base_url: Optional[str] = None
    api_key_env: Optional[str] = None
    top_k: int = Field(5, ge=1, le=20)
    max_tokens: int = Field(64, ge=1)
    concurrency: int = Field(8, ge=1)


class TeacherFinetuneSpec(BaseModel):
    """LoRA adaptation of the teacher (``distill teacher-finetune``)."""

    model_config = ConfigDict(extra="forbid")
    lora_r: int = Field(16, ge=1)
    lora_alpha: int = Field(32, ge=1)
    epochs: float = Field(3.0, gt=0)
    batch_size: int = Field(32, ge=1)
    lr: float = Field(1e-3, gt=0)


class Recipe(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = "distill"
    teacher: str = Field("default", description="'default' (packaged), or an HF model dir")
    teacher_adapter: Optional[Path] = Field(None, description="LoRA adapter merged into the teacher")
    api_teacher: Optional[ApiTeacherSpec] = None
    data: DataSpec = DataSpec()
    student: StudentSpec = StudentSpec()
    loss: LossSpec = LossSpec()
    train: TrainSpec = TrainSpec()
    stages: Optional[list[int]] = Field(
        None, description="progressive distillation: layer counts, e.g. [10, 6]; "
        "each stage's student teaches the next"
    )
    teacher_finetune: TeacherFinetuneSpec = TeacherFinetuneSpec()
    seeds: list[int] = Field([0], description="seeds for benchmark runs (KD and hard-label students)")
    out: Optional[Path] = None

    @model_validator(mode="after")
    def _consistent(self) -> "Recipe":
        if self.stages is not None:
            if not self.stages:
                raise ValueError("stages must list at least one layer count")
            if any(b >= a for a, b in zip(self.stages, self.stages[1:])):
                raise ValueError(f"progressive stages must shrink, got {self.stages}")
            self.student.layers = self.stages[-1]
        if self.student.trim_before_training:
            if not self.student.trim_vocab:
                raise ValueError("student.trim_before_training needs student.trim_vocab: true")
            if self.stages is not None and len(self.stages) > 1:
                raise ValueError("student.trim_before_training: single-stage recipes only (a later stage's teacher "
                                 "would be a trimmed student)")
            if self.loss.extra_teachers:
                raise ValueError("student.trim_before_training: not with loss.extra_teachers")
        return self


LossSpec.model_rebuild()


def load_recipe(path: Path | str, **overrides) -> Recipe:
    """A recipe from YAML (or JSON); ``overrides`` are dotted keys, e.g. ``{"train.seed": 1}``."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"recipe not found: {path}")
    raw = yaml.safe_load(path.read_text()) or {}
    for key, value in overrides.items():
        node = raw
        parts = key.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = value
    return Recipe.model_validate(raw)


def teacher_num_layers(recipe: Recipe) -> int:
    if recipe.api_teacher is not None:
        return DEFAULT_TEACHER_LAYERS if recipe.student.init == "layer_drop" else 10**6
    if recipe.teacher == "default":
        return DEFAULT_TEACHER_LAYERS
    cfg = Path(recipe.teacher) / "config.json"
    if not cfg.is_file():
        raise RecipeError(f"teacher model dir has no config.json: {recipe.teacher}")
    return int(json.loads(cfg.read_text())["num_hidden_layers"])


def teacher_intermediate_size(recipe: Recipe) -> int | None:
    """The teacher's MLP width (None when it is the packaged teacher not yet materialized)."""
    cfg = Path(recipe.teacher) / "config.json"
    if recipe.teacher == "default":
        return DEFAULT_TEACHER_INTERMEDIATE
    return int(json.loads(cfg.read_text())["intermediate_size"]) if cfg.is_file() else None


def preflight(recipe: Recipe, need_eval: bool = False) -> None:
    """Fail fast, with a clear message, on anything that would only break mid-training."""
    n_teacher = teacher_num_layers(recipe)
    depths = recipe.stages or [recipe.student.layers]
    for d in depths:
        if recipe.student.init == "layer_drop" and d > n_teacher:
            raise RecipeError(
                f"student.layers={d} but the teacher has only {n_teacher} decoder layers; "
                f"a layer-dropped student must have at most {n_teacher}"
            )
    inter = recipe.student.intermediate_size
    if recipe.student.init == "layer_drop" and inter is not None and recipe.api_teacher is None:
        teacher_inter = teacher_intermediate_size(recipe)
        if teacher_inter is not None and inter > teacher_inter:
            raise RecipeError(f"student.intermediate_size={inter} but the teacher's MLPs have {teacher_inter} "
                              "units; a layer-dropped student can only narrow them")
    if recipe.student.init == "scratch" and recipe.student.hidden_size:
        if recipe.student.hidden_size % 9:
            raise RecipeError("student.hidden_size must be a multiple of 9 (attention heads)")
    p = recipe.data.train_path()
    if not p.is_file():
        raise RecipeError(f"training data file not found: {p} (set data.root or $TIERWISE_DATA_DIR)")
    if need_eval and not recipe.data.eval_path().is_file():
        raise RecipeError(f"evaluation data file not found: {recipe.data.eval_path()}")
    if recipe.teacher_adapter is not None and not (Path(recipe.teacher_adapter) / "adapter_config.json").is_file():
        raise RecipeError(f"teacher_adapter has no adapter_config.json: {recipe.teacher_adapter}")
