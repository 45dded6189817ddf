"""One turn of the flywheel, as one command: capture -> dataset -> distill -> evaluate ->
canary -> promote (or roll back), with the workload's route and competence index refreshed
in the same step (issue #13).

Every stage talks to the others through files and the ledger database, never through a
running gateway's memory: the dataset is read from the ``captures`` table, distillation and
evaluation run as their own processes (torch never enters this process, nor the gateway's),
and the candidate reaches the gateway replicas through the runtime control tables, which they
poll. So the loop runs wherever the database is reachable: next to the gateway, as a
Kubernetes CronJob, or by hand.

Decisions and who makes them: the epoch on the dataset's validation split (distill); the
offline gate on its test split (``min_fraction`` of the teacher's quality). A student that
fails it alone may still pass behind a **cascade** (``cascade``, on by default): its
confidence model and threshold are fitted on the validation split (``distill cascade``) and
the gate then reads the test split's routed quality (escalated requests get the teacher's
answer) and the share kept on the student (>= ``cascade_min_share``); the candidate is then
registered with that cascade, and the teacher answers whatever the student is unsure of. The
online gate
on the canary's shadow pairs (their mean agreement with the teacher must reach
``canary_agreement`` over at least ``canary_pairs`` pairs, within ``canary_timeout_s``).
Nothing is chosen on the test split.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import sqlalchemy as sa
import yaml
from sqlalchemy.engine import Engine

from flywheel.dataset import build_dataset, read_captures
from flywheel.teacher import TeacherWeights, captured_tier, teacher_weights
from gateway.config import GatewayConfig, TierConfig, default_model_cache
from gateway.control.store import ControlStore
from gateway.ledger.schema import shadow_pairs_table

REPO = Path(__file__).resolve().parents[1]


@dataclass
class LoopSettings:
    workload: str
    out: Path
    student_layers: int = 6
    # the student's vocabulary: what the captured data uses, trimmed before training (faster
    # training on a CPU and faster serving; distill's student.trim_before_training)
    trim_vocab: bool = True
    epochs: float = 3.0
    max_steps: int = -1
    batch_size: int = 16
    lr: float = 5e-4
    max_len: int = 160
    patience: int = 1
    max_train: int | None = None
    eval_n: int = 200
    min_fraction: float = 0.97  # offline gate: of the teacher's quality on the test split
    # the teacher as judge through the gateway (its /v1 URL; key in $TIERWISE_JUDGE_KEY): the offline
    # gate then reads the share of the student's test answers it judges the same as its own
    judge_url: str | None = None
    judge_model: str = "teacher"
    cascade: bool = True  # a student that fails the gate alone is tried behind a cascade
    cascade_min_share: float = 0.2  # ... which must keep this share of the test split on the student
    cascade_margin: float = 0.01  # its threshold aims this far above min_fraction on validation
    canary_share: float = 0.2
    canary_pairs: int = 30
    canary_agreement: float = 0.9  # online gate: mean shadow agreement with the teacher
    canary_timeout_s: float = 600.0
    tier_name: str | None = None  # default: <workload>-student-<time>
    price: dict = field(default_factory=lambda: {"input_per_million": 0.03, "output_per_million": 0.3})
    serve_url: str | None = None  # the candidate already served elsewhere; default: the gateway starts vLLM
    max_model_len: int = 1024
    threads: int = 2
    # None: the weights of the tier that answered the captured requests, when the gateway config
    # serves it locally (flywheel/teacher.py); "default": the packaged model; or a model dir.
    teacher: str | None = None
    teacher_adapter: Path | None = None
    cache: Path | None = None  # where distill finds (or materializes) the packaged teacher; default: the tier model cache


@dataclass
class LoopReport:
    workload: str
    stages: dict[str, dict] = field(default_factory=dict)
    outcome: str = "running"  # promoted | rolled_back | rejected_offline | no_data | failed

    def stage(self, name: str, started: float, **facts) -> None:
        self.stages[name] = {"seconds": round(time.perf_counter() - started, 1), **facts}


def run_loop(engine: Engine, settings: LoopSettings, log: Callable[[str], None] = print,
             wait_for_traffic: Callable[[], None] | None = None,
             gateway_config: GatewayConfig | None = None) -> LoopReport:
    """Run one turn; the report says what each stage did, took and decided.

    ``gateway_config`` says which weights serve the captured teacher tier (the student's init).
    """
    s, report = settings, LoopReport(settings.workload)
    out = Path(s.out)
    out.mkdir(parents=True, exist_ok=True)

    t = time.perf_counter()
    data = build_dataset(read_captures(engine, s.workload), s.workload, out / "data")
    report.stage("dataset", t, captured=data.captured, counts=data.counts, exact_duplicates=data.exact_duplicates,
                 near_duplicates=data.near_duplicates)
    if data.counts.get("train", 0) < 8 or data.counts.get("test", 0) < 1:
        report.outcome = "no_data"
        log(f"{s.workload}: too little captured data ({data.counts}); nothing to distill")
        return report
    dataset_dir = out / "data" / s.workload

    t = time.perf_counter()
    run_dir = out / "student"
    teacher = (TeacherWeights(s.teacher, s.teacher_adapter, None, "given") if s.teacher is not None else
               teacher_weights(gateway_config, captured_tier(engine, s.workload)))
    log(f"{s.workload}: student initialised from {teacher.model}"
        + (f" + {teacher.adapter}" if teacher.adapter else "") + f" ({teacher.why})")
    recipe = student_recipe(s, teacher, dataset_dir, run_dir)
    recipe_file = out / "recipe.yaml"
    recipe_file.write_text(yaml.safe_dump(recipe))
    cache = s.cache or default_model_cache()  # `make setup` assembled the base teacher there
    _run([sys.executable, "-m", "distill", "run", "--recipe", str(recipe_file), "--cache", str(cache)], log)
    card = json.loads((run_dir / "distill_card.json").read_text())
    stage = card["stages"][-1]
    report.stage("distill", t, selection=stage.get("selection"), soft_targets=(stage.get("data") or {}),
                 competence=card.get("competence"), init={"teacher": teacher.model, "adapter": teacher.adapter and
                                                          str(teacher.adapter), "why": teacher.why,
                                                          "layers": s.student_layers},
                 vocab_trim=(card.get("student") or {}).get("vocab_trim"))

    t = time.perf_counter()
    eval_file = out / "evaluation.json"
    _run([sys.executable, "-m", "distill", "evaluate", "--model", str(run_dir / "model"), "--data",
          str(dataset_dir / "test.jsonl"), "--n", str(s.eval_n), "--min-fraction", str(s.min_fraction),
          "--json", str(eval_file),
          *(["--judge-url", s.judge_url, "--judge-model", s.judge_model] if s.judge_url else [])], log)
    evaluation = json.loads(eval_file.read_text())
    report.stage("evaluate", t, **{k: evaluation[k] for k in ("metric", "n", "student_quality",
                                                              "fraction_of_teacher", "passes")})
    cascade_artifact = None
    if not evaluation["passes"]:
        log(f"{s.workload}: the student alone keeps {evaluation['fraction_of_teacher']:.1%} of the teacher "
            f"(gate {s.min_fraction:.0%})" + ("; trying it behind a cascade" if s.cascade else ""))
        t = time.perf_counter()
        fit = _fit_cascade(s, run_dir / "model", dataset_dir, out, log) if s.cascade else None
        if fit is not None:
            report.stage("cascade", t, **{k: fit[k] for k in ("metric", "threshold", "validation", "test", "passes",
                                                              "why", "margin", "min_share")})
        if fit is None or not fit["passes"]:
            report.outcome = "rejected_offline"
            log(f"{s.workload}: not deployed" + (f" ({fit['why']})" if fit else ""))
            return report
        cascade_artifact = fit["artifact"]
        log(f"{s.workload}: behind its cascade the student keeps {fit['test']['share_kept']:.1%} of the test "
            f"split at {fit['test']['routed_quality']:.1%} routed quality")

    t = time.perf_counter()
    control = ControlStore(engine)
    name = s.tier_name or f"{s.workload}-student-{time.strftime('%Y%m%d%H%M%S')}"
    backend = ({"url": {"base_url": s.serve_url, "max_model_len": s.max_model_len}} if s.serve_url else
               {"vllm": {"model": str((run_dir / "model").resolve()), "max_model_len": s.max_model_len}})
    tier = TierConfig.model_validate({"model_name": name, "role": "student", "price": s.price, **backend})
    control.register_tier(tier)
    competence = run_dir / "model" / "competence.skops"
    control.set_canary(s.workload, name, s.canary_share, str(competence.resolve()) if competence.is_file() else None,
                       cascade_artifact)
    log(f"{s.workload}: {name} registered and given {s.canary_share:.0%} of the workload's in-scope traffic"
        + (" behind its cascade" if cascade_artifact else ""))
    if wait_for_traffic is not None:
        wait_for_traffic()
    pairs, agreement = _watch_canary(engine, name, s.canary_pairs, s.canary_timeout_s)
    promote = pairs >= s.canary_pairs and agreement is not None and agreement >= s.canary_agreement
    (control.promote if promote else control.rollback)(s.workload)
    if not promote:
        control.retire_tier(name)
    report.outcome = "promoted" if promote else "rolled_back"
    report.stage("canary", t, tier=name, shadow_pairs=pairs, agreement=agreement, gate=s.canary_agreement,
                 decision=report.outcome)
    log(f"{s.workload}: canary {name}: {pairs} shadow pairs, agreement {agreement}: {report.outcome}")
    return report


def student_recipe(s: LoopSettings, teacher: TeacherWeights, dataset_dir: Path, run_dir: Path) -> dict:
    """The distill recipe of a workload's student (also what ``benchmarks/flywheel_gpu.py`` trains)."""
    return {"name": f"flywheel-{s.workload}", **teacher.as_recipe(),
            "data": {"format": "chat_jsonl", "dir": str(dataset_dir), "max_train": s.max_train},
            "student": {"layers": s.student_layers, "trim_vocab": s.trim_vocab, "trim_before_training": s.trim_vocab},
            "loss": {"targets": "teacher", "alpha": 0.9, "temperature": 2.0},
            "train": {"epochs": s.epochs, "max_steps": s.max_steps, "batch_size": s.batch_size, "lr": s.lr,
                      "max_len": s.max_len, "early_stopping_patience": s.patience, "threads": s.threads},
            "out": str(run_dir)}


def _fit_cascade(s: LoopSettings, model_dir: Path, dataset_dir: Path, out: Path,
                 log: Callable[[str], None]) -> dict:
    """``distill cascade`` in its own process (torch): the fit's report (``cascade.json``)."""
    report_file = out / "cascade.json"
    _run([sys.executable, "-m", "distill", "cascade", "--model", str(model_dir), "--data", str(dataset_dir),
          "--quality", str(s.min_fraction), "--min-share", str(s.cascade_min_share), "--margin", str(s.cascade_margin),
          "--threads", str(s.threads), "--json", str(report_file)], log)
    fit = json.loads(report_file.read_text())
    if fit.get("artifact"):
        fit["artifact"] = str(Path(fit["artifact"]).resolve())
    return fit


def _watch_canary(engine: Engine, tier: str, want: int, timeout_s: float) -> tuple[int, float | None]:
    """Shadow pairs of the canary so far: (count, mean agreement), waiting until ``want`` or the timeout."""
    deadline = time.monotonic() + timeout_s
    stmt = sa.select(sa.func.count(), sa.func.avg(shadow_pairs_table.c.agreement)).where(
        shadow_pairs_table.c.tier == tier, shadow_pairs_table.c.agreement.is_not(None))
    while True:
        with engine.connect() as conn:
            count, mean = conn.execute(stmt).one()
        if count >= want or time.monotonic() > deadline:
            return int(count), None if mean is None else float(mean)
        time.sleep(2.0)


def _run(cmd: list[str], log: Callable[[str], None]) -> None:
    log("$ " + " ".join(cmd[1:]))
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[1:4])} failed ({proc.returncode}): {proc.stderr[-3000:]}")


def report_json(report: LoopReport) -> str:
    return json.dumps(asdict(report), indent=2, default=str)
