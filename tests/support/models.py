"""Real model dirs for tests and benchmarks: the packaged teacher and small layer-dropped copies."""

from __future__ import annotations

from pathlib import Path

from gateway.devtools.processes import model_cache

TEACHER_PRICE = {"input_per_million": 2.0, "output_per_million": 8.0}
STUDENT_PRICE = {"input_per_million": 0.25, "output_per_million": 1.0}


def base_teacher() -> Path:
    """The packaged SmolLM2-135M-Instruct, dequantized once into the model cache."""
    from distill.packaged import materialize_teacher

    return materialize_teacher(model_cache() / "base-teacher")


def layer_dropped(layers: int) -> Path:
    """A copy of the base teacher keeping ``layers`` of its 30 decoder layers (built once)."""
    from distill.student_init import layer_drop

    out = model_cache() / f"test-student-{layers}l"
    if not (out / "config.json").exists():
        layer_drop(base_teacher(), out, layers)
    return out
