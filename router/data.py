"""Load routing data in RouteLLM's format and split it without leakage.

RouteLLM's format is one CSV per domain: a ``prompt`` column and one True/False column per
model (did it answer correctly). ``distill/`` writes the same format for our own student and
teacher, so one loader serves both. The split helpers exist because MMLU holds duplicated
prompts and prompts that leaked into public router training data; an evaluation that
ignores either overstates the router.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tierwise_common.data_dir import data_root

WEAK_MODEL = "mistralai/Mixtral-8x7B-Instruct-v0.1"
STRONG_MODEL = "gpt-4-1106-preview"
DATASET_CITATION = (
    "RouteLLM MMLU routing data (Ong et al., 2024, 'RouteLLM: Learning to Route LLMs with "
    "Preference Data', arXiv:2406.18665; Apache-2.0), built on MMLU (Hendrycks et al., 2021, "
    "'Measuring Massive Multitask Language Understanding', ICLR)"
)


def default_mmlu_dir() -> Path:
    return data_root() / "routellm" / "mmlu"


def default_contaminated_file() -> Path:
    return data_root() / "routellm" / "mmlu_contaminated.jsonl"


@dataclass
class RoutingData:
    """Prompts with the cheap and strong model's correctness, and their domain."""

    prompts: list[str]
    cheap_correct: np.ndarray
    strong_correct: np.ndarray
    domains: np.ndarray
    cheap_model: str
    strong_model: str
    sources: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.prompts)

    @property
    def outcomes(self) -> np.ndarray:
        """``(n, 2)`` int array: cheap correct, strong correct (the router's ``y``)."""
        return np.column_stack([self.cheap_correct, self.strong_correct]).astype(np.int8)

    def subset(self, mask: np.ndarray) -> "RoutingData":
        idx = np.flatnonzero(mask)
        return RoutingData(
            prompts=[self.prompts[i] for i in idx],
            cheap_correct=self.cheap_correct[idx],
            strong_correct=self.strong_correct[idx],
            domains=self.domains[idx],
            cheap_model=self.cheap_model,
            strong_model=self.strong_model,
            sources=self.sources,
        )

    def describe(self) -> dict:
        """JSON-friendly summary recorded in artifacts and benchmark results."""
        return {
            "n_prompts": len(self),
            "n_domains": int(len(np.unique(self.domains))),
            "cheap_model": self.cheap_model,
            "strong_model": self.strong_model,
            "cheap_accuracy": round(float(self.cheap_correct.mean()), 4),
            "strong_accuracy": round(float(self.strong_correct.mean()), 4),
            "sources": [_portable(s) for s in self.sources],
        }


def _portable(path: str) -> str:
    """A source path as recorded in artifacts: relative to the shared data root when it is
    inside it (``shared/data/...``), so committed files do not carry one machine's paths."""
    p = Path(path).resolve()
    root = data_root().resolve()
    try:
        return str(Path("shared/data") / p.relative_to(root))
    except ValueError:
        return p.name


def _parse_bool(value: str) -> bool:
    v = value.strip().lower()
    if v in {"true", "1", "yes"}:
        return True
    if v in {"false", "0", "no"}:
        return False
    raise ValueError(f"not a True/False correctness value: {value!r}")


def _csv_files(paths: Sequence[Path | str]) -> list[Path]:
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            files.extend(sorted(p.glob("*.csv")))
        elif p.is_file():
            files.append(p)
        else:
            raise FileNotFoundError(f"routing data not found: {p}")
    if not files:
        raise FileNotFoundError(f"no CSV files in {', '.join(map(str, paths))}")
    return files


def _domain_of(path: Path) -> str:
    name = path.stem
    return name[len("mmlu_"):] if name.startswith("mmlu_") else name


def load_routing_data(
    paths: Sequence[Path | str],
    cheap_column: str | None = None,
    strong_column: str | None = None,
    exclude_prompts: Iterable[str] = (),
) -> RoutingData:
    """Read RouteLLM-format CSVs (files or folders of them).

    With no column names given, the file must have exactly two correctness columns; the
    less accurate one is taken as the cheap tier (true for RouteLLM's and distill's data,
    and printed in the artifact's metadata so a wrong guess is visible).
    """
    excluded = set(exclude_prompts)
    prompts: list[str] = []
    outcome_rows: list[tuple[bool, bool]] = []
    domains: list[str] = []
    columns: tuple[str, str] | None = None
    for path in _csv_files(paths):
        with path.open(newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            header = reader.fieldnames or []
            if "prompt" not in header:
                raise ValueError(f"{path}: no 'prompt' column (RouteLLM format expected)")
            models = [c for c in header if c != "prompt"]
            if cheap_column and strong_column:
                pair = (cheap_column, strong_column)
                missing = [c for c in pair if c not in header]
                if missing:
                    raise ValueError(f"{path}: missing columns {missing}")
            elif len(models) == 2:
                pair = (models[0], models[1])
            else:
                raise ValueError(
                    f"{path}: {len(models)} model columns; pass cheap_column and strong_column"
                )
            if columns is None:
                columns = pair
            elif set(pair) != set(columns):
                raise ValueError(f"{path}: model columns {pair} differ from {columns}")
            for row in reader:
                if row["prompt"] in excluded:
                    continue
                prompts.append(row["prompt"])
                outcome_rows.append((_parse_bool(row[columns[0]]), _parse_bool(row[columns[1]])))
                domains.append(_domain_of(path))
    assert columns is not None
    outcomes = np.array(outcome_rows, dtype=bool).reshape(-1, 2)
    first, second = columns
    if not (cheap_column and strong_column) and outcomes[:, 0].mean() > outcomes[:, 1].mean():
        outcomes = outcomes[:, ::-1]
        first, second = second, first
    return RoutingData(
        prompts=prompts,
        cheap_correct=outcomes[:, 0],
        strong_correct=outcomes[:, 1],
        domains=np.array(domains),
        cheap_model=first,
        strong_model=second,
        sources=[str(p) for p in paths],
    )


def load_contaminated(path: Path | str | None = None) -> set[str]:
    """Prompts that overlap public router training data (``eval_prompt`` of each line)."""
    path = Path(path) if path else default_contaminated_file()
    out: set[str] = set()
    with Path(path).open(encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                record = json.loads(line)
                out.add(record.get("eval_prompt") or record["train_prompt"])
    return out


def load_mmlu(data_dir: Path | str | None = None, exclude_contaminated: bool = True) -> RoutingData:
    """The RouteLLM MMLU set, contaminated prompts removed by default."""
    base = data_root(data_dir)
    mmlu = base / "routellm" / "mmlu"
    excluded = load_contaminated(base / "routellm" / "mmlu_contaminated.jsonl") if exclude_contaminated else set()
    return load_routing_data([mmlu], WEAK_MODEL, STRONG_MODEL, exclude_prompts=excluded)


def grouped_split(prompts: Sequence[str], test_size: float = 0.5, seed: int = 0) -> np.ndarray:
    """Boolean test mask; identical prompts always land on the same side.

    MMLU repeats some prompts across subjects; splitting rows would put one copy in train
    and the other in test and reward memorisation.
    """
    unique = sorted(set(prompts))
    rng = np.random.RandomState(seed)
    order = rng.permutation(len(unique))
    test = {unique[i] for i in order[: int(round(len(unique) * test_size))]}
    return np.array([p in test for p in prompts], dtype=bool)


def domain_split(
    domains: np.ndarray, prompts: Sequence[str], test_size: float = 0.3, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Train/test masks over disjoint domains (cross-domain evaluation).

    Prompts duplicated across a train and a test domain are dropped from the test side so
    that the test domains are genuinely unseen.
    """
    names = sorted(set(domains.tolist()))
    rng = np.random.RandomState(seed)
    test_names = sorted(rng.choice(names, size=int(round(len(names) * test_size)), replace=False).tolist())
    test = np.isin(domains, test_names)
    train = ~test
    train_prompts = {p for p, t in zip(prompts, train) if t}
    test &= np.array([p not in train_prompts for p in prompts])
    return train, test, test_names
