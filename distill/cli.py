"""Command line: ``python -m distill <command>``.

Modules that import torch or transformers (``distill.train``, ``distill.modeling``) or
scikit-learn (``distill.competence``) are imported inside the commands that need them, so
``--help`` and the light commands stay instant; everything else is imported here.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Optional

import typer
import yaml
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from distill import dist
from distill.assemble import DEFAULT_ARTIFACTS, HashMismatch
from distill.assemble import assemble as do_assemble
from distill.data import SYSTEM_PROMPT, read_csv, subsample
from distill.evaluate import accuracy, intent_correct
from distill.packaged import TeacherNotInstalled, materialize_teacher
from distill.recipe import Recipe, RecipeError, load_recipe, preflight
from distill.ship import export_tiers
from distill.student_init import layer_drop, read_config

app = typer.Typer(add_completion=False, no_args_is_help=True, help="tierwise distillation")
console = Console()


def _threads(n: Optional[int]) -> None:
    """Keep CPU jobs modest: the 2-core box is shared."""
    if n:
        os.environ.setdefault("OMP_NUM_THREADS", str(n))
        if "torch" in sys.modules:
            sys.modules["torch"].set_num_threads(n)


@app.command()
def assemble(
    cache: Path = typer.Option(..., "--cache", help="where the tier model dirs are written"),
    artifacts: Optional[Path] = typer.Option(None, help="shipped weights (default artifacts/tiers)"),
    no_verify: bool = typer.Option(False, "--no-verify", help="skip sha256 checks (not advised)"),
    threads: Optional[int] = typer.Option(2, help="torch CPU threads"),
) -> None:
    """Build DIR/teacher (and DIR/student, DIR/base-teacher) from the packaged base + shipped weights."""
    _threads(threads)
    t0 = time.perf_counter()
    try:
        rep = do_assemble(cache, artifacts or DEFAULT_ARTIFACTS, verify=not no_verify)
    except (TeacherNotInstalled, HashMismatch) as e:
        console.print(f"[red]error:[/red] {e}")
        raise typer.Exit(2)
    table = Table("tier", "dir", "status")
    for name, d in rep.dirs.items():
        table.add_row(name, str(d), rep.built[name])
    console.print(table)
    console.print(f"assembled in {time.perf_counter() - t0:.1f} s")


@app.command("layer-drop")
def layer_drop_cmd(
    teacher: Path = typer.Option(..., help="teacher HF model dir"),
    out: Path = typer.Option(..., help="student dir to write"),
    layers: int = typer.Option(6, help="number of decoder layers to keep"),
    intermediate_size: Optional[int] = typer.Option(
        None, help="narrow every kept layer's MLP to this many units (its most important ones)"),
) -> None:
    """Write a layer-dropped (untrained) student: evenly spaced teacher layers, first and last kept."""
    try:
        layer_drop(teacher, out, layers, intermediate_size=intermediate_size)
    except ValueError as e:
        console.print(f"[red]error:[/red] {e}")
        raise typer.Exit(2)
    console.print(json.loads((out / "student_init.json").read_text()))
    _ = read_config(out)


def _recipe_from_args(recipe_path: Optional[Path], teacher: Optional[str], layers: Optional[int],
                      data: Optional[Path], out: Optional[Path], overrides: Optional[list[str]]) -> Recipe:
    """The recipe from a YAML file (or defaults) with the command line's flags and ``--set`` applied."""
    kv = {}
    for o in overrides or []:
        if "=" not in o:
            raise typer.BadParameter(f"--set expects key=value, got {o!r}")
        k, v = o.split("=", 1)
        kv[k] = yaml.safe_load(v)
    if teacher:
        kv["teacher"] = teacher
    if layers:
        kv["student.layers"] = layers
    if data:
        kv["data.train_file"] = str(Path(data).resolve())
    if out:
        kv["out"] = str(out)
    if recipe_path:
        return load_recipe(recipe_path, **kv)
    raw: dict = {}
    for k, v in kv.items():
        node = raw
        parts = k.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = v
    return Recipe.model_validate(raw)


@app.command()
def run(
    recipe: Optional[Path] = typer.Option(None, help="YAML recipe (flags below override it)"),
    teacher: Optional[str] = typer.Option(None, help="'default' or a teacher HF model dir"),
    layers: Optional[int] = typer.Option(None, help="student decoder layers"),
    data: Optional[Path] = typer.Option(None, help="training CSV (text[,category])"),
    out: Optional[Path] = typer.Option(None, help="output dir (model/, distill_card.json)"),
    cache: Path = typer.Option(Path(".cache/distill"), help="where the packaged teacher is materialized"),
    set_: Optional[list[str]] = typer.Option(None, "--set", help="recipe override, e.g. train.max_steps=20"),
    eval_n: int = typer.Option(0, help="evaluate intent accuracy on this many eval messages after training"),
) -> None:
    """Distill a student from a teacher (progress bars, resumable checkpoints, distill_card.json)."""
    try:
        r = _recipe_from_args(recipe, teacher, layers, data, out, set_)
        if r.out is None:
            raise RecipeError("no output dir: pass --out or set out: in the recipe")
        preflight(r, need_eval=eval_n > 0)
    except (ValidationError, RecipeError) as e:
        console.print(f"[red]bad recipe:[/red] {e}")
        raise typer.Exit(2)
    # several processes on one box (torchrun/accelerate): one thread each unless the recipe says
    _threads(r.train.threads or (1 if dist.enabled() else 2))
    from distill.train import distill_run  # torch + transformers

    card = distill_run(r, cache, r.out,
                       log=lambda m: console.print(m, style="cyan", markup=False, soft_wrap=True))
    dist.shutdown()
    if not dist.is_main():  # rank 0 evaluates and writes; the others are done
        return
    from distill.competence import for_recipe

    # the student's competence index (model/competence.skops), for the gateway's gate
    card["competence"] = for_recipe(r, Path(r.out) / "model")
    if eval_n:
        card["evaluation"] = quick_eval(r, Path(r.out) / "model", eval_n)
    (Path(r.out) / "distill_card.json").write_text(json.dumps(card, indent=2, default=str))
    (Path(r.out) / "model" / "distill_card.json").write_text(json.dumps(card, indent=2, default=str))
    console.print(f"[green]done[/green]: {Path(r.out) / 'model'}  (card: {Path(r.out) / 'distill_card.json'})")


def quick_eval(r: Recipe, model_dir: Path, n: int) -> dict:
    """Intent accuracy of one model dir on the first ``n`` eval messages (transformers)."""
    from distill.modeling import decode_responses, generate_ids, load_model, load_tokenizer  # torch

    rows = read_csv(r.data.eval_path(), limit=n)
    tok = load_tokenizer(model_dir)
    m = load_model(model_dir)
    replies = decode_responses(tok, generate_ids(m, tok, [x["text"] for x in rows], 16, 32))
    return {"eval_file": str(r.data.eval_path()), "n": len(rows),
            "intent_accuracy": accuracy(intent_correct(replies, [x["category"] for x in rows]))}


@app.command("teacher-finetune")
def teacher_finetune_cmd(
    out: Path = typer.Option(..., help="output dir: adapter/ (ships) and model/ (merged)"),
    recipe: Optional[Path] = typer.Option(None, help="YAML recipe: uses its data: and train: sections"),
    cache: Path = typer.Option(Path(".cache/distill"), help="where the packaged teacher is materialized"),
    set_: Optional[list[str]] = typer.Option(
        None, "--set", help="override, e.g. teacher_finetune.epochs=1 or train.max_steps=20"),
    eval_n: int = typer.Option(0, help="evaluate intent accuracy on this many eval messages"),
) -> None:
    """Adapt the packaged teacher to Banking77 (intent + short reply) with a LoRA adapter."""
    if dist.enabled():  # every rank would write adapter/ and model/: not made multi-process
        console.print("[red]error:[/red] teacher-finetune runs in one process; start it with "
                      "python -m distill, not torchrun/accelerate launch")
        raise typer.Exit(2)
    try:
        r = _recipe_from_args(recipe, None, None, None, out, set_)
        preflight(r, need_eval=eval_n > 0)
    except (ValidationError, RecipeError) as e:
        console.print(f"[red]bad recipe:[/red] {e}")
        raise typer.Exit(2)
    _threads(r.train.threads or 2)
    from distill.train import teacher_finetune  # torch + transformers + peft

    base = materialize_teacher(cache / "base-teacher")
    rows = subsample(read_csv(r.data.train_path()), r.data.max_train)
    tf = r.teacher_finetune  # LoRA + schedule; max_len, seed, max_steps come from train:
    spec = r.train.model_copy(update={"epochs": tf.epochs, "batch_size": tf.batch_size, "lr": tf.lr})
    stats = teacher_finetune(base, rows, out, spec, tf.lora_r, tf.lora_alpha)
    if eval_n:
        stats["evaluation"] = quick_eval(r, out / "model", eval_n)
    (out / "teacher_card.json").write_text(json.dumps(stats, indent=2, default=str))
    console.print(stats.get("evaluation") or "")
    console.print(f"[green]done[/green]: adapter {out / 'adapter'}, merged {out / 'model'}")


@app.command()
def competence(
    student: Path = typer.Option(..., help="student dir (a trained model dir or a shipped artifacts/tiers/student)"),
    prompts: Path = typer.Option(..., help="the student's training prompts: CSV or JSONL"),
    text_column: str = typer.Option("text", help="column (CSV) or field (JSONL) holding the prompt"),
    out: Optional[Path] = typer.Option(None, help="write the index into this dir instead of STUDENT"),
    known_prompt: Optional[list[str]] = typer.Option(
        None, help="system prompt the student was trained with (default: the support task's)"),
    features: str = typer.Option("char", help="word | char | word+char TF-IDF n-grams"),
    k: int = typer.Option(5, help="nearest training prompts averaged"),
    target_acceptance: float = typer.Option(0.95, help="share of held-out in-scope prompts the threshold keeps"),
) -> None:
    """Fit a student's competence index on its training prompts (for students trained before it existed)."""
    from distill.competence import read_prompts, write_competence

    target = out or student
    if not target.is_dir():
        console.print(f"[red]error:[/red] no such directory: {target}")
        raise typer.Exit(2)
    try:
        texts = read_prompts(prompts, text_column)
        entry = write_competence(target, texts, source=f"{prompts.parent.name}/{prompts.name}",
                                 known_prompts=tuple(known_prompt or (SYSTEM_PROMPT,)),
                                 features=features, k=k, target_acceptance=target_acceptance)
    except (FileNotFoundError, ValueError) as e:
        console.print(f"[red]error:[/red] {e}")
        raise typer.Exit(2)
    console.print(entry)


@app.command("export-student")
def export_student_cmd(
    model: Path = typer.Option(..., help="trained student model dir"),
    artifacts: Optional[Path] = typer.Option(None, help="default artifacts/tiers"),
    teacher_adapter: Optional[Path] = typer.Option(None, help="teacher adapter dir to ship too"),
    recipe: str = typer.Option("distill/recipes/banking77_gpu.yaml", help="recipe recorded in the manifest"),
) -> None:
    """Write the shipped weights (student layers fp16, teacher adapter) + manifest with hashes."""
    m = export_tiers(artifacts or DEFAULT_ARTIFACTS, student_dir=model, adapter_dir=teacher_adapter, recipe=recipe)
    console.print(m)


dataset_app = typer.Typer(help="Chat-JSONL datasets distill trains on (the flywheel writes its own).",
                          no_args_is_help=True)
app.add_typer(dataset_app, name="dataset")


@dataset_app.command("banking77")
def dataset_banking77(
    out: Path = typer.Option(..., "--out", help="folder for train/validation/test.jsonl"),
    data_dir: Optional[Path] = typer.Option(None, help="Banking77 folder (default: <data root>/banking77)"),
    validation: float = typer.Option(0.1, min=0.01, max=0.5, help="share of train.csv carved out, per intent"),
    seed: int = 0,
) -> None:
    """Banking77 as chat JSONL (gold answers; validation carved from train, test = test.csv)."""
    from distill.banking77_chat import write_banking77
    from tierwise_common.data_dir import data_root

    counts = write_banking77(data_dir or data_root() / "banking77", out, validation, seed)
    console.print(f"[green]wrote[/green] {out}: {counts}")


@app.command("evaluate")
def evaluate_cmd(
    model: Path = typer.Option(..., "--model", help="student model dir"),
    data: Path = typer.Option(..., "--data", help="held-out chat JSONL (test.jsonl)"),
    teacher: Optional[Path] = typer.Option(None, help="teacher model dir to evaluate the same way (gold data)"),
    n: int = typer.Option(200, min=1, help="evaluate the first N records"),
    max_new_tokens: int = typer.Option(48, min=1),
    min_fraction: float = typer.Option(0.97, min=0.0, max=1.0, help="promotion gate: share of the teacher's quality"),
    json_out: Optional[Path] = typer.Option(None, "--json", help="write the report here"),
    threads: Optional[int] = typer.Option(2, help="torch CPU threads"),
    judge_url: Optional[str] = typer.Option(None, help="the teacher as judge: an OpenAI-compatible base URL (the "
                                            "gateway's /v1); the gate then reads the share judged the same"),
    judge_model: str = typer.Option("teacher", help="the judge's model (a gateway tier)"),
    judge_key: Optional[str] = typer.Option(None, envvar="TIERWISE_JUDGE_KEY", help="API key for the judge"),
) -> None:
    """Student vs teacher on held-out chat data (HF generate): quality, ROUGE-L, the gate."""
    _threads(threads)
    from distill.chat_data import answer_text, read_chat_jsonl
    from distill.chat_eval import gate_report, score_answers
    from distill.modeling import decode_responses, generate_ids, load_model, load_tokenizer  # torch
    from distill.chat_data import chat_prompt_ids, prompt_messages

    records = read_chat_jsonl(data)[:n]
    references = [answer_text(r) for r in records]

    def answers_of(model_dir: Path) -> list[str]:
        tok = load_tokenizer(model_dir)
        prompts = [chat_prompt_ids(tok, prompt_messages(r)) for r in records]
        ids = generate_ids(load_model(model_dir), tok, [""] * len(records), max_new_tokens, 32, prompts=prompts)
        return decode_responses(tok, ids)

    def judged(answers: list[str]) -> dict:
        from distill.judge import judge_answers

        return judge_answers([prompt_messages(r) for r in records], answers, references, base_url=judge_url,
                             model=judge_model, api_key=judge_key)

    student_answers = answers_of(model)
    student = score_answers(student_answers, references)
    structural = {"metric": student["metric"], "quality": student["quality"]}
    if judge_url:
        student = {**judged(student_answers), "rouge_l": student["rouge_l"]}
    if teacher:  # gold references: the teacher is scored the same way
        teacher_answers = answers_of(teacher)
        reference = judged(teacher_answers) if judge_url else score_answers(teacher_answers, references,
                                                                            student["metric"])
    else:  # captured references are the teacher's own answers: it scores 1.0 against them
        reference = {"metric": student["metric"], "n": len(records), "quality": 1.0}
    report = {"data": str(data), "model": str(model), "teacher": str(teacher) if teacher else "the references",
              **gate_report(student, reference, min_fraction), "student_rouge_l": student["rouge_l"],
              "structural": structural}
    if judge_url:
        report["judge"] = {k: student[k] for k in ("judge", "unparsed", "request_ids")} | {"url": judge_url}
    console.print_json(json.dumps(report))
    if json_out:
        json_out.write_text(json.dumps(report, indent=2))


@app.command("cascade")
def cascade_cmd(
    model: Path = typer.Option(..., "--model", help="student model dir (the artifact is written into it)"),
    data: Path = typer.Option(..., "--data", help="dataset dir with validation.jsonl (fit) and test.jsonl (gate)"),
    quality: float = typer.Option(0.97, min=0.0, max=1.0, help="routed quality to reach: share of final answers "
                                  "that agree with the teacher (escalations agree)"),
    min_share: float = typer.Option(0.2, min=0.0, max=1.0, help="the gate also wants this share kept on the student"),
    margin: float = typer.Option(0.01, min=0.0, max=0.5, help="the threshold aims this far above QUALITY on validation"),
    force: bool = typer.Option(False, "--force", help="write cascade.skops even when the gate fails (an operator's "
                               "decision; the artifact's card says so)"),
    n: Optional[int] = typer.Option(None, min=10, help="at most N records per split"),
    json_out: Optional[Path] = typer.Option(None, "--json", help="write the report here"),
    threads: Optional[int] = typer.Option(2, help="torch CPU threads"),
) -> None:
    """Fit the student's cascade confidence model on validation, gate it on test (cascade.skops)."""
    _threads(threads)
    from distill.cascade_fit import fit_cascade, write_report  # torch

    for split in ("validation", "test"):
        if not (data / f"{split}.jsonl").is_file():
            console.print(f"[red]error:[/red] no {split}.jsonl in {data}")
            raise typer.Exit(2)
    fit = fit_cascade(model, data, quality, min_share, n, margin, force)
    console.print_json(json.dumps(fit.public()))
    if json_out:
        write_report(fit, json_out)


@app.command("trim-vocab")
def trim_vocab_cmd(
    model: Path = typer.Option(..., "--model", help="student model dir"),
    corpus: list[Path] = typer.Option(..., "--corpus", help="the workload's texts: chat JSONL (train.jsonl, the "
                                      "student's own answers) or a text,category CSV (Banking77 targets); repeatable"),
    out: Path = typer.Option(..., "--out", help="the trimmed model dir to write"),
) -> None:
    """Trim a student's vocabulary to the tokens its workload uses (faster decoding, same answers)."""
    from transformers import AutoTokenizer

    from distill.chat_data import read_chat_jsonl
    from distill.data import target_for
    from distill.vocab_trim import chat_corpus, trim_vocabulary

    tok = AutoTokenizer.from_pretrained(str(model))
    texts: list[str] = []
    for path in corpus:
        if path.suffix == ".jsonl":
            texts += [tok.apply_chat_template(r["messages"], tokenize=False) for r in read_chat_jsonl(path)]
        else:
            texts += chat_corpus(tok, [(r["text"], target_for(r["category"]) if r.get("category") else "")
                                       for r in read_csv(path)], SYSTEM_PROMPT)
    if not texts:
        console.print("[red]the corpus is empty[/red]")
        raise typer.Exit(2)
    summary = trim_vocabulary(model, out, texts)
    console.print(f"[green]wrote[/green] {out}: vocabulary {summary['vocab_before']} -> {summary['vocab_after']} "
                  f"tokens ({len(texts)} corpus texts)")
